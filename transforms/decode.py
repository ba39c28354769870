"""Reading shards back: TFRecord frames and ``tf.train.Example``s, and Parquet, as ``MaskedBatch`` slices.

The mirror of ``encode``, for the tools that read an output (``verify``,
``inspect``, the tests) without TensorFlow. A shard is read a slice of rows
at a time, so what a reader holds does not grow with the shard.
"""

import io
import itertools
import struct
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlmprep.transforms import arrayrecord, encode, mds
from mlmprep.transforms.records import MaskedBatch

_LEN = 2  # protobuf wire type of a length-delimited field


class CorruptRecordError(ValueError):
    """A TFRecord frame or an Example that does not decode."""


def iter_tfrecords(stream) -> Iterator[bytes]:
    """The records of a TFRecord file read from ``stream`` in order, checking both CRCs of every frame."""
    offset = 0
    while header := stream.read(12):
        if len(header) < 12:
            raise CorruptRecordError(f"truncated frame header at byte {offset}")
        length_bytes = header[:8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", header[8:])
        if length_crc != encode.masked_crc(length_bytes):
            raise CorruptRecordError(f"length CRC mismatch at byte {offset}")
        body = stream.read(length + 4)
        if len(body) < length + 4:
            raise CorruptRecordError(f"truncated record at byte {offset}")
        record = body[:length]
        (data_crc,) = struct.unpack("<I", body[length:])
        if data_crc != encode.masked_crc(record):
            raise CorruptRecordError(f"data CRC mismatch in the record at byte {offset}")
        yield record
        offset += 16 + length


def read_tfrecords(data: bytes) -> list[bytes]:
    """The records of a TFRecord file's bytes."""
    return list(iter_tfrecords(io.BytesIO(data)))


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise CorruptRecordError("truncated varint")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if byte < 0x80:
            return value, offset
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of a protobuf message; LEN values as bytes."""
    offset = 0
    while offset < len(data):
        tag, offset = _read_varint(data, offset)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, offset = _read_varint(data, offset)
        elif wire == 1:
            value, offset = data[offset : offset + 8], offset + 8
        elif wire == 5:
            value, offset = data[offset : offset + 4], offset + 4
        elif wire == _LEN:
            length, offset = _read_varint(data, offset)
            value, offset = data[offset : offset + length], offset + length
        else:
            raise CorruptRecordError(f"unsupported wire type {wire}")
        if offset > len(data):
            raise CorruptRecordError("truncated field")
        yield field, wire, value


def _unpack_varints(payload: bytes) -> np.ndarray:
    raw = np.frombuffer(payload, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.int64)
    ends = np.nonzero(raw < 0x80)[0]
    if ends.size == 0 or ends[-1] != raw.size - 1:
        raise CorruptRecordError("truncated packed varints")
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = (np.arange(raw.size) - starts[group]) * 7
    values = (raw & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.add.reduceat(values, starts).view(np.int64)


def parse_example(data: bytes) -> dict[str, np.ndarray]:
    """A ``tf.train.Example``'s int64 and float features as numpy arrays, without TensorFlow."""
    out = {}
    for field, _, features in _fields(data):
        if field != 1:
            continue
        for _, _, entry in _fields(features):
            name, feature = None, b""
            for f, _, value in _fields(entry):
                if f == 1:
                    name = value.decode("utf-8")
                elif f == 2:
                    feature = value
            for kind, _, values in _fields(feature):
                parts = list(_fields(values))
                if kind == 3:  # int64_list: packed, or one varint per value
                    out[name] = np.concatenate(
                        [
                            _unpack_varints(v) if w == _LEN else np.array([v], np.uint64).view(np.int64)
                            for _, w, v in parts
                        ]
                        or [np.zeros(0, np.int64)]
                    )
                elif kind == 2:  # float_list
                    out[name] = np.frombuffer(b"".join(v for _, _, v in parts), dtype="<f4").copy()
    return out


def _masked_batch(columns: dict, frame=None, labels=None) -> MaskedBatch:
    """The batch of the columns read (in TFRecord's names); lengths and counts from the masks, so they
    are checked, not trusted. An unmasked output's (``word_starts``) has no predictions.

    With ``labels`` (sentence pairs), a row's segment start is found from the pair ``frame`` (whose B may
    have type id 0, as RoBERTa's).
    """
    input_ids = columns["input_ids"]
    n = len(input_ids)
    unmasked = "word_starts" in columns
    none = np.zeros((n, 0), np.int64)
    return MaskedBatch(
        input_ids=input_ids.astype(np.int64),
        lengths=columns["input_mask"].sum(axis=1).astype(np.int32),
        masked_lm_positions=none if unmasked else columns["masked_lm_positions"].astype(np.int64),
        masked_lm_ids=none if unmasked else columns["masked_lm_ids"].astype(np.int64),
        num_predictions=np.zeros(n, np.int32)
        if unmasked
        else columns["masked_lm_weights"].sum(axis=1).astype(np.int32),
        segment_starts=None if labels is None else frame.segment_starts(input_ids),
        next_sentence_labels=None if labels is None else labels.reshape(-1).astype(np.int64),
        word_starts=columns["word_starts"] if unmasked else None,
    )


def _per_piece(lists: list[np.ndarray], first: int, seq: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of each row's list of one value per piece (``encode.PER_PIECE``): 1 to ``seq``."""
    counts = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    bad = np.flatnonzero((counts < 1) | (counts > seq))
    if bad.size:
        raise CorruptRecordError(f"record {first + int(bad[0])}: {counts[bad[0]]} {name}")
    return np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64), counts


def _with_pieces(batch: MaskedBatch, per_piece: dict) -> MaskedBatch:
    """The batch with the pieces its rows say they hold, where they say it."""
    if encode.PIECE_LENGTHS in per_piece:
        values, counts = per_piece[encode.PIECE_LENGTHS]
        batch.pieces, batch.piece_lengths = counts, values.astype(np.int32)
    if encode.SOURCE_IDS in per_piece:
        batch.piece_sources = per_piece[encode.SOURCE_IDS][0]
    return batch


def _tfrecord_batch(
    records: list[bytes], first: int, seq: int, preds: int, pair_frame=None, unmasked: bool = False,
    sources: bool = False,
) -> tuple[MaskedBatch, dict]:  # fmt: skip
    examples = [parse_example(r) for r in records]
    expected = {
        name: (preds if name.startswith("masked_lm") else 1 if name == "next_sentence_labels" else seq)
        for name, _ in encode.tfrecord_features(unmasked)
        if name not in encode.PER_PIECE
    }
    per_piece = {encode.PIECE_LENGTHS} | ({encode.SOURCE_IDS} if sources else set())
    if examples and "position_ids" not in examples[0]:  # written before position_ids were
        del expected["position_ids"]
    if examples and encode.PIECE_LENGTHS not in examples[0]:  # written before piece_lengths were
        per_piece.discard(encode.PIECE_LENGTHS)
    for i, example in enumerate(examples, first):
        shapes = {k: v.size for k, v in example.items() if k not in encode.PER_PIECE}
        if shapes != expected:
            raise CorruptRecordError(f"record {i}: features {shapes}, expected {expected}")
        found = set(example) & set(encode.PER_PIECE)
        if per_piece != found:
            raise CorruptRecordError(
                f"record {i}: per-piece features {sorted(found)}, expected {sorted(per_piece)}"
            )
        if not unmasked and example["masked_lm_weights"].dtype != np.float32:
            raise CorruptRecordError(f"record {i}: masked_lm_weights is not float")
    stack = {k: np.stack([e[k] for e in examples]) for k in expected}
    labels = stack["next_sentence_labels"] if pair_frame is not None else None
    batch = _masked_batch(stack, pair_frame, labels)
    for name in per_piece:
        stack[name] = _per_piece([e[name] for e in examples], first, seq, name)
    return _with_pieces(batch, {k: stack[k] for k in per_piece}), stack


def tfrecord_slices(
    stream, seq: int, preds: int, rows: int, pair_frame=None, unmasked: bool = False, sources: bool = False
) -> Iterator[tuple[MaskedBatch, dict]]:
    """(batch, raw columns) of ``rows`` records at a time from a TFRecord stream, read in order;
    ``pair_frame``: the records are sentence pairs in this ``frames.Frame``; ``unmasked``: written by
    ``--masking none``; ``sources``: by a build of sources (``source_ids`` as (values, counts))."""
    records, first = iter_tfrecords(stream), 0
    while chunk := list(itertools.islice(records, rows)):
        yield _tfrecord_batch(chunk, first, seq, preds, pair_frame, unmasked, sources)
        first += len(chunk)


def _matrix(column: pa.ChunkedArray, width: int, name: str) -> np.ndarray:
    """A list column whose lists all have ``width`` values, as an [N, width] array."""
    lists = column.combine_chunks()
    if lists.null_count or pc.all(pc.equal(pc.list_value_length(lists), width)).as_py() is False:
        raise CorruptRecordError(f"column {name}: lists not all of length {width}")
    return lists.flatten().to_numpy(zero_copy_only=False).reshape(len(lists), width)


_TFRECORD_NAMES = {"attention_mask": "input_mask", "token_type_ids": "segment_ids"}  # Parquet's -> TFRecord's


def _parquet_batch(table: pa.Table, seq: int, preds: int, frame=None) -> tuple[MaskedBatch, dict]:
    columns = {
        _TFRECORD_NAMES.get(name, name): _matrix(
            table.column(name), preds if name.startswith("masked_lm") else seq, name
        )
        for name in table.column_names
        if name not in ("next_sentence_label", *encode.PER_PIECE)
    }
    pairs = "next_sentence_label" in table.column_names
    labels = table.column("next_sentence_label").to_numpy()[:, None] if pairs else None
    batch = _masked_batch(columns, frame, labels)
    extra = {k: v for k, v in columns.items() if k != "input_ids"}
    if pairs:
        extra["next_sentence_labels"] = labels
    for name in encode.PER_PIECE:
        if name in table.column_names:
            lists = table.column(name).combine_chunks()
            offsets = lists.offsets.to_numpy()
            values = lists.values.to_numpy(zero_copy_only=False)
            extra[name] = _per_piece([values[a:b] for a, b in zip(offsets[:-1], offsets[1:])], 0, seq, name)
    return _with_pieces(batch, {k: extra[k] for k in encode.PER_PIECE if k in extra}), extra


def parquet_slices(
    f, seq: int, preds: int, rows: int, pair_frame=None, unmasked: bool = False, sources: bool = False
) -> Iterator[tuple[MaskedBatch, dict]]:
    """(batch, raw columns) of exactly ``rows`` rows (the last one fewer) from a seekable Parquet file,
    whatever its row groups; ``pair_frame``: the rows are sentence pairs in this ``frames.Frame``;
    ``unmasked``: written by ``--masking none``."""
    parquet = pq.ParquetFile(f)
    schema = encode.parquet_schema(pair_frame is not None, unmasked, sources)
    # Outputs written before piece_lengths were, and before position_ids were, still read.
    without_pieces = schema.remove(schema.get_field_index(encode.PIECE_LENGTHS))
    older = (schema, without_pieces, without_pieces.remove(without_pieces.get_field_index("position_ids")))
    if parquet.schema_arrow not in older:
        raise CorruptRecordError(f"schema {parquet.schema_arrow} is not the contract's")
    schema = parquet.schema_arrow
    pending = pa.Table.from_batches([], schema=schema)
    for batch in parquet.iter_batches(batch_size=rows):
        pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
        while pending.num_rows >= rows:
            yield _parquet_batch(pending.slice(0, rows), seq, preds, pair_frame)
            pending = pending.slice(rows)
    if pending.num_rows:
        yield _parquet_batch(pending, seq, preds, pair_frame)


def arrayrecord_slices(
    path: str, seq: int, preds: int, rows: int, pair_frame=None, unmasked: bool = False, sources: bool = False
) -> Iterator[tuple[MaskedBatch, dict]]:
    """As ``tfrecord_slices``, from a local ArrayRecord file (its records are the same Examples)."""
    reader = arrayrecord.module().ArrayRecordReader(path)
    try:
        total = reader.num_records()
        for first in range(0, total, rows):
            chunk = reader.read(first, min(total, first + rows))
            yield _tfrecord_batch(chunk, first, seq, preds, pair_frame, unmasked, sources)
    finally:
        reader.close()


def mds_slices(
    stream, compression: str | None, seq: int, preds: int, rows: int, pair_frame=None, unmasked: bool = False,
    sources: bool = False, expected_config: dict | None = None,
) -> Iterator[tuple[MaskedBatch, dict]]:  # fmt: skip
    """As ``parquet_slices``, from an MDS shard file's stream; ``expected_config``: what the shard must
    say of itself (the manifest's)."""
    schema = encode.parquet_schema(pair_frame is not None, unmasked, sources)
    try:
        shard_config, samples = mds.read_shard(stream, compression, rows)
        if expected_config is not None and shard_config != expected_config:
            raise CorruptRecordError(f"its config {shard_config} is not the manifest's {expected_config}")
        if set(shard_config["column_names"]) - {mds.LENGTH} != set(schema.names):
            raise CorruptRecordError(f"columns {shard_config['column_names']} are not the contract's")
        for chunk in samples:
            yield _parquet_batch(_mds_table(chunk, schema, unmasked), seq, preds, pair_frame)
    except mds.MdsFormatError as e:
        raise CorruptRecordError(str(e)) from None


def _mds_table(samples: list[dict], schema: pa.Schema, unmasked: bool) -> pa.Table:
    """MDS samples as rows of the Parquet schema (ids and mask of an unmasked output from int64 bytes)."""
    columns = []
    for field in schema:
        values = [sample[field.name] for sample in samples]
        if field.name == "next_sentence_label":
            columns.append(pa.array(values, pa.int32()))
            continue
        if unmasked and field.name in mds.INT64_BYTES:
            values = [np.frombuffer(v, "<i8") for v in values]
        offsets = np.zeros(len(values) + 1, np.int32)
        np.cumsum([v.size for v in values], out=offsets[1:])
        flat = np.concatenate(values) if values else np.zeros(0)
        columns.append(
            pa.ListArray.from_arrays(
                pa.array(offsets),
                pa.array(flat.astype(field.type.value_type.to_pandas_dtype())),
                type=field.type,
            )
        )
    if unmasked and any(s[mds.LENGTH] * 8 != len(s["input_ids"]) for s in samples):
        raise CorruptRecordError(f"a {mds.LENGTH} that is not how many ids input_ids holds")
    return pa.Table.from_arrays(columns, schema=schema)
