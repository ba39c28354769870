"""``mlmprep fill-mask``: the top-k tokens a trained model puts at each mask token ([MASK], <mask>)."""

import json
import os
import warnings

import keras
import keras_hub  # noqa: F401  (registers the BERT classes for loading)
import numpy as np

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.trainer import data
from mlmprep.trainer import model as model_lib
from mlmprep.trainer.electra import ElectraPretrainer
from mlmprep.trainer.model_dir import FINAL_MODEL, MODEL_CONFIG, checkpoints
from mlmprep.transforms.tokenize import vocabulary

# Inference needs no optimizer: Keras says it skips the saved optimizer state.
warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")


def load(model_dir: str):
    """(model, tokenizer, manifest) of a model directory; the last checkpoint if training did not finish."""
    from tokenizers import Tokenizer

    manifest = data.read_manifest(model_dir)
    path = os.path.join(model_dir, FINAL_MODEL)
    if os.path.exists(path):
        model = keras.saving.load_model(path, compile=False)
    else:
        found = checkpoints(model_dir)
        if not found:
            raise model_lib.TrainError(f"{model_dir} holds no trained model")
        with open(os.path.join(model_dir, MODEL_CONFIG)) as f:
            config = json.load(f)
        model = model_lib.build(config, pairs=data.has_pairs(manifest), packed=data.is_packed(manifest))
        model.load_weights(found[-1][1])
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, manifest["tokenizer"]["file"]))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return model, tokenizer, manifest


def fill_mask(model, tokenizer, text: str, *, top_k: int = 5, max_seq_length: int = 128, roles=None):
    """One list of (token, probability) per mask token (``[MASK]``, ``<mask>``: the tokenizer's), in order;
    ``roles``, the manifest's (``manifest.roles``), name the tokenizer's special tokens."""
    vocab = vocabulary(tokenizer, roles or {})
    frame = vocab.frame
    ids = tokenizer.encode(text, add_special_tokens=False).ids[: max_seq_length - frame.specials]
    ids = [*frame.prefix.tolist(), *ids, *frame.suffix.tolist()]
    positions = [i for i, t in enumerate(ids) if t == vocab.mask_id]
    if not positions:
        raise model_lib.TrainError(f"the text has no {tokenizer.id_to_token(vocab.mask_id)}")
    token_ids = np.full((1, max_seq_length), vocab.pad_id, dtype=np.int32)
    token_ids[0, : len(ids)] = ids
    inputs = {
        "token_ids": token_ids,
        "padding_mask": (token_ids != vocab.pad_id).astype(np.int32),
        "segment_ids": np.zeros_like(token_ids),
        "mask_positions": np.array([positions], dtype=np.int32),
    }
    masked_lm = model.generator if isinstance(model, ElectraPretrainer) else model  # ELECTRA's masked LM
    if "position_ids" in masked_lm.input:  # a model for packed rows: this row is one piece
        inputs["position_ids"] = np.where(inputs["padding_mask"] > 0, np.arange(max_seq_length), 0).astype(
            np.int32
        )
    logits = np.asarray(model_lib.masked_lm_logits(model, inputs), dtype=np.float64)[0]
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    results = []
    for row in probabilities:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append([(tokenizer.id_to_token(int(i)), float(row[i])) for i in best])
    return results


def run(args):
    """``mlmprep fill-mask`` with its parsed flags (``flags.fill_mask_parser``)."""
    model, tokenizer, manifest = load(args.model)
    results = fill_mask(
        model,
        tokenizer,
        args.text,
        top_k=args.top_k,
        max_seq_length=manifest_lib.settings(manifest).packing.max_seq_length,
        roles=manifest_lib.roles(manifest),
    )
    mask = tokenizer.id_to_token(manifest_lib.roles(manifest).get("mask", tokenizer.token_to_id("[MASK]")))
    for i, candidates in enumerate(results):
        print(f"{mask} {i + 1}:")
        for token, p in candidates:
            print(f"  {token:<20} {p:.4f}")
