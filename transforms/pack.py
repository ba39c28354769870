"""Packing token ids into fixed-length sequences in the tokenizer's frame (``[CLS] ... [SEP] [PAD]...``,
``<s> ... </s> <pad>...``).

No token of a kept document is ever dropped: a document longer than one
sequence continues in the next one. Word-start flags (for whole-word
masking) are packed alongside the ids, position for position.
"""

import bisect
import dataclasses
import math
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from mlmprep.transforms import keys, mixture, records
from mlmprep.transforms.frames import Frame

PACKINGS = ("document", "concat", "best_fit")
# Best-fit packing places this many pieces at a time, longest first (bench/packing.py measured the
# window: see docs/performance.md).
BEST_FIT_WINDOW = 1024


@dataclasses.dataclass
class SequenceBatch:
    """Unmasked sequences; ``keys`` are content keys of the token ids."""

    input_ids: np.ndarray  # int32 [N, max_seq_length]
    lengths: np.ndarray  # int32 [N]: real tokens, the frame's included
    keys: np.ndarray  # uint64 [N]
    splits: np.ndarray  # int8 [N]
    # Where packing placed each row's pieces: their count, and every piece's length in row order
    # (``records.MaskedBatch``'s fields of the same names, which take them to the writer).
    pieces: np.ndarray  # int32 [N]
    piece_lengths: np.ndarray  # int32 [sum(pieces)]
    word_starts: np.ndarray | None = None  # bool [N, max_seq_length]
    piece_sources: np.ndarray | None = None  # uint8 [sum(pieces)]: each piece's source (a build of sources)
    # Sentence pairs only: where segment B starts, and the pair's label (see ``pairs``).
    segment_starts: np.ndarray | None = None  # int32 [N]
    pair_labels: np.ndarray | None = None  # int8 [N]

    @property
    def nbytes(self) -> int:
        words = 0 if self.word_starts is None else self.word_starts.nbytes
        return self.input_ids.nbytes + self.piece_lengths.nbytes + words

    def pieces_of(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """(pieces, piece_lengths) of a slice of the rows."""
        return records.piece_rows(self.pieces, self.piece_lengths, rows)

    def piece_sources_of(self, rows: slice) -> np.ndarray | None:
        """``piece_sources`` of a slice of the rows."""
        if self.piece_sources is None:
            return None
        return records.piece_rows(self.pieces, self.piece_sources, rows)[1]


class Packed(NamedTuple):
    """Rows a packer closed: ``input_ids`` int32 [N, L], ``lengths`` int32 [N], ``word_starts`` bool [N, L]
    or None, and where their pieces lie (``pieces`` int32 [N], ``piece_lengths`` int32 [P]; see
    ``SequenceBatch``)."""

    input_ids: np.ndarray
    lengths: np.ndarray
    word_starts: np.ndarray | None
    pieces: np.ndarray
    piece_lengths: np.ndarray
    piece_sources: np.ndarray | None = None  # each piece's source, where the documents said theirs


def frame_rows(input_ids: np.ndarray, lengths: np.ndarray, frame: Frame) -> None:
    """Writes the single frame's specials around each row's body (the body starts after the prefix)."""
    prefix, suffix = frame.prefix, frame.suffix
    input_ids[:, : prefix.size] = prefix
    rows = np.arange(len(lengths))
    for k, token in enumerate(suffix):
        input_ids[rows, lengths - suffix.size + k] = token


def pack_documents(
    token_ids: list[np.ndarray],
    *,
    max_seq_length: int,
    frame: Frame,
    pad_id: int,
    word_starts: list[np.ndarray] | None = None,
):
    """One or more sequences per document; sequences never cross documents.

    Returns ``(input_ids [N, L], lengths [N], document_index [N], starts)``,
    ``starts`` the packed word starts (bool [N, L]) or None.
    """
    head = frame.prefix.size
    body = max_seq_length - frame.specials
    doc_lengths = np.array([ids.size for ids in token_ids], dtype=np.int64)
    per_doc = -(-doc_lengths // body)  # ceil; a document with no tokens has none
    num_sequences = int(per_doc.sum())
    input_ids = np.full((num_sequences, max_seq_length), pad_id, dtype=np.int32)
    starts = None if word_starts is None else np.zeros((num_sequences, max_seq_length), dtype=bool)
    document_index = np.repeat(np.arange(len(token_ids)), per_doc)
    if num_sequences == 0:
        return input_ids, np.zeros(0, np.int32), document_index, starts
    # With the sequences' bodies laid end to end, document d's tokens run on
    # from the start of its first sequence: one scatter of runs, then a reshape.
    last = np.cumsum(per_doc) - 1  # each document's last sequence
    shift = np.repeat((last - per_doc + 1) * body - (np.cumsum(doc_lengths) - doc_lengths), doc_lengths)
    place = np.arange(int(doc_lengths.sum())) + shift
    bodies = np.full(num_sequences * body, pad_id, dtype=np.int32)
    bodies[place] = np.concatenate(token_ids)
    input_ids[:, head : head + body] = bodies.reshape(num_sequences, body)
    if starts is not None:
        flags = np.zeros(num_sequences * body, dtype=bool)
        flags[place] = np.concatenate(word_starts)
        starts[:, head : head + body] = flags.reshape(num_sequences, body)
    has = per_doc > 0
    lengths = np.full(num_sequences, max_seq_length, dtype=np.int32)
    lengths[last[has]] = doc_lengths[has] - (per_doc[has] - 1) * body + frame.specials
    frame_rows(input_ids, lengths, frame)
    return input_ids, lengths, document_index, starts


class ConcatPacker:
    """Documents joined by the separator ([SEP], </s>), filling every sequence, fed a few documents at a time.

    Only the last sequence may be short (and one may end a token early where
    the joiner would have been its last body token): a joiner never opens or
    closes a sequence, whose own frame marks the boundary. A sequence not yet
    full when ``add`` returns is carried to the next call.
    """

    def __init__(self, *, max_seq_length: int, frame: Frame, joiner_id: int, pad_id: int):
        self._length = max_seq_length
        self._frame, self._joiner_id, self._pad_id = frame, joiner_id, pad_id
        self._current = []  # the open sequence's body: (ids, starts, start, end) slices; ids None: a joiner
        self._filled = 0

    def add(self, token_ids: list[np.ndarray], word_starts: list[np.ndarray] | None = None) -> Packed:
        """Packs more documents; returns the full sequences, one piece each (one frame)."""
        body = self._length - self._frame.specials
        bodies, current, filled = [], self._current, self._filled
        for i, ids in enumerate(token_ids):  # a loop over documents and their slices, not tokens
            starts = None if word_starts is None else word_starts[i]
            if filled:
                if filled + 1 >= body:  # no room for the joiner and one token
                    bodies.append(current)
                    current, filled = [], 0
                else:
                    current.append((None, None, 0, 1))
                    filled += 1
            start = 0
            while start < ids.size:
                take = min(body - filled, ids.size - start)
                current.append((ids, starts, start, start + take))
                filled += take
                start += take
                if filled == body:
                    bodies.append(current)
                    current, filled = [], 0
        self._current, self._filled = current, filled
        return self._rows(bodies, word_starts is not None)

    def finish(self, word_starts: bool = False) -> Packed:
        """The last sequence, if it holds anything."""
        bodies = [self._current] if self._filled else []
        self._current, self._filled = [], 0
        return self._rows(bodies, word_starts)

    def _rows(self, bodies, with_starts: bool):
        input_ids = np.full((len(bodies), self._length), self._pad_id, dtype=np.int32)
        starts = np.zeros(input_ids.shape, dtype=bool) if with_starts else None
        lengths = np.zeros(len(bodies), dtype=np.int32)
        for row, slices in enumerate(bodies):
            col = self._frame.prefix.size
            for ids, word_starts, start, end in slices:
                if ids is None:
                    input_ids[row, col] = self._joiner_id
                else:
                    input_ids[row, col : col + end - start] = ids[start:end]
                    if starts is not None:
                        starts[row, col : col + end - start] = word_starts[start:end]
                col += end - start
            lengths[row] = col + self._frame.suffix.size
        frame_rows(input_ids, lengths, self._frame)
        return Packed(input_ids, lengths, starts, *records.one_piece_each(lengths))


class BestFitPacker:
    """Pieces several to a sequence, each framed on its own, by best-fit decreasing over a bounded window.

    A piece is a document, or a slice of ``max_seq_length - frame.specials`` tokens of a longer one;
    framed (``[CLS] piece [SEP]``), it attends only to itself downstream (``position_ids`` restart at its
    first token). Pieces arrive in the group's key order and are placed ``window`` at a time, longest
    first, each into the open sequence with the least room that fits it (a new one where none does).
    Open sequences stay open across windows, so later short pieces fill their gaps; at most ``window``
    stay open (the fullest are closed first), and one with no room for the shortest possible piece is
    closed at once. Every choice is a function of the pieces and their order: the same input gives the
    same sequences on any runner. What is held is a window of pieces and the open sequences. The rows
    returned say where each of their pieces lies (``Packed``), for the position ids written.
    """

    def __init__(self, *, max_seq_length: int, frame: Frame, pad_id: int, window: int = BEST_FIT_WINDOW):
        self._length, self._frame, self._pad_id, self._window = max_seq_length, frame, pad_id, window
        self._body = max_seq_length - frame.specials
        self._pending = []  # (ids, starts) of pieces not placed yet
        self._open = []  # sorted [(room, serial)]: the open sequences by their room left
        self._contents = {}  # serial -> [(ids, starts, source), ...]
        self._serial = 0
        self._sources = False  # whether the pieces came with their sources

    def add(
        self, token_ids: list[np.ndarray], word_starts: list[np.ndarray] | None = None, sources=None
    ) -> Packed:
        """Packs more documents; returns the sequences closed, with where each of their pieces lies.
        ``sources``: each document's source, which its pieces keep (``Packed.piece_sources``)."""
        closed = []
        self._sources = self._sources or sources is not None
        for i, ids in enumerate(token_ids):  # a loop over documents and their pieces, not tokens
            starts = None if word_starts is None else word_starts[i]
            source = 0 if sources is None else int(sources[i])
            for start in range(0, ids.size, self._body):
                end = start + self._body
                # Copies: a piece may wait in an open sequence long after the batch it came in, whose
                # buffer a view would keep whole.
                piece_starts = None if starts is None else starts[start:end].copy()
                self._pending.append((ids[start:end].copy(), piece_starts, source))
            if len(self._pending) >= self._window:
                closed += self._place(self._pending)
                self._pending = []
        return self._rows(closed, word_starts is not None)

    def finish(self, word_starts: bool = False) -> Packed:
        """Every sequence still open, after the last pieces are placed."""
        closed = self._place(self._pending) if self._pending else []
        self._pending = []
        closed += [self._contents.pop(serial) for _, serial in self._open]
        self._open = []
        return self._rows(closed, word_starts)

    def _place(self, pieces) -> list:
        """Best-fit decreasing of ``pieces`` into the open sequences; returns the sequences it closes."""
        specials, closed = self._frame.specials, []
        order = sorted(range(len(pieces)), key=lambda k: -pieces[k][0].size)  # stable: ties keep arrival
        for k in order:
            size = pieces[k][0].size + specials
            at = bisect.bisect_left(self._open, (size, -1))
            if at < len(self._open):
                room, serial = self._open.pop(at)
            else:
                room, serial = self._length, self._serial
                self._serial += 1
                self._contents[serial] = []
            self._contents[serial].append(pieces[k])
            room -= size
            if room > specials:  # room for one more token at least
                bisect.insort(self._open, (room, serial))
            else:
                closed.append(self._contents.pop(serial))
        while len(self._open) > self._window:  # the fullest have least to gain from staying open
            _, serial = self._open.pop(0)
            closed.append(self._contents.pop(serial))
        return closed

    def _rows(self, sequences, with_starts: bool):
        prefix, suffix = self._frame.prefix, self._frame.suffix
        input_ids = np.full((len(sequences), self._length), self._pad_id, dtype=np.int32)
        starts = np.zeros(input_ids.shape, dtype=bool) if with_starts else None
        lengths = np.zeros(len(sequences), dtype=np.int32)
        counts = np.fromiter(map(len, sequences), dtype=np.int32, count=len(sequences))
        piece_lengths, piece_sources = [], []
        for row, pieces in enumerate(sequences):
            col = 0
            for ids, word_starts, source in pieces:
                body = col + prefix.size
                input_ids[row, col:body] = prefix
                input_ids[row, body : body + ids.size] = ids
                if starts is not None:
                    starts[row, body : body + ids.size] = word_starts
                col = body + ids.size
                input_ids[row, col : col + suffix.size] = suffix
                col += suffix.size
                piece_lengths.append(prefix.size + ids.size + suffix.size)
                piece_sources.append(source)
            lengths[row] = col
        if self._frame.first_id is None:
            # No token opens a piece, so readers of the shards (``verify``, ``records.piece_starts``) cannot
            # tell the pieces apart: such rows are written as one piece each, as they always were.
            return Packed(input_ids, lengths, starts, *records.one_piece_each(lengths))
        sources = np.array(piece_sources, dtype=np.uint8) if self._sources else None
        return Packed(input_ids, lengths, starts, counts, np.array(piece_lengths, dtype=np.int32), sources)


def pack_concat(
    token_ids: list[np.ndarray],
    *,
    max_seq_length: int,
    frame: Frame,
    joiner_id: int,
    pad_id: int,
    word_starts: list[np.ndarray] | None = None,
):
    """Documents joined by ``joiner_id`` in the given order, filling every sequence (see ConcatPacker).

    Returns ``(input_ids [N, L], lengths [N], starts)`` as ``pack_documents``.
    """
    packer = ConcatPacker(max_seq_length=max_seq_length, frame=frame, joiner_id=joiner_id, pad_id=pad_id)
    parts = [packer.add(token_ids, word_starts), packer.finish(word_starts is not None)]
    starts = None if word_starts is None else np.concatenate([p[2] for p in parts])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), starts


def sequence_keys(input_ids: np.ndarray, lengths: np.ndarray, segment_starts=None, labels=None) -> np.ndarray:
    """Content keys: a hash of each sequence's real token ids (int32, little-endian); a pair's segment
    start and label are hashed after its ids."""
    if segment_starts is not None:
        n = len(lengths)
        extended = np.concatenate([input_ids, np.zeros((n, 2), dtype=input_ids.dtype)], axis=1)
        extended[np.arange(n), lengths] = segment_starts
        extended[np.arange(n), lengths + 1] = labels
        return sequence_keys(extended, lengths + 2)
    real = np.arange(input_ids.shape[1])[None, :] < lengths[:, None]
    return keys.content_keys(input_ids[real].astype("<i4", copy=False).tobytes(), np.asarray(lengths) * 4)


# Concat packing joins documents within groups of about this much input text,
# in document key order: a group's documents are sorted together.
CONCAT_GROUP_BYTES = 64 << 20
CONCAT_SLICE_DOCS = 4096  # documents a group's packing takes at once


def concat_group_count(input_bytes: int) -> int:
    """How many groups concat packing joins documents in: one per CONCAT_GROUP_BYTES of input."""
    return max(1, math.ceil(input_bytes / CONCAT_GROUP_BYTES))


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def concat_rows(batch, groups: int, ids: pa.DataType, by_range: bool = False) -> pa.RecordBatch:
    """TokenizedBatch -> rows of (split, group, document key, ids, word starts[, sentence ends][, source])
    for SortedGroups: the documents concat packing joins, or sentence pairs are made of, in groups.

    Without whole-word masking every document's word starts are empty. ``by_range``: a build of sources,
    whose groups are key ranges (``mixture.range_groups``) and whose documents keep their source.
    """
    starts = batch.word_starts or [np.zeros(0, bool)] * len(batch.token_ids)
    group = mixture.range_groups(batch.keys, groups) if by_range else (batch.keys % np.uint64(groups))
    columns = [
        pa.array(batch.splits.astype(np.uint8)),
        pa.array(group.astype(np.uint32)),
        pa.array(batch.keys, pa.uint64()),
        _list_array(batch.token_ids, ids),
        _list_array(starts, pa.bool_()),
    ]
    names = ["split", "group", "doc_key", "ids", "starts"]
    if by_range:
        columns.append(pa.array(np.full(len(batch.token_ids), batch.source, np.uint8)))
        names.append("source")
    if batch.sentence_ends is not None:
        columns.append(_list_array(batch.sentence_ends, pa.int32()))
        names.append("sentence_ends")
    return pa.RecordBatch.from_arrays(columns, names=names)


def concat_groups(rows) -> np.ndarray:
    return (rows.column("split").to_numpy().astype(np.int64) << 32) | rows.column("group").to_numpy()


def ragged_rows(column) -> list[np.ndarray]:
    """A list column's rows as numpy arrays (views of one buffer)."""
    values, lengths = records.list_parts(column)
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []


def document_content(rows, indices: np.ndarray) -> list[tuple[bytes, bytes]]:
    """Documents with one key, ordered by their ids (as int32 bytes), as BERT's concat order always was."""
    names = [n for n in ("ids", "starts", "sentence_ends") if n in rows.schema.names]
    columns = [ragged_rows(rows.column(n)) for n in names]
    return [tuple(_as_bytes(c[i]) for c in columns) for i in indices.tolist()]


def _as_bytes(values: np.ndarray) -> bytes:
    """Ids and sentence ends as int32 bytes (whatever width they travelled in), word starts as they are."""
    return (values if values.dtype == bool else values.astype("<i4")).tobytes()
