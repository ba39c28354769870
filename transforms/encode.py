"""Encoding masked batches as TFRecord and Parquet shard bytes.

``tf.train.Example`` is encoded here by hand, vectorized over the batch: its
wire format is a fixed, documented protobuf layout of seven packed lists, and
writing it directly keeps TensorFlow (and generated protobuf code) off Beam
workers. The tests parse the result with TensorFlow itself.
"""

import functools
import hashlib
import struct
from typing import NamedTuple

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlmprep.transforms import pairs, records
from mlmprep.transforms.records import MaskedBatch

# Feature name -> is_float, in the order written (sorted, as TensorFlow does).
TFRECORD_FEATURES = (
    ("input_ids", False),
    ("input_mask", False),
    ("masked_lm_ids", False),
    ("masked_lm_positions", False),
    ("masked_lm_weights", True),
    ("next_sentence_labels", False),
    ("position_ids", False),
    ("segment_ids", False),
)
# ``--masking none``: no masked_lm_*, and where words start, for the trainer that masks.
UNMASKED_TFRECORD_FEATURES = tuple(f for f in TFRECORD_FEATURES if not f[0].startswith("masked_lm")) + (
    ("word_starts", False),
)


# Lists as long as the row's pieces (not padded): each piece's length, its frame included, for varlen
# attention (cu_seqlens are their prefix sums); in a build of sources, each piece's source.
PIECE_LENGTHS, SOURCE_IDS = "piece_lengths", "source_ids"
PER_PIECE = (PIECE_LENGTHS, SOURCE_IDS)


def tfrecord_features(unmasked: bool, sources: bool = False) -> tuple:
    features = UNMASKED_TFRECORD_FEATURES if unmasked else TFRECORD_FEATURES
    per_piece = ((PIECE_LENGTHS, False), *(((SOURCE_IDS, False),) if sources else ()))
    return tuple(sorted((*features, *per_piece)))


