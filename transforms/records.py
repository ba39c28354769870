"""The compact form masked sequences take between masking and writing: Arrow rows without padding.

Between the two steps records are grouped by shard, through a shuffle or
through run files, so they travel as Arrow record batches: a sequence's ids
as a variable-length list (no padding), 16 bits wide whenever the
vocabulary and the sequence length allow (they almost always do). Arrow
sorts, slices, concatenates and serializes them in C++; the writer turns a
slice of a shard back into a padded batch.
"""

import dataclasses

import numpy as np
import pyarrow as pa


@dataclasses.dataclass
class MaskedBatch:
    """Masked sequences in the BERT layout; padding of the masked_lm_* is 0."""

    input_ids: np.ndarray  # int32 [N, L], after replacement
    lengths: np.ndarray  # int32 [N]
    masked_lm_positions: np.ndarray  # int32 [N, P], ascending, then 0
    masked_lm_ids: np.ndarray  # int32 [N, P]: the original ids
    num_predictions: np.ndarray  # int32 [N]
    # Sentence pairs only (``pairs``): where segment B starts, and the pair's label.
    segment_starts: np.ndarray | None = None  # int32 [N]
    next_sentence_labels: np.ndarray | None = None  # int8 [N]
    b_type: int = 1  # segment B's type id in the tokenizer's pair frame (BERT's 1, RoBERTa's 0)
    # Where each row's pieces (framed documents or parts of one; several to a row only with best-fit
    # packing) lie, as packing placed them: pieces per row, then every piece's length, frame included, in
    # row order; a row's pieces tile its real tokens. Position ids restart at each. None: one piece a row.
    pieces: np.ndarray | None = None  # int32 [N]
    piece_lengths: np.ndarray | None = None  # int32 [sum(pieces)]
    # A build of sources: each piece's source, an index into the manifest's sources, in piece order.
    piece_sources: np.ndarray | None = None  # uint8 [sum(pieces)]
    # Span masking: each span's words and tokens, int [S, 2] (what the manifest's histogram counts).
    spans: np.ndarray | None = None
    # Unmasked output (``--masking none``): where words start, bool [N, L]; the masked_lm_* are then
    # empty ([N, 0]) and the trainer masks on the fly.
    word_starts: np.ndarray | None = None

    def piece_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """(pieces [N], piece_lengths [P]) of the rows (see the fields)."""
        if self.piece_lengths is None:
            return one_piece_each(self.lengths)
        return self.pieces, self.piece_lengths

    @property
    def position_ids(self) -> np.ndarray:
        return piece_position_ids(self.piece_layout()[1], self.lengths, self.input_ids.shape[1])

    @property
    def unmasked(self) -> bool:
        return self.word_starts is not None

    @property
    def masked_lm_weights(self) -> np.ndarray:
        width = self.masked_lm_positions.shape[1]
        return (np.arange(width)[None, :] < self.num_predictions[:, None]).astype(np.float32)


def unmasked(input_ids: np.ndarray, lengths: np.ndarray, word_starts: np.ndarray) -> MaskedBatch:
    """Sequences as ``--masking none`` writes them: no predictions, the word starts kept."""
    n = len(lengths)
    return MaskedBatch(
        input_ids=input_ids.astype(np.int32, copy=False),
        lengths=np.asarray(lengths, dtype=np.int32),
        masked_lm_positions=np.zeros((n, 0), dtype=np.int32),
        masked_lm_ids=np.zeros((n, 0), dtype=np.int32),
        num_predictions=np.zeros(n, dtype=np.int32),
        word_starts=word_starts,
    )


LABEL_IGNORE = -100  # Hugging Face's ignore index for positions not predicted


