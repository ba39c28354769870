"""``mlmprep export``: a trained model as a Hugging Face ``BertForMaskedLM`` folder (``BertForPreTraining``
where the model has a sentence-pair head; an ELECTRA model as two folders, ``discriminator/`` with
``ElectraForPreTraining`` and ``generator/`` with ``ElectraForMaskedLM``, each loadable on its own).

The weight mapping is keras-hub's own ``convert_bert.py`` run backwards (it
ports Hugging Face BERT checkpoints into ``BertBackbone``, whose layers the
trainer's ``Encoder`` has), plus the masked-LM head, which that converter
does not carry. The folder holds ``config.json``,
``model.safetensors`` and the tokenizer files, so that
``transformers.pipeline("fill-mask", model=FOLDER)`` and
``BertForMaskedLM.from_pretrained(FOLDER)`` load it with neither TensorFlow
nor this package. Writing it needs only numpy and ``safetensors``.
"""

import json
import os

import numpy as np

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.trainer import electra
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


def electra_config(shape: dict, vocab: Vocabulary, generator: bool) -> dict:
    """``config.json`` of an ``ElectraForMaskedLM`` (the generator) or ``ElectraForPreTraining`` (the
    discriminator) of one side's ``Encoder`` arguments."""
    return {
        "architectures": ["ElectraForMaskedLM" if generator else "ElectraForPreTraining"],
        "model_type": "electra",
        "vocab_size": shape["vocabulary_size"],
        "embedding_size": shape["embedding_dim"],
        "hidden_size": shape["hidden_dim"],
        "num_hidden_layers": shape["num_layers"],
        "num_attention_heads": shape["num_heads"],
        "intermediate_size": shape["intermediate_dim"],
        "hidden_act": electra.ACTIVATION,  # the exact GELU, as the Keras model's encoders and heads
        "hidden_dropout_prob": shape.get("dropout", 0.1),
        "attention_probs_dropout_prob": shape.get("dropout", 0.1),
        "max_position_embeddings": shape["max_sequence_length"],
        "type_vocab_size": shape.get("num_segments", 2),
        "initializer_range": 0.02,
        "layer_norm_eps": electra.LAYER_NORM_EPSILON,
        "pad_token_id": vocab.pad_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def _array(variable) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(variable.numpy(), dtype=np.float32))


class _StateDict(dict):
    """A Hugging Face state dict filled from Keras layers.

    Keras kernels are (in, out) and Hugging Face's Linear weights (out, in);
    attention kernels are split by head in Keras and whole in Hugging Face.
    """

    def dense(self, prefix: str, layer):
        kernel = _array(layer.kernel)
        self[f"{prefix}.weight"] = np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T)
        self[f"{prefix}.bias"] = _array(layer.bias).reshape(-1)

    def layer_norm(self, prefix: str, layer):
        self[f"{prefix}.weight"] = _array(layer.gamma)
        self[f"{prefix}.bias"] = _array(layer.beta)

    def encoder(self, prefix: str, encoder):
        """An ``Encoder``: its embeddings, their projection where there is one, and its keras-hub
        TransformerEncoders, through the private attributes keras-hub's own converter reads (the layer
        exposes no others)."""
        embeddings = f"{prefix}.embeddings"
        self[f"{embeddings}.word_embeddings.weight"] = _array(encoder.token_embedding.embeddings)
        positions = encoder.position_embedding.position_embeddings
        self[f"{embeddings}.position_embeddings.weight"] = _array(positions)
        self[f"{embeddings}.token_type_embeddings.weight"] = _array(encoder.segment_embedding.embeddings)
        self.layer_norm(f"{embeddings}.LayerNorm", encoder.embeddings_layer_norm)
        if encoder.embeddings_projection is not None:
            self.dense(f"{prefix}.embeddings_project", encoder.embeddings_projection)
        for i, block in enumerate(encoder.transformer_layers):
            attention, at = block._self_attention_layer, f"{prefix}.encoder.layer.{i}"
            for name, dense in (
                ("query", attention.query_dense),
                ("key", attention.key_dense),
                ("value", attention.value_dense),
            ):  # kernel (hidden, heads, head_dim) -> weight (heads * head_dim, hidden)
                self[f"{at}.attention.self.{name}.weight"] = np.ascontiguousarray(
                    _array(dense.kernel).reshape(encoder.hidden_dim, -1).T
                )
                self[f"{at}.attention.self.{name}.bias"] = _array(dense.bias).reshape(-1)
            self.dense(f"{at}.attention.output.dense", attention.output_dense)
            self.layer_norm(f"{at}.attention.output.LayerNorm", block._self_attention_layer_norm)
            self.dense(f"{at}.intermediate.dense", block._feedforward_intermediate_dense)
            self.dense(f"{at}.output.dense", block._feedforward_output_dense)
            self.layer_norm(f"{at}.output.LayerNorm", block._feedforward_layer_norm)

    def masked_lm_head(self, prefix: str, head, bias: str):
        """keras-hub's MaskedLMHead: its transform and layer norm, and its bias (the decoder is tied)."""
        self.dense(f"{prefix}.dense", head._intermediate_dense)
        self.layer_norm(f"{prefix}.LayerNorm", head._intermediate_layer_norm)
        self[bias] = _array(head._bias)