def _per_piece(counts: np.ndarray, values: np.ndarray) -> "Cells":
    """Rows of ``counts[i]`` non-negative values each (consecutive in ``values``), as packed varint cells
    without padding."""
    width = int(counts.max(initial=0))
    present = np.arange(width)[None, :] < counts[:, None]
    matrix = np.zeros(present.shape, dtype=np.int64)
    matrix[present] = values
    cells = _packed_varints(matrix)
    if cells.present is None:  # one byte a value
        return Cells(cells.values, present, counts.astype(np.int64))
    mask = cells.present & np.repeat(present, cells.values.shape[1] // max(1, width), axis=1)
    return Cells(cells.values, mask, mask.sum(axis=1))


_LEN = 2  # protobuf wire type of a length-delimited field


def _tag(field: int) -> bytes:
    return bytes([(field << 3) | _LEN])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _tag(field) + _varint(len(payload)) + payload


# A column of byte strings, one per row, held as a padded uint8 matrix, a mask
# of the bytes present (None: all), and each row's length: ``values[mask]`` is
# the rows' bytes concatenated in row order (boolean indexing reads
# row-major). Columns side by side are a row's fields one after another, so a
# whole batch of protos is built by numpy.
class Cells(NamedTuple):
    values: np.ndarray  # uint8 [N, width]
    present: np.ndarray | None  # bool [N, width]; None: every byte
    lengths: np.ndarray  # int [N]


def fixed_cells(values: np.ndarray) -> Cells:
    return Cells(values, None, np.full(values.shape[0], values.shape[1]))


def _per_length(lengths: np.ndarray, make) -> Cells:
    """``make(length)`` for each row, computed once per distinct length."""
    unique, inverse = np.unique(lengths, return_inverse=True)
    encoded = [make(int(n)) for n in unique]
    sizes = np.array([len(data) for data in encoded])
    table = np.zeros((len(encoded), sizes.max(initial=0)), dtype=np.uint8)
    for i, data in enumerate(encoded):
        table[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    if not len(sizes) or (sizes == sizes[0]).all():
        return Cells(table[inverse], None, sizes[inverse])
    present = np.arange(table.shape[1])[None, :] < sizes[:, None]
    return Cells(table[inverse], present[inverse], sizes[inverse])


def _varint_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of each value of a non-negative int vector, as many columns as the largest needs."""
    dtype = np.uint32 if int(values.max(initial=0)) < 1 << 32 else np.uint64
    values = values.astype(dtype)[:, None]
    shifts = (7 * np.arange(-(-int(values.max(initial=1)).bit_length() // 7))).astype(dtype)
    present = values >= (dtype(1) << shifts)
    present[:, 0] = True
    # Seven bits per byte, and the continuation bit on each byte followed by another.
    data = ((values >> shifts) & dtype(0x7F)).astype(np.uint8)
    data[:, :-1] |= present[:, 1:].astype(np.uint8) << 7
    return data, present


_TABLE_SIZE = 1 << 17  # ids of every common vocabulary (mBERT's 120k included)


@functools.cache
def _varint_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data, present = _varint_cells(np.arange(_TABLE_SIZE))
    return data, present, present.sum(axis=1).astype(np.uint8)


def _packed_varints(matrix: np.ndarray) -> Cells:
    """Packed varint encodings of each row of a non-negative int matrix."""
    n = matrix.shape[0]
    top = int(matrix.max(initial=0))
    if top < 0x80:  # one byte per value: the common case of masks, segments and positions
        return fixed_cells(matrix.astype(np.uint8))
    if top < _TABLE_SIZE:  # a table lookup is several times faster than the arithmetic
        data, present, sizes = _varint_table()
        return Cells(
            np.take(data, matrix, axis=0).reshape(n, -1),
            np.take(present, matrix, axis=0).reshape(n, -1),
            np.take(sizes, matrix).sum(axis=1, dtype=np.int64),
        )
    data, present = _varint_cells(matrix.ravel())
    return Cells(data.reshape(n, -1), present.reshape(n, -1), present.reshape(n, -1).sum(axis=1))


def _feature_prefix(key: bytes, kind: int, payload_length: int) -> bytes:
    """The bytes of a ``Features.feature`` map entry up to its packed payload.

    Entry {1: key, 2: Feature {kind: List {1: payload}}}: everything before
    the payload depends only on the key, the kind and the payload's length.
    """
    list_length = 1 + len(_varint(payload_length)) + payload_length
    feature_length = 1 + len(_varint(list_length)) + list_length
    entry_length = len(key) + 1 + len(_varint(feature_length)) + feature_length
    return b"".join(
        (
            _tag(1),
            _varint(entry_length),
            key,
            _tag(2),
            _varint(feature_length),
            _tag(kind),
            _varint(list_length),
            _tag(1),
            _varint(payload_length),
        )
    )


def tf_feature_columns(batch: MaskedBatch) -> dict[str, np.ndarray]:
    """The BERT pre-training features of a batch, as [N, width] arrays."""
    n, width = batch.input_ids.shape
    if batch.segment_starts is None:  # single segments
        segment_ids, labels = np.zeros((n, width), dtype=np.int32), np.zeros((n, 1), dtype=np.int32)
    else:
        segment_ids = pairs.segment_ids(batch.segment_starts, batch.lengths, width, batch.b_type)
        labels = batch.next_sentence_labels.astype(np.int32)[:, None]
    return {
        "input_ids": batch.input_ids,
        "input_mask": (np.arange(width)[None, :] < batch.lengths[:, None]).astype(np.int32),
        "segment_ids": segment_ids,
        "masked_lm_positions": batch.masked_lm_positions,
        "masked_lm_ids": batch.masked_lm_ids,
        "masked_lm_weights": batch.masked_lm_weights,
        "next_sentence_labels": labels,
        "position_ids": batch.position_ids,
        **({"word_starts": batch.word_starts.astype(np.int32)} if batch.unmasked else {}),
    }


def _example_cells(batch: MaskedBatch) -> list[Cells]:
    """An Example's fields in order, as cells: its header, then each feature's prefix and payload."""
    columns = tf_feature_columns(batch)
    fields = []
    sources = batch.piece_sources is not None
    for name, is_float in tfrecord_features(batch.unmasked, sources):
        if name in PER_PIECE:
            pieces, piece_lengths = batch.piece_layout()
            payload, kind = (
                _per_piece(pieces, piece_lengths if name == PIECE_LENGTHS else batch.piece_sources),
                3,
            )
            prefix = functools.partial(_feature_prefix, _delimited(1, name.encode()), kind)
            fields += [_per_length(payload.lengths, prefix), payload]
            continue
        values = columns[name]
        if is_float:
            payload, kind = fixed_cells(values.astype("<f4").view(np.uint8)), 2  # Feature.float_list
        else:
            payload, kind = _packed_varints(values), 3  # Feature.int64_list
        prefix = functools.partial(_feature_prefix, _delimited(1, name.encode()), kind)
        fields += [_per_length(payload.lengths, prefix), payload]
    body = sum(field.lengths for field in fields)
    return [_per_length(body, lambda n: _tag(1) + _varint(n)), *fields]


def binary_array(field: Cells) -> pa.BinaryArray:
    """A field's cells as an Arrow binary array: the bytes present in each row."""
    n, width = field.values.shape
    if field.present is None:
        data = pa.py_buffer(np.ascontiguousarray(field.values))
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, data]).cast(pa.binary())
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(field.lengths, out=offsets[1:])
    data = np.compress(
        field.present.ravel(), field.values.ravel()
    )  # several times faster than values[present]
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def join_binary(columns: list[pa.Array]) -> pa.BinaryArray:
    """Each row's values of the columns, one after another (Arrow's C++ joins them)."""
    return pc.binary_join_element_wise(*columns, b"")


