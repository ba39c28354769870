"""Every phase's sequences from one group of the build's documents: selected, repeated, packed.

A build tokenizes its documents once; each group of them (in key order, see
``mixture``) is then made into the sequences of every phase here. For each
phase a ``mixture.Selector`` says how many copies of each document it takes;
copy ``k`` of a document goes to the phase's packer of epoch ``k``, so the
copies of a document are packed apart, among other documents, and each
epoch's sequences get keys of their own (masked anew, shuffled apart).
Concat packing joins one source's documents only (a packer per source), and
sentence pairs are made of one source's documents (an IsRandom segment B is
drawn from the same source); best-fit and document packing keep each
piece's source beside it.
"""

import collections
import dataclasses

import numpy as np

from mlmprep.transforms import keys, mixture, profile, records
from mlmprep.transforms.pack import (
    BestFitPacker,
    ConcatPacker,
    Packed,
    SequenceBatch,
    pack_documents,
    sequence_keys,
)
from mlmprep.transforms.pairs import WITHOUT_OTHER_DOCUMENT, Documents, PairConfig, make_pairs
from mlmprep.transforms.tokenize import SPLITS


@dataclasses.dataclass(frozen=True)
class PhaseShape:
    """How one phase makes its sequences."""

    packing: str  # pack.PACKINGS
    max_seq_length: int
    filter: mixture.PhaseFilter
    word_starts: bool  # its sequences carry the documents' word starts
    pairs: PairConfig | None = None  # sentence pairs; None: single segments


def counts_prefix(phase: int) -> str:
    """The prefix of a phase's own counts among the build's (``phase.0.documents.train``)."""
    return f"phase.{phase}."


def _epoch_keys(sequence_keys_: np.ndarray, epoch: int) -> np.ndarray:
    """Keys of an epoch's sequences: a repeated document's sequences are masked and placed anew."""
    if not epoch:
        return sequence_keys_
    return keys.mix64(sequence_keys_ ^ keys.mix64(np.uint64(epoch))) >> np.uint64(1)


def _cut_ends(ends: np.ndarray, kept: int) -> np.ndarray:
    """A document's sentence ends once it is cut to its first ``kept`` tokens."""
    return np.append(ends[ends < kept], kept).astype(np.int32)


