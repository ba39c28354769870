"""The packing steps on Beam: token ids to fixed-length sequences, by document, concatenated, or best fit."""

import apache_beam as beam
import numpy as np

from mlmprep.transforms import records
from mlmprep.transforms.beam.counting import CountingDoFn
from mlmprep.transforms.beam.groups import Sorting
from mlmprep.transforms.pack import (
    BEST_FIT_WINDOW,
    CONCAT_SLICE_DOCS,
    BestFitPacker,
    ConcatPacker,
    Packed,
    SequenceBatch,
    concat_groups,
    document_content,
    pack_documents,
    ragged_rows,
    sequence_keys,
)
from mlmprep.transforms.pairs import WITHOUT_OTHER_DOCUMENT, Documents, PairConfig, make_pairs
from mlmprep.transforms.phases import GroupPacker
from mlmprep.transforms.tokenize import SPLITS


class _Pack(CountingDoFn):
    def __init__(self, *, max_seq_length: int, vocab):
        super().__init__()
        self._max_seq_length = max_seq_length
        self._vocab = vocab
        self._ids = dict(frame=vocab.frame, pad_id=vocab.pad_id)


class PackDocuments(_Pack):
    """TokenizedBatch -> SequenceBatch, ``--packing document``."""

    def process(self, batch):
        input_ids, lengths, doc, starts = pack_documents(
            batch.token_ids, max_seq_length=self._max_seq_length, word_starts=batch.word_starts, **self._ids
        )
        self.count("documents_over_several_sequences", int((np.bincount(doc) > 1).sum()))
        pieces, piece_lengths = records.one_piece_each(lengths)  # one frame a sequence
        yield SequenceBatch(
            input_ids=input_ids,
            lengths=lengths,
            keys=sequence_keys(input_ids, lengths),
            splits=batch.splits[doc],
            pieces=pieces,
            piece_lengths=piece_lengths,
            word_starts=starts,
        )


# Concat packing's and sentence pairs' documents, grouped and in key order.
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

    def _packer(self):
        return ConcatPacker(max_seq_length=self._max_seq_length, joiner_id=self._vocab.joiner_id, **self._ids)

    def process(self, element):
        group, documents = element
        split = group >> 32
        packer = self._packer()
        for rows in documents.slices(CONCAT_SLICE_DOCS):
            ids = [i.astype(np.int32) for i in ragged_rows(rows.column("ids"))]
            starts = ragged_rows(rows.column("starts")) if self._word_starts else None
            yield from self._sequences(split, packer.add(ids, starts))
        yield from self._sequences(split, packer.finish(self._word_starts))

    def _sequences(self, split, packed: Packed):
        if len(packed.lengths):
            yield SequenceBatch(
                input_ids=packed.input_ids,
                lengths=packed.lengths,
                keys=sequence_keys(packed.input_ids, packed.lengths),
                splits=np.full(len(packed.lengths), split, dtype=np.int8),
                pieces=packed.pieces,
                piece_lengths=packed.piece_lengths,
                word_starts=packed.word_starts,
            )


class PackBestFit(PackConcat):
    """(split << 32 | group, its documents from SortedGroups) -> SequenceBatch, ``--packing best_fit``:
    each document (or piece of a long one) framed on its own, several to a sequence by best fit over a
    window of pieces (``BestFitPacker``), in key order as concat packing takes them."""

    def __init__(self, *, max_seq_length: int, vocab, word_starts: bool, window: int = BEST_FIT_WINDOW):
        super().__init__(max_seq_length=max_seq_length, vocab=vocab, word_starts=word_starts)
        self._window = window

    def _packer(self):
        return BestFitPacker(max_seq_length=self._max_seq_length, window=self._window, **self._ids)


class PackPairs(_Pack):
    """(split << 32 | group, its documents from SortedGroups) -> SequenceBatch of sentence pairs.

    Documents come in key order a slice at a time; the other document of an
    IsRandom pair is drawn from this slice or the one before, so two slices
    are held and the choice depends on content alone, never on the runner.
    """

    def __init__(self, *, max_seq_length: int, vocab, config: PairConfig, word_starts: bool):
        super().__init__(max_seq_length=max_seq_length, vocab=vocab)
        self._config = config
        self._word_starts = word_starts
        self._continues = None

    def setup(self):
        self._continues = self._vocab.continuation_lookup()

    def process(self, element):
        group, documents = element
        split, previous = group >> 32, None
        for rows in documents.slices(CONCAT_SLICE_DOCS):
            current = Documents(
                token_ids=[i.astype(np.int32) for i in ragged_rows(rows.column("ids"))],
                sentence_ends=ragged_rows(rows.column("sentence_ends")),
                keys=rows.column("doc_key").to_numpy(),
                word_starts=ragged_rows(rows.column("starts")) if self._word_starts else None,
            )
            pool = current if previous is None else Documents.join(previous, current)
            pairs = make_pairs(
                pool, len(pool) - len(current), self._config, **self._ids, continues=self._continues
            )
            self.count(f"{WITHOUT_OTHER_DOCUMENT}.{SPLITS[split]}", pairs.without_other_document)
            keys = sequence_keys(pairs.input_ids, pairs.lengths, pairs.segment_starts, pairs.labels)
            splits = np.full(len(pairs.lengths), split, dtype=np.int8)
            yield SequenceBatch(
                input_ids=pairs.input_ids,
                lengths=pairs.lengths,
                keys=keys,
                splits=splits,
                pieces=pairs.pieces,
                piece_lengths=pairs.piece_lengths,
                word_starts=pairs.word_starts,
                segment_starts=pairs.segment_starts,
                pair_labels=pairs.labels,
            )
            previous = current


class PackPhases(CountingDoFn):
    """(split << 32 | group, its documents from SortedGroups) -> SequenceBatch of every phase of a build,
    on the output tagged with the phase's index (``phases.GroupPacker``); ``plans``: the side input of each
    phase's ``mixture.plan``."""

    def __init__(self, *, phases, vocab):
        super().__init__()
        self._phases = phases
        self._vocab = vocab
        self._word_starts = any(phase.word_starts for phase in phases)
        self._pairs = any(phase.pairs is not None for phase in phases)
        self._continues = None

    def setup(self):
        if self._pairs:
            self._continues = self._vocab.continuation_lookup()

    def process(self, element, plans):
        group, documents = element
        split, group = group >> 32, group & 0xFFFFFFFF
        packer = GroupPacker(self._phases, plans, self._vocab, group, split, continues=self._continues)
        for rows in documents.slices(CONCAT_SLICE_DOCS):
            ids = [i.astype(np.int32) for i in ragged_rows(rows.column("ids"))]
            starts = ragged_rows(rows.column("starts")) if self._word_starts else None
            sources = rows.column("source").to_numpy()
            pairs = {}
            if self._pairs:
                pairs["doc_keys"] = rows.column("doc_key").to_numpy()
                pairs["sentence_ends"] = ragged_rows(rows.column("sentence_ends"))
            for phase, batch in packer.add(ids, starts, sources, **pairs):
                yield beam.pvalue.TaggedOutput(str(phase), batch)
        for phase, batch in packer.finish():
            yield beam.pvalue.TaggedOutput(str(phase), batch)
        for name, n in packer.counts.items():
            self.count(name, n)