def tf_examples(batch: MaskedBatch) -> pa.BinaryArray:
    """Serialized ``tf.train.Example`` protos, one per row, contiguous in one Arrow buffer."""
    return join_binary([binary_array(field) for field in _example_cells(batch)])


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@functools.lru_cache(maxsize=4096)
def _frame_header(length: int) -> bytes:
    data = struct.pack("<Q", length)
    return data + struct.pack("<I", masked_crc(data))


def tfrecord_bytes(records) -> pa.Buffer:
    """TFRecord framing of records (bytes, or a binary array): length, masked CRC32C of the length, data,
    masked CRC32C.

    Written here rather than with ``WriteToTFRecord`` because a shard is one
    worker's group of records, sorted by key, and hashed as it is written.
    Only the CRC of each record is a call per record; the frames are joined
    by Arrow into the file's bytes.
    """
    records = records if isinstance(records, pa.BinaryArray) else pa.array(records, pa.binary())
    lengths = pc.binary_length(records).to_numpy(zero_copy_only=False)
    distinct, which = np.unique(lengths, return_inverse=True)
    headers = pa.array([_frame_header(int(n)) for n in distinct], pa.binary()).take(pa.array(which))
    crc = np.fromiter(map(google_crc32c.value, records.to_pylist()), dtype=np.uint32, count=len(records))
    masked = ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)
    trailers = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4), len(records), [None, pa.py_buffer(masked.astype("<u4"))]
    ).cast(pa.binary())
    framed = join_binary([headers, records, trailers])
    offsets = np.frombuffer(framed.buffers()[1], dtype=np.int32)[
        framed.offset : framed.offset + len(framed) + 1
    ]
    return framed.buffers()[2][int(offsets[0]) : int(offsets[-1])] if len(framed) else pa.py_buffer(b"")


# Token positions encoded at once, in both formats; in Parquet a slice is a
# row group. A slice's working set is ~55 bytes per position (byte cells,
# their masks, the columns they come from) and 8 per output byte (the indices
# np.compress takes): ~20 MB, at any shard size.
_SLICE_POSITIONS = 1 << 18


