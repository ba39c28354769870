"""Packing token ids into fixed-length ``[CLS] ... [SEP] [PAD]...`` sequences.

No token of a kept document is ever dropped: a document longer than one
sequence continues in the next one. Word-start flags (for whole-word
masking) are packed alongside the ids, position for position.
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
    word_starts: np.ndarray | None = None  # bool [N, max_seq_length]


def pack_documents(
    token_ids: list[np.ndarray],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    word_starts: list[np.ndarray] | None = None,
):
    """One or more sequences per document; sequences never cross documents.

    Returns ``(input_ids [N, L], lengths [N], document_index [N], starts)``,
    ``starts`` the packed word starts (bool [N, L]) or None.
    """
    body = max_seq_length - 2
    doc_lengths = np.array([ids.size for ids in token_ids], dtype=np.int64)
    per_doc = -(-doc_lengths // body)  # ceil; a document with no tokens has none
    num_sequences = int(per_doc.sum())
    input_ids = np.full((num_sequences, max_seq_length), pad_id, dtype=np.int32)
    starts = None if word_starts is None else np.zeros((num_sequences, max_seq_length), dtype=bool)
    document_index = np.repeat(np.arange(len(token_ids)), per_doc)
    if num_sequences == 0:
        return input_ids, np.zeros(0, np.int32), document_index, starts
    first_sequence = np.cumsum(per_doc) - per_doc
    doc_of_token = np.repeat(np.arange(len(token_ids)), doc_lengths)
    offset = np.arange(doc_lengths.sum()) - np.repeat(np.cumsum(doc_lengths) - doc_lengths, doc_lengths)
    rows = first_sequence[doc_of_token] + offset // body
    cols = 1 + offset % body
    input_ids[rows, cols] = np.concatenate(token_ids)
    if starts is not None:
        starts[rows, cols] = np.concatenate(word_starts)
    lengths = np.bincount(rows, minlength=num_sequences).astype(np.int32) + 2
    input_ids[:, 0] = cls_id
    input_ids[np.arange(num_sequences), lengths - 1] = sep_id
    return input_ids, lengths, document_index, starts


def pack_concat(
    token_ids: list[np.ndarray],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    word_starts: list[np.ndarray] | None = None,
):
    """Documents joined by [SEP] in the given order, filling every sequence.

    Only the last sequence may be short (and one may end a token early where
    the joining [SEP] would have been its last body token): a joining [SEP]
    never opens or closes a sequence, whose own [CLS]/[SEP] mark the boundary.
    Returns ``(input_ids [N, L], lengths [N], starts)`` as ``pack_documents``.
    """
    body = max_seq_length - 2
    # Slices (document, start, end) of each sequence body; -1 is a joining [SEP].
    bodies, current, filled = [], [], 0
    for doc, ids in enumerate(token_ids):  # a loop over documents and their slices, not tokens
        if filled:
            if filled + 1 >= body:  # no room for the joiner and one token
                bodies.append(current)
                current, filled = [], 0
            else:
                current.append((-1, 0, 1))
                filled += 1
        start = 0
        while start < ids.size:
            take = min(body - filled, ids.size - start)
            current.append((doc, start, start + take))
            filled += take
            start += take
            if filled == body:
                bodies.append(current)
                current, filled = [], 0
    if filled:
        bodies.append(current)

    input_ids = np.full((len(bodies), max_seq_length), pad_id, dtype=np.int32)
    starts = None if word_starts is None else np.zeros(input_ids.shape, dtype=bool)
    lengths = np.zeros(len(bodies), dtype=np.int32)
    for row, slices in enumerate(bodies):
        col = 1
        for doc, start, end in slices:
            if doc < 0:
                input_ids[row, col] = sep_id
            else:
                input_ids[row, col : col + end - start] = token_ids[doc][start:end]
                if starts is not None:
                    starts[row, col : col + end - start] = word_starts[doc][start:end]
            col += end - start
        lengths[row] = col + 1
    input_ids[:, 0] = cls_id
    input_ids[np.arange(len(bodies)), lengths - 1] = sep_id
    return input_ids, lengths, starts


def sequence_keys(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Content keys: a hash of each sequence's real token ids."""
    return np.array(
        [keys.content_key(row[:n].tobytes()) for row, n in zip(input_ids, lengths)],
        dtype=np.uint64,
    )


class _Pack(CountingDoFn):
    def __init__(self, *, max_seq_length: int, vocab):
        super().__init__()
        self._max_seq_length = max_seq_length
        self._ids = dict(cls_id=vocab.cls_id, sep_id=vocab.sep_id, pad_id=vocab.pad_id)


class PackDocuments(_Pack):
    """TokenizedBatch -> SequenceBatch, ``--packing document``."""

    def process(self, batch):
        input_ids, lengths, doc, starts = pack_documents(
            batch.token_ids, max_seq_length=self._max_seq_length, word_starts=batch.word_starts, **self._ids
        )
        self.count("documents_over_several_sequences", int((np.bincount(doc) > 1).sum()))
        yield SequenceBatch(input_ids, lengths, sequence_keys(input_ids, lengths), batch.splits[doc], starts)


class PackConcat(_Pack):
    """((split, group), [(document_key, token_ids, starts)]) -> SequenceBatch, ``--packing concat``.

    Documents of a group are joined in key order, so the result does not
    depend on the order the runner delivers them in.
    """

    def process(self, element):
        (split, _), documents = element
        documents = sorted(documents, key=lambda d: (d[0], d[1].tobytes()))
        has_starts = documents[0][2] is not None
        input_ids, lengths, starts = pack_concat(
            [d[1] for d in documents],
            max_seq_length=self._max_seq_length,
            word_starts=[d[2] for d in documents] if has_starts else None,
            **self._ids,
        )
        splits = np.full(len(lengths), split, dtype=np.int8)
        yield SequenceBatch(input_ids, lengths, sequence_keys(input_ids, lengths), splits, starts)
