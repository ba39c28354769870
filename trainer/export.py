"""``mlmprep export``: a trained model as a Hugging Face ``BertForMaskedLM`` folder (``BertForPreTraining``
where the model has a sentence-pair head).

The weight mapping is keras-hub's own ``convert_bert.py`` run backwards (it
ports Hugging Face BERT checkpoints into ``BertBackbone``), plus the masked-LM
head, which that converter does not carry. The folder holds ``config.json``,
``model.safetensors`` and the tokenizer files, so that
``transformers.pipeline("fill-mask", model=FOLDER)`` and
``BertForMaskedLM.from_pretrained(FOLDER)`` load it with neither TensorFlow
nor this package. Writing it needs only numpy and ``safetensors``.
"""

import json
import os

import numpy as np

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.trainer import flags
from mlmprep.trainer import model as model_lib
from mlmprep.transforms.tokenize import Vocabulary, vocabulary
from mlmprep.transforms.tokenizer_files import transformers_files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# keras-hub's BertBackbone uses the tanh approximation of GELU in its encoder (as Google's BERT did):
# that is Hugging Face's "gelu_new". keras-hub's BertMaskedLM head uses the exact GELU and a layer-norm
# epsilon of 1e-5, where Hugging Face's config has one activation and one epsilon (1e-12) for the
# encoder and the head alike: the head's logits differ slightly, which the round-trip test bounds
# (under 1e-3). BertPretrainer's head uses the encoder's, and its logits match to float precision.
HIDDEN_ACT = "gelu_new"


def hf_config(backbone: dict, vocab: Vocabulary, pairs: bool = False) -> dict:
    """``config.json`` of a ``BertForMaskedLM`` (``BertForPreTraining`` with ``pairs``) of the backbone's
    shapes."""
    return {
        "architectures": ["BertForPreTraining" if pairs else "BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": backbone["vocabulary_size"],
        "hidden_size": backbone["hidden_dim"],
        "num_hidden_layers": backbone["num_layers"],
        "num_attention_heads": backbone["num_heads"],
        "intermediate_size": backbone["intermediate_dim"],
        "hidden_act": HIDDEN_ACT,
        "hidden_dropout_prob": backbone.get("dropout", 0.1),
        "attention_probs_dropout_prob": backbone.get("dropout", 0.1),
        "max_position_embeddings": backbone["max_sequence_length"],
        "type_vocab_size": backbone.get("num_segments", 2),
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,  # the backbone's
        "pad_token_id": vocab.pad_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def _array(variable) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(variable.numpy(), dtype=np.float32))


def hf_weights(model) -> dict[str, np.ndarray]:
    """The state dict ``BertForMaskedLM.save_pretrained`` writes, from a keras-hub ``BertMaskedLM`` (or
    ``BertForPreTraining``'s, from a ``BertPretrainer``).

    Keras kernels are (in, out) and Hugging Face's Linear weights (out, in);
    attention kernels are split by head in Keras and whole in Hugging Face.
    The decoder is tied to the word embeddings in both, so it is not written.
    """
    backbone = model.backbone
    hidden = backbone.hidden_dim
    out = {}

    def dense(prefix, layer):
        kernel = _array(layer.kernel)
        out[f"{prefix}.weight"] = np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T)
        out[f"{prefix}.bias"] = _array(layer.bias).reshape(-1)

    def attention_in(prefix, layer):  # kernel (hidden, heads, head_dim) -> weight (heads * head_dim, hidden)
        out[f"{prefix}.weight"] = np.ascontiguousarray(_array(layer.kernel).reshape(hidden, -1).T)
        out[f"{prefix}.bias"] = _array(layer.bias).reshape(-1)

    def layer_norm(prefix, layer):
        out[f"{prefix}.weight"] = _array(layer.gamma)
        out[f"{prefix}.bias"] = _array(layer.beta)

    embeddings = "bert.embeddings"
    out[f"{embeddings}.word_embeddings.weight"] = _array(backbone.get_layer("token_embedding").embeddings)
    out[f"{embeddings}.position_embeddings.weight"] = _array(
        backbone.get_layer("position_embedding").position_embeddings
    )
    out[f"{embeddings}.token_type_embeddings.weight"] = _array(
        backbone.get_layer("segment_embedding").embeddings
    )
    layer_norm(f"{embeddings}.LayerNorm", backbone.get_layer("embeddings_layer_norm"))
    # The same private attributes keras-hub's converter reads: TransformerEncoder exposes no others.
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention, prefix = block._self_attention_layer, f"bert.encoder.layer.{i}"
        attention_in(f"{prefix}.attention.self.query", attention.query_dense)
        attention_in(f"{prefix}.attention.self.key", attention.key_dense)
        attention_in(f"{prefix}.attention.self.value", attention.value_dense)
        dense(f"{prefix}.attention.output.dense", attention.output_dense)
        layer_norm(f"{prefix}.attention.output.LayerNorm", block._self_attention_layer_norm)
        dense(f"{prefix}.intermediate.dense", block._feedforward_intermediate_dense)
        dense(f"{prefix}.output.dense", block._feedforward_output_dense)
        layer_norm(f"{prefix}.output.LayerNorm", block._feedforward_layer_norm)
    head = model.masked_lm_head
    dense("cls.predictions.transform.dense", head._intermediate_dense)
    layer_norm("cls.predictions.transform.LayerNorm", head._intermediate_layer_norm)
    out["cls.predictions.bias"] = _array(head._bias)
    if isinstance(model, model_lib.BertPretrainer):  # BertForPreTraining's pooler and pair head
        dense("bert.pooler.dense", backbone.get_layer("pooled_dense"))
        dense("cls.seq_relationship", model.next_sentence_head)
    return out


def export(model_dir: str, output_dir: str) -> list[str]:
    """Writes the Hugging Face folder; returns the names of its files."""
    from safetensors.numpy import save_file

    from mlmprep.trainer.fill_mask import load

    model, tokenizer, manifest = load(model_dir)
    vocab = vocabulary(tokenizer, manifest_lib.roles(manifest))
    # The tokenizer with its frame and special tokens, framing text as the shards do.
    files = transformers_files(tokenizer, vocab, manifest["config"]["max_seq_length"])
    pairs = isinstance(model, model_lib.BertPretrainer)
    files[CONFIG_FILE] = json.dumps(hf_config(model.backbone.get_config(), vocab, pairs), indent=2)
    os.makedirs(output_dir, exist_ok=True)
    save_file(hf_weights(model), os.path.join(output_dir, WEIGHTS_FILE), metadata={"format": "pt"})
    for name, text in files.items():
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            f.write(text + ("" if text.endswith("\n") else "\n"))
    return sorted([WEIGHTS_FILE, *files])


def main(argv):
    run(flags.export_parser().parse_args(argv))


def run(args):
    """``mlmprep export`` with its parsed flags (``flags.export_parser``)."""
    from mlmprep.pipeline.errors import UsageError
    from mlmprep.trainer import data

    try:
        names = export(args.model, args.output)
    except ImportError as e:
        raise UsageError(f"export needs safetensors: pip install safetensors ({e})") from None
    except (FileNotFoundError, data.DataError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.output}: {', '.join(names)}")