def slice_rows(max_seq_length: int) -> int:
    """How many rows of a shard are encoded at once."""
    return max(64, _SLICE_POSITIONS // max_seq_length)


def _list(value_type) -> pa.DataType:
    # Nothing is ever null: saying so spares Parquet's writer a fifth of its work (definition levels).
    return pa.list_(pa.field("item", value_type, nullable=False))


PARQUET_SCHEMA = pa.schema(
    [
        pa.field("input_ids", _list(pa.int32()), nullable=False),
        pa.field("attention_mask", _list(pa.int32()), nullable=False),
        pa.field("token_type_ids", _list(pa.int32()), nullable=False),
        pa.field("position_ids", _list(pa.int32()), nullable=False),
        pa.field(PIECE_LENGTHS, _list(pa.int32()), nullable=False),
        pa.field("labels", _list(pa.int32()), nullable=False),
        pa.field("masked_lm_positions", _list(pa.int32()), nullable=False),
        pa.field("masked_lm_ids", _list(pa.int32()), nullable=False),
        pa.field("masked_lm_weights", _list(pa.float32()), nullable=False),
    ]
)
# ``--masking none``: the model's inputs and where words start; no labels (the collator makes them).
UNMASKED_PARQUET_SCHEMA = pa.schema(
    [
        f
        for f in PARQUET_SCHEMA
        if f.name in ("input_ids", "attention_mask", "token_type_ids", "position_ids", PIECE_LENGTHS)
    ]
    + [pa.field("word_starts", _list(pa.int32()), nullable=False)]
)
# With sentence pairs: the label, named as Hugging Face's BertForPreTraining takes it.
_PAIR_LABEL = pa.field("next_sentence_label", pa.int32(), nullable=False)


_SOURCE_IDS = pa.field(SOURCE_IDS, _list(pa.int32()), nullable=False)


def parquet_schema(pairs: bool, unmasked: bool = False, sources: bool = False) -> pa.Schema:
    schema = UNMASKED_PARQUET_SCHEMA if unmasked else PARQUET_SCHEMA
    schema = schema.append(_PAIR_LABEL) if pairs else schema
    return schema.append(_SOURCE_IDS) if sources else schema


def _ragged_column(counts: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """``counts[i]`` values a row, as a ``list<int32>`` column."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values.astype(np.int32), pa.int32()), type=_list(pa.int32())
    )


def _list_column(matrix: np.ndarray, list_type) -> pa.ListArray:
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32) if n else [0], pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), list_type.value_type), type=list_type)


def parquet_table(batch: MaskedBatch) -> pa.Table:
    """The Hugging Face columns, plus the masked_lm_* ones the TFRecords carry."""
    columns = tf_feature_columns(batch)
    arrays = {
        "input_ids": columns["input_ids"],
        "attention_mask": columns["input_mask"],
        "token_type_ids": columns["segment_ids"],
        "position_ids": columns["position_ids"],
    }
    if batch.unmasked:
        arrays["word_starts"] = columns["word_starts"]
    else:
        arrays.update(
            labels=records.labels(batch),
            masked_lm_positions=batch.masked_lm_positions,
            masked_lm_ids=batch.masked_lm_ids,
            masked_lm_weights=columns["masked_lm_weights"],
        )
    pairs = batch.next_sentence_labels is not None
    sources = batch.piece_sources is not None
    schema = parquet_schema(pairs, batch.unmasked, sources)
    pieces, piece_lengths = batch.piece_layout()
    ragged = {PIECE_LENGTHS: piece_lengths, SOURCE_IDS: batch.piece_sources}
    table = []
    for f in schema:
        if f.name in ragged:
            table.append(_ragged_column(pieces, ragged[f.name]))
        elif f.name in arrays:
            table.append(_list_column(arrays[f.name], f.type))
        else:  # the pair label
            table.append(pa.array(batch.next_sentence_labels.astype(np.int32), pa.int32()))
    return pa.Table.from_arrays(table, schema=schema)


class ParquetShard:
    """A Parquet file written into ``sink`` (any object with ``write``) as it is built, one row group per
    batch added: what it holds is a row group, not the file."""

    def __init__(self, sink, pairs: bool = False, unmasked: bool = False, sources: bool = False):
        # zstd: smaller and faster to write than the default snappy here; every
        # Parquet reader of the field (pyarrow, datasets, polars, Spark) reads it.
        # Dictionaries and statistics suit neither token ids nor masks: without
        # them a shard is written a third faster and is under 10% larger.
        self._writer = pq.ParquetWriter(
            pa.PythonFile(sink, mode="w"),
            parquet_schema(pairs, unmasked, sources),
            compression="zstd",
            use_dictionary=False,
            write_statistics=False,
        )

    def add(self, batch: MaskedBatch) -> None:
        self.add_table(parquet_table(batch))

    def add_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        """Writes the footer."""
        self._writer.close()

    def abort(self) -> None:
        """Lets go of the file, which is being deleted."""
        try:
            self._writer.close()
        except Exception:
            pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
