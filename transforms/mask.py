"""Masked-LM selection and replacement, as the original BERT does it.

``mask_batch`` is pure numpy over a batch, so the trainer can call it for
dynamic (per-epoch) masking with the same rules. Its randomness comes from
``keys.uniform`` on each sequence's key: a given (seed, sequence, copy) is
masked the same way on any runner, worker or retry.
"""

import dataclasses

import numpy as np

from mlmprep.transforms import keys, records
from mlmprep.transforms.counting import CountingDoFn
from mlmprep.transforms.records import MaskedBatch

_SELECT, _DECIDE, _REPLACE = 0, 1, 2  # independent random streams per sequence


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1


def prediction_counts(lengths, num_candidates, config: MaskingConfig) -> np.ndarray:
    """``min(max_predictions, max(1, round(n * p)))``, n counting [CLS] and [SEP].

    ``np.rint`` rounds half to even, as Python 3's ``round`` in BERT's script.
    """
    wanted = np.maximum(1, np.rint(lengths * config.masked_lm_prob)).astype(np.int64)
    return np.minimum(np.minimum(wanted, config.max_predictions_per_seq), num_candidates)


def mask_batch(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    rng_keys: np.ndarray,
    *,
    config: MaskingConfig,
    is_special: np.ndarray,
    mask_id: int,
    random_ids: np.ndarray,
) -> MaskedBatch:
    """Selects and replaces tokens of each sequence.

    Args:
      input_ids: int [N, L] unmasked sequences.
      lengths: int [N] real tokens per sequence.
      rng_keys: uint64 [N], one per sequence and copy (``keys.record_keys``).
      config: the probabilities and the prediction cap.
      is_special: bool [vocab_size], True for ids never selected.
      mask_id: the [MASK] id.
      random_ids: ids a "random token" replacement draws from, uniformly.
    """
    n, width = input_ids.shape
    cap = config.max_predictions_per_seq
    rows = np.arange(n)[:, None]
    candidate = ~is_special[input_ids] & (np.arange(width)[None, :] < lengths[:, None])
    count = prediction_counts(lengths, candidate.sum(axis=1), config)

    # A random permutation of the candidates; the first `count` are selected.
    score = np.where(candidate, keys.uniform(rng_keys, stream=_SELECT, width=width), 2.0)
    order = np.argsort(score, axis=1, kind="stable")[:, :cap]
    valid = np.arange(order.shape[1])[None, :] < count[:, None]
    positions = np.sort(np.where(valid, order, width), axis=1)  # chosen first, ascending
    valid = positions < width
    positions = np.where(valid, positions, 0)

    original = np.take_along_axis(input_ids, positions, axis=1)
    # One decision per selected position, drawn at that position's counter.
    decide = np.take_along_axis(keys.uniform(rng_keys, stream=_DECIDE, width=width), positions, 1)
    pick = np.take_along_axis(keys.uniform(rng_keys, stream=_REPLACE, width=width), positions, 1)
    random_token = random_ids[np.minimum((pick * random_ids.size).astype(np.int64), random_ids.size - 1)]
    replacement = np.where(
        decide < config.mask_token_ratio,
        mask_id,
        np.where(decide < config.mask_token_ratio + config.random_token_ratio, random_token, original),
    )
    masked = input_ids.astype(np.int32, copy=True)
    masked[np.broadcast_to(rows, positions.shape)[valid], positions[valid]] = replacement[valid]

    padded = np.zeros((n, cap), dtype=np.int32)
    padded_ids = np.zeros((n, cap), dtype=np.int32)
    padded[:, : positions.shape[1]] = np.where(valid, positions, 0)
    padded_ids[:, : positions.shape[1]] = np.where(valid, original, 0)
    return MaskedBatch(
        input_ids=masked,
        lengths=np.asarray(lengths, dtype=np.int32),
        masked_lm_positions=padded,
        masked_lm_ids=padded_ids,
        num_predictions=count.astype(np.int32),
    )


class MaskSequences(CountingDoFn):
    """SequenceBatch -> (split, record_key, payload), ``dupe_factor`` copies of each sequence."""

    def __init__(self, *, config: MaskingConfig, vocab, seed: int, dupe_factor: int):
        super().__init__()
        self._config = config
        self._vocab = vocab
        self._seed = seed
        self._dupe_factor = dupe_factor
        self._is_special = None

    def setup(self):
        self._is_special = self._vocab.special_lookup()

    def process(self, batch):
        for dupe in range(self._dupe_factor):
            rng_keys = keys.record_keys(batch.keys, seed=self._seed, dupe=dupe)
            masked = mask_batch(
                batch.input_ids,
                batch.lengths,
                rng_keys,
                config=self._config,
                is_special=self._is_special,
                mask_id=self._vocab.mask_id,
                random_ids=self._vocab.random_ids,
            )
            for row, record in enumerate(records.to_payloads(masked)):
                yield int(batch.splits[row]), int(rng_keys[row] >> np.uint64(1)), record
