"""Packing token ids into fixed-length ``[CLS] ... [SEP] [PAD]...`` sequences.

No token of a kept document is ever dropped: a document longer than one
sequence continues in the next one.
"""

import dataclasses

import numpy as np

from mlmprep.transforms import keys
from mlmprep.transforms.counting import CountingDoFn

PACKINGS = ("document", "concat")


@dataclasses.dataclass
class SequenceBatch:
    """Unmasked sequences; ``keys`` are content keys of the token ids."""

    input_ids: np.ndarray  # int32 [N, max_seq_length]
    lengths: np.ndarray  # int32 [N]: real tokens, [CLS] and [SEP] included
    keys: np.ndarray  # uint64 [N]
    splits: np.ndarray  # int8 [N]


def pack_documents(
    token_ids: list[np.ndarray], *, max_seq_length: int, cls_id: int, sep_id: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One or more sequences per document; sequences never cross documents.

    Returns ``(input_ids [N, L], lengths [N], document_index [N])``.
    """
    body = max_seq_length - 2
    doc_lengths = np.array([ids.size for ids in token_ids], dtype=np.int64)
    per_doc = -(-doc_lengths // body)  # ceil; a document with no tokens has none
    num_sequences = int(per_doc.sum())
    input_ids = np.full((num_sequences, max_seq_length), pad_id, dtype=np.int32)
    if num_sequences == 0:
        return input_ids, np.zeros(0, np.int32), np.zeros(0, np.int64)
    first_sequence = np.cumsum(per_doc) - per_doc
    flat = np.concatenate(token_ids).astype(np.int32, copy=False)
    doc_of_token = np.repeat(np.arange(len(token_ids)), doc_lengths)
    offset = np.arange(flat.size) - np.repeat(np.cumsum(doc_lengths) - doc_lengths, doc_lengths)
    rows = first_sequence[doc_of_token] + offset // body
    input_ids[rows, 1 + offset % body] = flat
    lengths = np.bincount(rows, minlength=num_sequences).astype(np.int32) + 2
    input_ids[:, 0] = cls_id
    input_ids[np.arange(num_sequences), lengths - 1] = sep_id
    document_index = np.repeat(np.arange(len(token_ids)), per_doc)
    return input_ids, lengths, document_index


def pack_concat(
    token_ids: list[np.ndarray], *, max_seq_length: int, cls_id: int, sep_id: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Documents joined by [SEP] in the given order, filling every sequence.

    Only the last sequence may be short. A joining [SEP] that would open or
    close a sequence is left out: the sequence's own [CLS]/[SEP] marks the
    boundary. Returns ``(input_ids [N, L], lengths [N])``.
    """
    body = max_seq_length - 2
    sep = np.array([sep_id], dtype=np.int32)
    bodies, current, filled = [], [], 0

    def close():
        nonlocal current, filled
        bodies.append(np.concatenate(current))
        current, filled = [], 0

    # A loop over documents and pieces, not tokens: the copies are numpy's.
    for ids in token_ids:
        if filled:
            if filled + 1 >= body:  # no room for the joiner and one token
                close()
            else:
                current.append(sep)
                filled += 1
        start = 0
        while start < ids.size:
            take = min(body - filled, ids.size - start)
            current.append(ids[start : start + take])
            filled += take
            start += take
            if filled == body:
                close()
    if filled:
        close()
    input_ids = np.full((len(bodies), max_seq_length), pad_id, dtype=np.int32)
    lengths = np.array([b.size + 2 for b in bodies], dtype=np.int32)
    for row, b in enumerate(bodies):
        input_ids[row, 1 : 1 + b.size] = b
    input_ids[:, 0] = cls_id
    input_ids[np.arange(len(bodies)), lengths - 1] = sep_id
    return input_ids, lengths


def sequence_keys(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Content keys: a hash of each sequence's real token ids."""
    return np.array(
        [keys.content_key(row[:n].tobytes()) for row, n in zip(input_ids, lengths)],
        dtype=np.uint64,
    )


class PackDocuments(CountingDoFn):
    """TokenizedBatch -> SequenceBatch, ``--packing document``."""

    def __init__(self, *, max_seq_length: int, vocab):
        super().__init__()
        self._max_seq_length = max_seq_length
        self._ids = dict(cls_id=vocab.cls_id, sep_id=vocab.sep_id, pad_id=vocab.pad_id)

    def process(self, batch):
        input_ids, lengths, doc = pack_documents(
            batch.token_ids, max_seq_length=self._max_seq_length, **self._ids
        )
        self.count("documents_split_across_sequences", int((np.bincount(doc) > 1).sum()))
        yield SequenceBatch(input_ids, lengths, sequence_keys(input_ids, lengths), batch.splits[doc])


class PackConcat(CountingDoFn):
    """((split, group), [(document_key, token_ids)]) -> SequenceBatch, ``--packing concat``.

    Documents of a group are joined in key order, so the result does not
    depend on the order the runner delivers them in.
    """

    def __init__(self, *, max_seq_length: int, vocab):
        super().__init__()
        self._max_seq_length = max_seq_length
        self._ids = dict(cls_id=vocab.cls_id, sep_id=vocab.sep_id, pad_id=vocab.pad_id)

    def process(self, element):
        (split, _), documents = element
        documents = sorted(documents, key=lambda d: (d[0], d[1].tobytes()))
        input_ids, lengths = pack_concat(
            [ids for _, ids in documents], max_seq_length=self._max_seq_length, **self._ids
        )
        splits = np.full(len(lengths), split, dtype=np.int8)
        yield SequenceBatch(input_ids, lengths, sequence_keys(input_ids, lengths), splits)
