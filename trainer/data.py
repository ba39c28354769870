"""tf.data input from mlmprep's TFRecord shards.

Shapes, vocabulary and special ids come from the output's manifest.json, not
from flags a user can get wrong.
"""

import os

import numpy as np
import tensorflow as tf

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.trainer.model import MLM_OUTPUT, PAIR_OUTPUT
from mlmprep.transforms import keys, pack
from mlmprep.transforms.mask import MaskingConfig, mask_batch


class DataError(UsageError):
    """The data directory cannot feed this model (no manifest, wrong shapes, ...): the user's one line."""


def read_manifest(data_dir: str) -> manifest_lib.Manifest:
    try:
        return manifest_lib.read(data_dir)
    except (manifest_lib.ManifestError, OSError) as e:
        raise DataError(str(e)) from None


def feature_spec(max_seq_length: int, max_predictions_per_seq: int, *, unmasked: bool = False) -> dict:
    """The feature spec of the original BERT run_pretraining.py, and ``position_ids``: where each row's
    pieces lie, read alike for every packing (0 at each piece's first token; one piece a row but with
    best-fit packing). ``unmasked`` (``--masking none``): word starts in place of the masked_lm_*, which
    masking adds."""
    seq = tf.io.FixedLenFeature([max_seq_length], tf.int64)
    pred = tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
    # Data written before position_ids were holds one piece a row: positions counting from 0.
    positions = tf.io.FixedLenFeature([max_seq_length], tf.int64, default_value=list(range(max_seq_length)))
    spec = {
        "position_ids": positions,
        "input_ids": seq,
        "input_mask": seq,
        "segment_ids": seq,
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    if unmasked:
        return {**spec, "word_starts": seq}
    return {
        **spec,
        "masked_lm_positions": pred,
        "masked_lm_ids": pred,
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
    }


def shard_paths(data_dir: str, manifest: dict, split: str) -> list[str]:
    return [
        os.path.join(data_dir, s["file"])
        for s in manifest["shards"]
        if s["split"] == split and s["format"] == "tfrecord" and s["records"] > 0
    ]


def is_unmasked(manifest: manifest_lib.Manifest) -> bool:
    """Whether the output was written without masks (``--masking none``): the trainer masks every batch."""
    return manifest_lib.settings(manifest).masking.unmasked


class DynamicMasker:
    """Masks every batch with the pipeline's own ``mask_batch`` and the trainer's ``MaskingConfig``.

    Each batch is masked anew with keys from (seed, sequence content, batch
    index), so a sequence seen again in a later epoch gets a different mask
    (RoBERTa style), under exactly the pipeline's rules: the key of batch
    index 0 is the job's key of copy 0, so with the job's seed the trainer
    masks a sequence as the job would have. Unmasked outputs keep their word
    starts, so words and spans can be masked; masked ones are restored from
    masked_lm_positions/ids and re-masked by tokens.
    """

    def __init__(self, data_dir: str, manifest: dict, seed: int, config: MaskingConfig):
        with tf.io.gfile.GFile(os.path.join(data_dir, manifest["tokenizer"]["file"])) as f:
            _, vocab = manifest_lib.vocabulary(manifest, f.read())
        self._vocab = vocab
        self._is_special = vocab.unselectable_lookup()
        self.config = config
        self._seed = seed

    def mask(self, index, input_ids, lengths, word_starts=None):
        """(masked input ids, masked_lm_positions, masked_lm_ids, masked_lm_weights) of original rows."""
        original = input_ids.astype(np.int32)
        content = pack.sequence_keys(original, lengths)  # the job's keys of the same sequences
        masked = mask_batch(
            original,
            lengths,
            keys.record_keys(content, seed=self._seed, dupe=int(index)),
            config=self.config,
            is_special=self._is_special,
            mask_id=self._vocab.mask_id,
            random_ids=self._vocab.random_ids,
            word_starts=None if word_starts is None else word_starts.astype(bool),
        )
        return (
            masked.input_ids.astype(np.int64),
            masked.masked_lm_positions.astype(np.int64),
            masked.masked_lm_ids.astype(np.int64),
            masked.masked_lm_weights,
        )

    def _remask(self, index, input_ids, input_mask, positions, ids, weights):
        original = input_ids.copy()
        rows, slots = np.nonzero(weights > 0)
        original[rows, positions[rows, slots]] = ids[rows, slots]
        return self.mask(index, original, input_mask.sum(axis=1))

    def _unmasked(self, index, input_ids, input_mask, word_starts):
        return self.mask(index, input_ids, input_mask.sum(axis=1), word_starts)

    def tf_map(self, index, features):
        if "word_starts" in features:
            function, names = self._unmasked, ("input_ids", "input_mask", "word_starts")
        else:
            function = self._remask
            names = ("input_ids", "input_mask", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
        outputs = tf.numpy_function(
            function,
            [index, *(features[name] for name in names)],
            [tf.int64, tf.int64, tf.int64, tf.float32],
            stateful=False,
        )
        features = {k: v for k, v in features.items() if k != "word_starts"}
        width = self.config.max_predictions_per_seq
        for name, value in zip(
            ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"), outputs
        ):
            value.set_shape(features["input_ids"].shape if name == "input_ids" else [None, width])
            features[name] = value
        return features


def to_model_inputs(features, pairs: bool = False, electra: bool = False, positions: bool = False):
    """BERT features -> (x, y, sample_weight) in keras-hub BertMaskedLM's names; with ``pairs``, y and
    sample_weight are dicts by output (``model.MLM_OUTPUT``, ``model.PAIR_OUTPUT``). ``electra``: x also
    holds the masked positions' original ids and weights, from which the model knows what its generator
    replaced (pairs' labels are unused). ``positions``: x also holds ``position_ids``, for a model that
    takes them (one built to attend inside each piece): a Keras model given an input it does not take
    matches its inputs by position, not by name."""
    x = {
        "token_ids": tf.cast(features["input_ids"], tf.int32),
        "padding_mask": tf.cast(features["input_mask"], tf.int32),
        "segment_ids": tf.cast(features["segment_ids"], tf.int32),
        "mask_positions": tf.cast(features["masked_lm_positions"], tf.int32),
    }
    if positions:
        x["position_ids"] = tf.cast(features["position_ids"], tf.int32)
    labels, weights = tf.cast(features["masked_lm_ids"], tf.int32), features["masked_lm_weights"]
    if electra:
        x["mask_ids"], x["mask_weights"] = labels, weights
    if electra or not pairs:
        return x, labels, weights
    pair_labels = tf.cast(features["next_sentence_labels"][:, 0], tf.int32)
    return (
        x,
        {MLM_OUTPUT: labels, PAIR_OUTPUT: pair_labels},
        {MLM_OUTPUT: weights, PAIR_OUTPUT: tf.ones_like(pair_labels, tf.float32)},
    )


def is_packed(manifest: manifest_lib.Manifest) -> bool:
    """Whether rows hold several pieces (best-fit packing): the model then attends inside each only."""
    return manifest_lib.settings(manifest).packing.best_fit


def has_pairs(manifest: manifest_lib.Manifest) -> bool:
    """Whether the data is sentence pairs, which the model learns with a pair head beside the MLM head."""
    return manifest_lib.settings(manifest).pairs.enabled


def make_dataset(
    data_dir: str,
    split: str,
    *,
    batch_size: int,
    manifest: dict | None = None,
    training: bool = True,
    seed: int = 0,
    masking: MaskingConfig | None = None,
    model_inputs: bool = True,
    objective: str = "mlm",
) -> tf.data.Dataset:
    """Batches of one split: shard files interleaved, parsed in parallel, shuffled, prefetched.

    ``training``: repeat forever, shuffle files and records, drop the last
    partial batch (fixed shapes for XLA); else one ordered pass. ``masking``:
    mask every batch so (``DynamicMasker``); an unmasked output needs it.
    """
    manifest = manifest or read_manifest(data_dir)
    paths = shard_paths(data_dir, manifest, split)
    if not paths:
        raise DataError(f"{data_dir} has no TFRecord records in split {split!r}")
    settings = manifest_lib.settings(manifest)
    unmasked = settings.masking.unmasked
    if unmasked and masking is None:
        raise DataError(f"{data_dir} is unmasked (--masking none): the trainer must mask it (masking=...)")
    spec = feature_spec(
        settings.packing.max_seq_length, settings.masking.max_predictions_per_seq, unmasked=unmasked
    )
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
    if masking is not None:
        masker = DynamicMasker(data_dir, manifest, seed, masking)
        batches = batches.enumerate().map(masker.tf_map, num_parallel_calls=tf.data.AUTOTUNE)
    if model_inputs:
        pairs, electra = has_pairs(manifest), objective == "electra"
        positions = settings.packing.best_fit  # the model built for such data takes them (model.build)
        batches = batches.map(
            lambda f: to_model_inputs(f, pairs, electra, positions), num_parallel_calls=tf.data.AUTOTUNE
        )
    return batches.prefetch(tf.data.AUTOTUNE)
