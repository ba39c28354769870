"""The compact form a masked sequence takes between masking and writing.

Between the two steps records cross a shuffle (they are grouped by shard), so
they travel as one small bytes value each, without padding, rather than as
pickled numpy arrays; the writer turns a shard back into batches, a slice of
rows at a time.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class MaskedBatch:
    """Masked sequences in the BERT layout; padding of the masked_lm_* is 0."""

    input_ids: np.ndarray  # int32 [N, L], after replacement
    lengths: np.ndarray  # int32 [N]
    masked_lm_positions: np.ndarray  # int32 [N, P], ascending, then 0
    masked_lm_ids: np.ndarray  # int32 [N, P]: the original ids
    num_predictions: np.ndarray  # int32 [N]

    @property
    def masked_lm_weights(self) -> np.ndarray:
        width = self.masked_lm_positions.shape[1]
        return (np.arange(width)[None, :] < self.num_predictions[:, None]).astype(np.float32)


# Payload element types, by the first byte: 16 bits whenever the vocabulary and
# the sequence length allow (they almost always do), halving what crosses the shuffles.
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<i4")}


def to_payloads(batch: MaskedBatch) -> list[bytes]:
    """``[n, k, input_ids[:n], positions[:k], masked_lm_ids[:k]]`` per row, after a type byte."""
    top = max(
        int(batch.input_ids.max(initial=0)), int(batch.masked_lm_ids.max(initial=0)), batch.input_ids.shape[1]
    )
    code = 2 if top < 1 << 16 else 4
    dtype, tag = _DTYPES[code], bytes([code])
    out = []
    for ids, n, positions, original, k in zip(
        batch.input_ids.astype(dtype),
        batch.lengths,
        batch.masked_lm_positions.astype(dtype),
        batch.masked_lm_ids.astype(dtype),
        batch.num_predictions,
    ):
        header = np.array([n, k], dtype=dtype)
        out.append(
            b"".join(
                (tag, header.tobytes(), ids[:n].tobytes(), positions[:k].tobytes(), original[:k].tobytes())
            )
        )
    return out


def from_payloads(
    payloads: list[bytes], *, max_seq_length: int, max_predictions_per_seq: int, pad_id: int
) -> MaskedBatch:
    """The padded batch of a list of payloads, in the same order."""
    num = len(payloads)
    input_ids = np.full((num, max_seq_length), pad_id, dtype=np.int32)
    positions = np.zeros((num, max_predictions_per_seq), dtype=np.int32)
    original = np.zeros((num, max_predictions_per_seq), dtype=np.int32)
    lengths = np.zeros(num, dtype=np.int32)
    counts = np.zeros(num, dtype=np.int32)
    for row, payload in enumerate(payloads):
        values = np.frombuffer(payload, dtype=_DTYPES[payload[0]], offset=1)
        n, k = int(values[0]), int(values[1])
        lengths[row], counts[row] = n, k
        input_ids[row, :n] = values[2 : 2 + n]
        positions[row, :k] = values[2 + n : 2 + n + k]
        original[row, :k] = values[2 + n + k :]
    return MaskedBatch(input_ids, lengths, positions, original, counts)