class GroupPacker:
    """One group's documents, slice after slice in key order, into every phase's SequenceBatches."""

    def __init__(self, phases: list[PhaseShape], plans, vocab, group: int, split: int, continues=None):
        self._phases, self._vocab, self._split = phases, vocab, split
        self._selectors = [mixture.Selector(plans[p], ph.filter, group, split) for p, ph in enumerate(phases)]
        self._packers = {}  # (phase, epoch, stream) -> packer
        self._previous = {}  # (phase, epoch, source) -> its slice before, which pairs draw from too
        self._continues = continues  # sentence pairs: the tokens that continue a word (pairs.make_pairs)
        self.counts = collections.Counter()

    def add(
        self, token_ids: list[np.ndarray], word_starts, sources: np.ndarray, doc_keys=None, sentence_ends=None
    ):
        """(phase, SequenceBatch) of the sequences these documents close; ``doc_keys`` and
        ``sentence_ends`` where a phase makes sentence pairs."""
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
        for p, phase in enumerate(self._phases):
            copies, kept = self._selectors[p].select(sources, lengths)
            self._count(p, copies, kept, lengths, sources)
            for epoch in range(int(copies.max(initial=0))):
                at = np.flatnonzero(copies > epoch)
                cut = copies[at] == epoch + 1  # the last copy: a cut document's is shorter
                ids = [token_ids[i][: kept[i]] if c else token_ids[i] for i, c in zip(at.tolist(), cut)]
                starts = None
                if phase.word_starts:
                    starts = [
                        word_starts[i][: kept[i]] if c else word_starts[i] for i, c in zip(at.tolist(), cut)
                    ]
                if phase.pairs is None:
                    yield from self._pack(p, epoch, ids, starts, sources[at])
                    continue
                ends = [
                    _cut_ends(sentence_ends[i], kept[i]) if c and kept[i] < lengths[i] else sentence_ends[i]
                    for i, c in zip(at.tolist(), cut)
                ]
                yield from self._pairs(p, epoch, ids, starts, ends, doc_keys[at], sources[at])

    def finish(self):
        """(phase, SequenceBatch) of every sequence still open, packer by packer in a fixed order."""
        for (p, epoch, stream), packer in sorted(self._packers.items(), key=lambda item: item[0]):
            packed = packer.finish(self._phases[p].word_starts)
            yield from self._batch(p, epoch, packed, stream)
        self._packers = {}

    def _count(self, p, copies, kept, lengths, sources):
        prefix, split = counts_prefix(p), self._split
        taken = np.repeat(np.arange(len(copies)), copies)
        if not taken.size:
            return
        last = np.cumsum(copies)[copies > 0] - 1  # each document's last copy among those taken
        tokens = lengths[taken]
        tokens[last] = kept[copies > 0]
        self.counts.update(mixture.achieved_counts(prefix + "sources.", split, sources[taken], tokens))
        self.counts[f"{prefix}documents.{SPLITS[split]}"] += int(taken.size)
        for bucket, n in enumerate(profile.document_buckets(tokens).tolist()):
            if n:
                self.counts[f"{prefix}{profile.DOCUMENT_TOKENS}.{SPLITS[split]}.{bucket}"] += n

    def _packer(self, p: int, epoch: int, stream: int):
        key = (p, epoch, stream)
        if key not in self._packers:
            phase, v = self._phases[p], self._vocab
            shape = dict(max_seq_length=phase.max_seq_length, frame=v.frame, pad_id=v.pad_id)
            if phase.packing == "concat":
                self._packers[key] = ConcatPacker(joiner_id=v.joiner_id, **shape)
            else:
                self._packers[key] = BestFitPacker(**shape)
        return self._packers[key]

    def _pack(self, p: int, epoch: int, ids, starts, sources: np.ndarray):
        phase, v = self._phases[p], self._vocab
        if phase.packing == "document":
            input_ids, lengths, doc, packed_starts = pack_documents(
                ids, max_seq_length=phase.max_seq_length, frame=v.frame, pad_id=v.pad_id, word_starts=starts
            )
            pieces, piece_lengths = records.one_piece_each(lengths)
            packed = Packed(
                input_ids, lengths, packed_starts, pieces, piece_lengths, sources[doc].astype(np.uint8)
            )
            yield from self._batch(p, epoch, packed, None)
        elif phase.packing == "concat":  # one source's documents to a sequence
            for stream in np.unique(sources).tolist():
                mine = np.flatnonzero(sources == stream).tolist()
                packed = self._packer(p, epoch, stream).add(
                    [ids[i] for i in mine], None if starts is None else [starts[i] for i in mine]
                )
                yield from self._batch(p, epoch, packed, stream)
        else:
            packed = self._packer(p, epoch, 0).add(ids, starts, sources)
            yield from self._batch(p, epoch, packed, None)

    def _pairs(self, p: int, epoch: int, ids, starts, ends, doc_keys: np.ndarray, sources: np.ndarray):
        """Sentence pairs of one source's documents at a time, with that source's slice before for IsRandom
        segments (as ``beam.pack.PackPairs``); the keys of an epoch's documents are its own, so that it
        pairs them anew."""
        phase, v, split = self._phases[p], self._vocab, self._split
        doc_keys = _epoch_keys(np.asarray(doc_keys, dtype=np.uint64), epoch)
        for stream in np.unique(sources).tolist():
            mine = np.flatnonzero(sources == stream).tolist()
            current = Documents(
                token_ids=[ids[i] for i in mine],
                sentence_ends=[ends[i] for i in mine],
                keys=doc_keys[mine],
                word_starts=None if starts is None else [starts[i] for i in mine],
            )
            previous = self._previous.get((p, epoch, stream))
            pool = current if previous is None else Documents.join(previous, current)
            first = len(pool) - len(current)
            pairs = make_pairs(
                pool, first, phase.pairs, frame=v.frame, pad_id=v.pad_id, continues=self._continues
            )
            self._previous[(p, epoch, stream)] = current
            without = f"{counts_prefix(p)}{WITHOUT_OTHER_DOCUMENT}.{SPLITS[split]}"
            self.counts[without] += pairs.without_other_document
            if not len(pairs.lengths):
                continue
            pair_keys = sequence_keys(pairs.input_ids, pairs.lengths, pairs.segment_starts, pairs.labels)
            yield (
                p,
                SequenceBatch(
                    input_ids=pairs.input_ids,
                    lengths=pairs.lengths,
                    keys=_epoch_keys(pair_keys, epoch),
                    splits=np.full(len(pairs.lengths), split, dtype=np.int8),
                    pieces=pairs.pieces,
                    piece_lengths=pairs.piece_lengths,
                    word_starts=pairs.word_starts,
                    segment_starts=pairs.segment_starts,
                    pair_labels=pairs.labels,
                    piece_sources=np.full(len(pairs.lengths), stream, dtype=np.uint8),
                ),
            )

    def _batch(self, p: int, epoch: int, packed: Packed, stream: int | None):
        if not len(packed.lengths):
            return
        piece_sources = packed.piece_sources
        if stream is not None and self._phases[p].packing == "concat":
            piece_sources = np.full(len(packed.piece_lengths), stream, dtype=np.uint8)
        yield (
            p,
            SequenceBatch(
                input_ids=packed.input_ids,
                lengths=packed.lengths,
                keys=_epoch_keys(sequence_keys(packed.input_ids, packed.lengths), epoch),
                splits=np.full(len(packed.lengths), self._split, dtype=np.int8),
                pieces=packed.pieces,
                piece_lengths=packed.piece_lengths,
                word_starts=packed.word_starts,
                piece_sources=piece_sources,
            ),
        )
