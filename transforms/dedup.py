"""Exact deduplication by digests: which documents lose to an earlier copy.

A document's key hashes its whitespace-normalized text, its copy key its
exact text. Of the documents sharing a key, the one of smallest copy key
(then of smallest place in the input) is kept, so which copy survives never
depends on the runner. Only fixed-size digests are compared, never text: the
first pass of the job reads every range for them, and the second reads the
ranges again and skips the losers found here.
"""

from collections.abc import Iterator

import numpy as np

# A document's digest: its keys and its place, named by its range and its index there.
DIGEST = np.dtype([("key", "<u8"), ("copy", "<u8"), ("range", "<u8"), ("index", "<u4")])
INDEX = np.dtype("<u4")


def digests(keys: np.ndarray, copies: np.ndarray, range_key: int) -> np.ndarray:
    """The digests of a range's documents, in the order they were read."""
    out = np.empty(len(keys), DIGEST)
    out["key"], out["copy"], out["range"] = keys, copies, range_key
    out["index"] = np.arange(len(keys))
    return out


def bucket_of(keys: np.ndarray, bits: int) -> np.ndarray:
    """The bucket of each 63-bit key: its top ``bits`` (what joins anything keyed by a document's key to
    its digests)."""
    return keys >> np.uint64(63 - bits)


def by_bucket(digests: np.ndarray, bits: int) -> Iterator[tuple[int, np.ndarray]]:
    """Digests grouped by the top ``bits`` of their 63-bit key: copies always share a bucket."""
    buckets = bucket_of(digests["key"], bits)
    order = np.argsort(buckets, kind="stable")
    values, starts = np.unique(buckets[order], return_index=True)
    for bucket, part in zip(values, np.split(digests[order], starts[1:])):
        yield int(bucket), part


def losers(digests: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(range key, ascending indices) of every document that is not the first of its key."""
    ordered = _ordered(digests)
    return by_range(ordered[1:][ordered["key"][1:] == ordered["key"][:-1]])


def firsts(digests: np.ndarray) -> np.ndarray:
    """The digest of the first document of each key: the one exact deduplication keeps."""
    ordered = _ordered(digests)
    return ordered[np.concatenate([[True], ordered["key"][1:] != ordered["key"][:-1]])[: len(ordered)]]


def _ordered(digests: np.ndarray) -> np.ndarray:
    """Digests by key, the kept copy of each key first (smallest copy key, then place)."""
    return digests[np.lexsort((digests["index"], digests["range"], digests["copy"], digests["key"]))]


def by_range(digests: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(range key, ascending indices) of the documents of some digests."""
    digests = digests[np.lexsort((digests["index"], digests["range"]))]
    values, starts = np.unique(digests["range"], return_index=True)
    for range_key, part in zip(values, np.split(digests["index"], starts[1:])):
        yield int(range_key), part.astype(INDEX)
