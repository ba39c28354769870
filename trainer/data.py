"""tf.data input from mlmprep's TFRecord shards.

Shapes, vocabulary and special ids come from the output's manifest.json, not
from flags a user can get wrong.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.trainer.model import MLM_OUTPUT, PAIR_OUTPUT
from mlmprep.transforms import keys
from mlmprep.transforms.mask import MaskingConfig, mask_batch


class DataError(ValueError):
    """The data directory cannot feed this model (no manifest, wrong shapes, ...)."""


def read_manifest(data_dir: str) -> manifest_lib.Manifest:
    try:
        return manifest_lib.read(data_dir)
    except (manifest_lib.ManifestError, OSError) as e:
        raise DataError(str(e)) from None


def feature_spec(max_seq_length: int, max_predictions_per_seq: int, packed: bool = False) -> dict:
    """The feature spec of the original BERT run_pretraining.py; ``packed``: with ``position_ids``."""
    seq = tf.io.FixedLenFeature([max_seq_length], tf.int64)
    pred = tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
    return {
        **({"position_ids": seq} if packed else {}),
        "input_ids": seq,
        "input_mask": seq,
        "segment_ids": seq,
        "masked_lm_positions": pred,
        "masked_lm_ids": pred,
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def shard_paths(data_dir: str, manifest: dict, split: str) -> list[str]:
    return [
        os.path.join(data_dir, s["file"])
        for s in manifest["shards"]
        if s["split"] == split and s["format"] == "tfrecord" and s["records"] > 0
    ]


def masking_config(manifest: manifest_lib.Manifest) -> MaskingConfig:
    """The output's masking, by token: stored sequences carry no word boundaries to mask whole words by."""
    return dataclasses.replace(manifest_lib.masking_config(manifest), whole_word_masking=False)


class DynamicMasker:
    """Re-masks stored sequences with the pipeline's own ``mask_batch``.

    The original tokens come back from masked_lm_positions/ids; each batch is
    masked anew with keys from (seed, sequence content, batch index), so a
    sequence seen again in a later epoch gets a different mask (RoBERTa
    style), under exactly the pipeline's rules.
    """

    def __init__(self, data_dir: str, manifest: dict, seed: int):
        with tf.io.gfile.GFile(os.path.join(data_dir, manifest["tokenizer"]["file"])) as f:
            _, vocab = manifest_lib.vocabulary(manifest, f.read())
        self._vocab = vocab
        self._is_special = vocab.unselectable_lookup()
        self._config = masking_config(manifest)
        self._seed = seed

    def __call__(self, index, input_ids, input_mask, positions, ids, weights):
        original = input_ids.copy()
        rows, slots = np.nonzero(weights > 0)
        original[rows, positions[rows, slots]] = ids[rows, slots]
        lengths = input_mask.sum(axis=1)
        content = np.array(
            [keys.content_key(row[:n].astype(np.int32).tobytes()) for row, n in zip(original, lengths)],
            dtype=np.uint64,
        )
        masked = mask_batch(
            original.astype(np.int32),
            lengths,
            keys.record_keys(content, seed=self._seed, dupe=int(index)),
            config=self._config,
            is_special=self._is_special,
            mask_id=self._vocab.mask_id,
            random_ids=self._vocab.random_ids,
        )
        return (
            masked.input_ids.astype(np.int64),
            masked.masked_lm_positions.astype(np.int64),
            masked.masked_lm_ids.astype(np.int64),
            masked.masked_lm_weights,
        )

    def tf_map(self, index, features):
        outputs = tf.numpy_function(
            self,
            [
                index,
                features["input_ids"],
                features["input_mask"],
                features["masked_lm_positions"],
                features["masked_lm_ids"],
                features["masked_lm_weights"],
            ],
            [tf.int64, tf.int64, tf.int64, tf.float32],
            stateful=False,
        )
        features = dict(features)
        for name, value in zip(
            ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"), outputs
        ):
            value.set_shape(features[name].shape)
            features[name] = value
        return features


def to_model_inputs(features, pairs: bool = False):
    """BERT features -> (x, y, sample_weight) in keras-hub BertMaskedLM's names (and ``position_ids``
    where the rows are packed); with ``pairs``, y and sample_weight are dicts by output
    (``model.MLM_OUTPUT``, ``model.PAIR_OUTPUT``)."""
    x = {
        "token_ids": tf.cast(features["input_ids"], tf.int32),
        "padding_mask": tf.cast(features["input_mask"], tf.int32),
        "segment_ids": tf.cast(features["segment_ids"], tf.int32),
        "mask_positions": tf.cast(features["masked_lm_positions"], tf.int32),
    }
    if "position_ids" in features:
        x["position_ids"] = tf.cast(features["position_ids"], tf.int32)
    labels, weights = tf.cast(features["masked_lm_ids"], tf.int32), features["masked_lm_weights"]
    if not pairs:
        return x, labels, weights
    pair_labels = tf.cast(features["next_sentence_labels"][:, 0], tf.int32)
    return (
        x,
        {MLM_OUTPUT: labels, PAIR_OUTPUT: pair_labels},
        {MLM_OUTPUT: weights, PAIR_OUTPUT: tf.ones_like(pair_labels, tf.float32)},
    )


def is_packed(manifest: manifest_lib.Manifest) -> bool:
    """Whether rows hold several pieces (best-fit packing): the model then attends inside each only."""
    return manifest["config"].get("packing") == "best_fit"


def has_pairs(manifest: manifest_lib.Manifest) -> bool:
    """Whether the data is sentence pairs, which the model learns with a pair head beside the MLM head."""
    return manifest_lib.sentence_pairs(manifest) != "none"


def make_dataset(
    data_dir: str,
    split: str,
    *,
    batch_size: int,
    manifest: dict | None = None,
    training: bool = True,
    seed: int = 0,
    dynamic_masking: bool = False,
    model_inputs: bool = True,
) -> tf.data.Dataset:
    """Batches of one split: shard files interleaved, parsed in parallel, shuffled, prefetched.

    ``training``: repeat forever, shuffle files and records, drop the last
    partial batch (fixed shapes for XLA); else one ordered pass.
    """
    manifest = manifest or read_manifest(data_dir)
    paths = shard_paths(data_dir, manifest, split)
    if not paths:
        raise DataError(f"{data_dir} has no TFRecord records in split {split!r}")
    config = manifest["config"]
    spec = feature_spec(config["max_seq_length"], config["max_predictions_per_seq"], is_packed(manifest))
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=8 << 20),
        cycle_length=min(len(paths), 16),
        block_length=16,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # the seed alone decides the order: a resumed run replays it exactly
    )
    if training:
        records = records.shuffle(16 * batch_size, seed=seed)
    batches = records.batch(batch_size, drop_remainder=training)
    batches = batches.map(lambda r: tf.io.parse_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE)
    if dynamic_masking:
        masker = DynamicMasker(data_dir, manifest, seed)
        batches = batches.enumerate().map(masker.tf_map, num_parallel_calls=tf.data.AUTOTUNE)
    if model_inputs:
        pairs = has_pairs(manifest)
        batches = batches.map(lambda f: to_model_inputs(f, pairs), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)