def hf_weights(model) -> dict[str, np.ndarray]:
    """The state dict ``BertForMaskedLM.save_pretrained`` writes, from a keras-hub ``BertMaskedLM`` (or
    ``BertForPreTraining``'s, from a ``BertPretrainer``). The decoder is tied to the word embeddings in
    both, so it is not written."""
    out = _StateDict()
    out.encoder("bert", model.backbone)
    out.masked_lm_head("cls.predictions.transform", model.masked_lm_head, "cls.predictions.bias")
    if isinstance(model, model_lib.BertPretrainer):  # BertForPreTraining's pooler and pair head
        out.dense("bert.pooler.dense", model.backbone.pooled_dense)
        out.dense("cls.seq_relationship", model.next_sentence_head)
    return dict(out)


def electra_weights(model: electra.ElectraPretrainer, side: str) -> dict[str, np.ndarray]:
    """The state dict of ``ElectraForMaskedLM`` (``side`` "generator") or ``ElectraForPreTraining``
    ("discriminator"): the shared embeddings, the side's projection and encoder, and its head."""
    out = _StateDict()
    if side == "generator":
        out.encoder("electra", model.generator_encoder)
        out.masked_lm_head("generator_predictions", model.generator_head, "generator_lm_head.bias")
    else:
        out.encoder("electra", model.discriminator_encoder)
        out.dense("discriminator_predictions.dense", model.discriminator_dense)
        out.dense("discriminator_predictions.dense_prediction", model.discriminator_prediction)
    return dict(out)


def _write(output_dir: str, weights: dict, files: dict) -> list[str]:
    from safetensors.numpy import save_file

    os.makedirs(output_dir, exist_ok=True)
    save_file(weights, os.path.join(output_dir, WEIGHTS_FILE), metadata={"format": "pt"})
    for name, text in files.items():
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            f.write(text + ("" if text.endswith("\n") else "\n"))
    return sorted([WEIGHTS_FILE, *files])


def export(model_dir: str, output_dir: str) -> list[str]:
    """Writes the Hugging Face folder (an ELECTRA model's two: ``discriminator/`` and ``generator/``);
    returns the names of the files written, relative to ``output_dir``."""
    try:
        import safetensors  # noqa: F401  (fails early, before anything is written, where it is missing)
    except ImportError as e:
        raise model_lib.TrainError(f"export needs safetensors: pip install safetensors ({e})") from None

    from mlmprep.trainer.fill_mask import load

    model, tokenizer, manifest = load(model_dir)
    vocab = vocabulary(tokenizer, manifest_lib.roles(manifest))
    # The tokenizer with its frame and special tokens, framing text as the shards do.
    files = transformers_files(tokenizer, vocab, manifest_lib.settings(manifest).packing.max_seq_length)
    if isinstance(model, electra.ElectraPretrainer):
        written = []
        for side in ("discriminator", "generator"):
            encoder = model.generator_encoder if side == "generator" else model.discriminator_encoder
            config = electra_config(encoder.get_config(), vocab, side == "generator")
            names = _write(
                os.path.join(output_dir, side),
                electra_weights(model, side),
                {**files, CONFIG_FILE: json.dumps(config, indent=2)},
            )
            written += [f"{side}/{name}" for name in names]
        return written
    pairs = isinstance(model, model_lib.BertPretrainer)
    files[CONFIG_FILE] = json.dumps(hf_config(model.backbone.get_config(), vocab, pairs), indent=2)
    return _write(output_dir, hf_weights(model), files)


def run(args):
    """``mlmprep export`` with its parsed flags (``flags.export_parser``)."""
    names = export(args.model, args.output)
    print(f"wrote {args.output}: {', '.join(names)}")
