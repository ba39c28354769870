"""The packing steps on Beam: token ids to fixed-length sequences, by document or concatenated."""

import numpy as np

from mlmprep.transforms.beam.counting import CountingDoFn
from mlmprep.transforms.beam.groups import Sorting
from mlmprep.transforms.pack import (
    CONCAT_SLICE_DOCS,
    ConcatPacker,
    SequenceBatch,
    concat_groups,
    document_content,
    pack_documents,
    ragged_rows,
    sequence_keys,
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


CONCAT_ORDER = Sorting(columns=("split", "group", "doc_key"), group=concat_groups, tiebreak=document_content)


class PackConcat(_Pack):
    """(split << 32 | group, its documents from SortedGroups) -> SequenceBatch, ``--packing concat``.

    Documents of a group are joined in key order, so the result does not
    depend on the order the runner delivers them in; they are packed a slice
    at a time, so what is held does not grow with the group.
    """

    def __init__(self, *, max_seq_length: int, vocab, word_starts: bool):
        super().__init__(max_seq_length=max_seq_length, vocab=vocab)
        self._word_starts = word_starts

    def process(self, element):
        group, documents = element
        split = group >> 32
        packer = ConcatPacker(max_seq_length=self._max_seq_length, **self._ids)
        for rows in documents.slices(CONCAT_SLICE_DOCS):
            ids = [i.astype(np.int32) for i in ragged_rows(rows.column("ids"))]
            starts = ragged_rows(rows.column("starts")) if self._word_starts else None
            yield from self._sequences(split, *packer.add(ids, starts))
        yield from self._sequences(split, *packer.finish(self._word_starts))

    def _sequences(self, split, input_ids, lengths, starts):
        if len(lengths):
            splits = np.full(len(lengths), split, dtype=np.int8)
            yield SequenceBatch(input_ids, lengths, sequence_keys(input_ids, lengths), splits, starts)