def one_piece_each(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pieces, piece_lengths) of rows that are one piece each (all packings but best fit)."""
    lengths = np.asarray(lengths, dtype=np.int32)
    return np.ones(len(lengths), dtype=np.int32), lengths.copy()


def piece_rows(pieces: np.ndarray, piece_lengths: np.ndarray, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """(pieces, piece_lengths) of a slice of rows (a step of one)."""
    start, stop, _ = rows.indices(len(pieces))
    first = int(pieces[:start].sum())
    return pieces[rows], piece_lengths[first : first + int(pieces[start:stop].sum())]


def piece_position_ids(piece_lengths: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """int32 [N, width]: 0 at each piece's first token, counting up inside the piece, 0 on padding
    (transformers' ``DataCollatorWithFlattening`` convention); ``piece_lengths`` tile the rows' real
    tokens, in order."""
    piece_lengths = np.asarray(piece_lengths, dtype=np.int64)
    firsts = np.cumsum(piece_lengths) - piece_lengths  # each piece's first token, counted over all rows
    within = np.arange(int(piece_lengths.sum())) - np.repeat(firsts, piece_lengths)
    out = np.zeros((len(lengths), width), dtype=np.int32)
    out[np.arange(width)[None, :] < lengths[:, None]] = within  # row-major: the pieces one after another
    return out


def piece_starts(input_ids: np.ndarray, lengths: np.ndarray, piece_start_id: int | None) -> np.ndarray:
    """bool [N, L]: where a piece starts as the tokens alone tell it (what ``verify`` checks the written
    position ids and piece counts against): position 0, and each later real position holding the frame's
    first token (text never holds it: packing put it there)."""
    cols = np.arange(input_ids.shape[1])[None, :]
    starts = cols == 0
    if piece_start_id is not None:
        starts = starts | ((input_ids == piece_start_id) & (cols < lengths[:, None]))
    return np.broadcast_to(starts, input_ids.shape) & (lengths[:, None] > 0)


def position_ids(input_ids: np.ndarray, lengths: np.ndarray, piece_start_id: int | None) -> np.ndarray:
    """int32 [N, L]: the position ids of ``piece_starts``' pieces, as ``piece_position_ids`` numbers them."""
    width = input_ids.shape[1]
    cols = np.arange(width, dtype=np.int32)[None, :]
    starts = piece_starts(input_ids, lengths, piece_start_id)
    last_start = np.maximum.accumulate(np.where(starts, cols, 0), axis=1)
    return np.where(cols < lengths[:, None], cols - last_start, 0).astype(np.int32)


def labels(batch: MaskedBatch) -> np.ndarray:
    """int32 [N, L]: each predicted position's original id, LABEL_IGNORE elsewhere (Hugging Face's labels)."""
    out = np.full(batch.input_ids.shape, LABEL_IGNORE, dtype=np.int32)
    rows = np.repeat(np.arange(len(batch.lengths)), batch.num_predictions)
    valid = batch.masked_lm_weights > 0
    out[rows, batch.masked_lm_positions[valid]] = batch.masked_lm_ids[valid]
    return out


# Rows are sorted by (split, key) within a shard; "key" is the record key.
SORT_COLUMNS = ("split", "key")


def id_type(vocab_size: int, max_seq_length: int) -> pa.DataType:
    """16 bits for ids and positions whenever they fit, else 32."""
    return pa.uint16() if max(vocab_size, max_seq_length) <= 1 << 16 else pa.int32()


def schema(ids: pa.DataType, pairs: bool = False, unmasked: bool = False, sources: bool = False) -> pa.Schema:
    fields = [
        ("split", pa.uint8()),
        ("key", pa.uint64()),
        ("input_ids", pa.list_(ids)),
        ("piece_lengths", pa.list_(ids)),
    ]
    if sources:
        fields.append(("source_ids", pa.list_(pa.uint8())))
    if unmasked:
        fields.append(("word_starts", pa.list_(pa.bool_())))
    else:
        fields += [("masked_lm_positions", pa.list_(ids)), ("masked_lm_ids", pa.list_(ids))]
    if pairs:
        fields += [("segment_start", ids), ("next_sentence_label", pa.uint8())]
    return pa.schema(fields)


def _ragged(matrix: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """The first ``lengths[i]`` values of each row, as a list array (boolean indexing reads row-major)."""
    present = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = matrix[present].astype(np.dtype(str(value_type)), copy=False)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def _lists(counts: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """Consecutive runs of ``values``, ``counts[i]`` long, as a list array."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = values.astype(np.dtype(str(value_type)), copy=False)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def to_rows(splits: np.ndarray, keys: np.ndarray, batch: MaskedBatch, ids: pa.DataType) -> pa.RecordBatch:
    """Records as Arrow rows: split, record key, the unpadded masked sequence, its pieces' lengths (and a
    pair's segments)."""
    columns = [
        pa.array(splits, pa.uint8()),
        pa.array(keys, pa.uint64()),
        _ragged(batch.input_ids, batch.lengths, ids),
        _lists(*batch.piece_layout(), ids),
    ]
    sources = batch.piece_sources is not None
    if sources:
        columns.append(_lists(batch.piece_layout()[0], batch.piece_sources, pa.uint8()))
    if batch.unmasked:
        columns.append(_ragged(batch.word_starts, batch.lengths, pa.bool_()))
    else:
        columns += [
            _ragged(batch.masked_lm_positions, batch.num_predictions, ids),
            _ragged(batch.masked_lm_ids, batch.num_predictions, ids),
        ]
    pairs = batch.segment_starts is not None
    if pairs:
        columns += [
            pa.array(batch.segment_starts.astype(np.dtype(str(ids))), ids),
            pa.array(batch.next_sentence_labels.astype(np.uint8), pa.uint8()),
        ]
    return pa.RecordBatch.from_arrays(columns, schema=schema(ids, pairs, batch.unmasked, sources))


def list_parts(column) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of a list column, chunked or not."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return values, np.diff(offsets).astype(np.int32)


def _padded(values: np.ndarray, lengths: np.ndarray, width: int, fill: int) -> np.ndarray:
    out = np.full((len(lengths), width), fill, dtype=np.int32)
    out[np.arange(width)[None, :] < lengths[:, None]] = values
    return out


def to_masked(
    rows,
    *,
    max_seq_length: int,
    max_predictions_per_seq: int,
    pad_id: int,
    b_type: int = 1,
) -> MaskedBatch:
    """The padded batch of Arrow rows (a record batch or a table), in the same order."""
    ids, lengths = list_parts(rows.column("input_ids"))
    piece_lengths, pieces = list_parts(rows.column("piece_lengths"))
    pairs = "segment_start" in rows.schema.names
    if "word_starts" in rows.schema.names:  # unmasked
        starts, _ = list_parts(rows.column("word_starts"))
        batch = unmasked(
            _padded(ids, lengths, max_seq_length, pad_id),
            lengths,
            _padded(starts, lengths, max_seq_length, 0) > 0,
        )
    else:
        positions, counts = list_parts(rows.column("masked_lm_positions"))
        original, _ = list_parts(rows.column("masked_lm_ids"))
        batch = MaskedBatch(
            input_ids=_padded(ids, lengths, max_seq_length, pad_id),
            lengths=lengths,
            masked_lm_positions=_padded(positions, counts, max_predictions_per_seq, 0),
            masked_lm_ids=_padded(original, counts, max_predictions_per_seq, 0),
            num_predictions=counts,
        )
    return dataclasses.replace(
        batch,
        segment_starts=_scalars(rows, "segment_start", np.int32) if pairs else None,
        next_sentence_labels=_scalars(rows, "next_sentence_label", np.int8) if pairs else None,
        b_type=b_type,
        pieces=pieces,
        piece_lengths=piece_lengths.astype(np.int32),
        piece_sources=list_parts(rows.column("source_ids"))[0] if "source_ids" in rows.schema.names else None,
    )


def _scalars(rows, name: str, dtype) -> np.ndarray:
    column = rows.column(name)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.to_numpy(zero_copy_only=False).astype(dtype)


def content(rows, indices: np.ndarray) -> list[bytes]:
    """Each given row's sequence, predictions and pieces as bytes: the order of records with equal keys."""
    taken = rows.take(indices)
    names = (
        ("input_ids", "word_starts", "piece_lengths")
        if "word_starts" in taken.schema.names
        else ("input_ids", "masked_lm_positions", "masked_lm_ids", "piece_lengths")
    )
    if "source_ids" in taken.schema.names:
        names += ("source_ids",)
    parts = [list_parts(taken.column(c)) for c in names]
    columns = []
    for values, lengths in parts:
        ends = np.cumsum(lengths).tolist()
        data = values.astype("<i4").tobytes()
        columns.append([data[4 * a : 4 * b] for a, b in zip([0, *ends[:-1]], ends)])
    header = [parts[0][1], parts[1][1]]
    if "segment_start" in taken.schema.names:  # a pair's segments and label are part of its content
        header += [
            _scalars(taken, "segment_start", np.int32),
            _scalars(taken, "next_sentence_label", np.int32),
        ]
    header = np.stack(header, axis=1).astype("<i4")
    return [h.tobytes() + b"".join(row) for h, *row in zip(header, *columns)]
