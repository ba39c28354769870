"""What the data looks like: how much is [UNK], how much is padding, how long sequences and documents are.

Counted as the job writes each shard (and the tokenizer sees each document),
kept per split in the manifest, and recounted from the shards by ``verify``.
"""

import numpy as np

from mlmprep.transforms import records
from mlmprep.transforms.records import MaskedBatch

BUCKETS = 16  # of every histogram
DOCUMENT_TOKENS = "document_tokens"  # the tokenizing step's counters "document_tokens.SPLIT.BUCKET"


def length_buckets(lengths: np.ndarray, max_seq_length: int) -> np.ndarray:
    """Counts of real lengths (1 to ``max_seq_length``) in BUCKETS equal buckets: bucket i holds the
    lengths in (i * L / 16, (i + 1) * L / 16]."""
    buckets = np.clip((np.asarray(lengths, np.int64) - 1) * BUCKETS // max_seq_length, 0, BUCKETS - 1)
    return np.bincount(buckets, minlength=BUCKETS)


def length_bucket_edges(max_seq_length: int) -> list[tuple[int, int]]:
    """(first, last) length of each bucket of ``length_buckets``, both included (empty where first > last)."""
    cuts = [-(-i * max_seq_length // BUCKETS) for i in range(BUCKETS + 1)]  # ceil(i * L / 16)
    return [(cuts[i] + 1, cuts[i + 1]) for i in range(BUCKETS)]


def document_buckets(token_counts: np.ndarray) -> np.ndarray:
    """Counts of documents by tokens in powers of two: bucket i holds [2**i, 2**(i+1)), the last 2**15 on."""
    counts = np.maximum(np.asarray(token_counts, np.int64), 1)
    return np.bincount(np.minimum(np.log2(counts).astype(np.int64), BUCKETS - 1), minlength=BUCKETS)


def unk_tokens(batch: MaskedBatch, unk_id: int | None) -> int:
    """Tokens that are the tokenizer's unknown token, before masking.

    As the masked sequences hold them: [UNK] is special, so masking never
    selects it and never draws it as a random token (``verify`` checks both).
    """
    return 0 if unk_id is None else int(np.sum(batch.input_ids == unk_id))


def pieces(batch: MaskedBatch, piece_start_id: int | None) -> int:
    """Pieces (documents or parts of one, each framed) the sequences hold: one each but with best fit."""
    return int(records.piece_starts(batch.input_ids, batch.lengths, piece_start_id).sum())


def padding(batch: MaskedBatch) -> int:
    """Positions holding [PAD]: every position after a sequence's real tokens."""
    return int(batch.input_ids.shape[1] * len(batch.lengths) - batch.lengths.sum())
