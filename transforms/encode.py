"""Encoding masked batches as TFRecord and Parquet shard bytes.

``tf.train.Example`` is encoded here by hand, vectorized over the batch: its
wire format is a fixed, documented protobuf layout of seven packed lists, and
writing it directly keeps TensorFlow (and generated protobuf code) off Beam
workers. The tests parse the result with TensorFlow itself.
"""

import hashlib
import struct

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlmprep.transforms.records import MaskedBatch

# Feature name -> is_float, in the order written (sorted, as TensorFlow does).
TFRECORD_FEATURES = (
    ("input_ids", False),
    ("input_mask", False),
    ("masked_lm_ids", False),
    ("masked_lm_positions", False),
    ("masked_lm_weights", True),
    ("next_sentence_labels", False),
    ("segment_ids", False),
)
LABEL_IGNORE = -100  # Hugging Face's ignore index for positions not predicted

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


def _packed_varints(matrix: np.ndarray) -> list[bytes]:
    """Packed varint encodings of each row of a non-negative int matrix."""
    values = matrix.astype(np.uint64).ravel()
    width = np.ones(values.size, dtype=np.int64)
    for shift in range(7, 64, 7):
        width += values >= (np.uint64(1) << np.uint64(shift))
    end = np.cumsum(width)
    start = end - width
    out = np.empty(int(end[-1]) if values.size else 0, dtype=np.uint8)
    for i in range(int(width.max(initial=1))):
        has = width > i
        byte = (values[has] >> np.uint64(7 * i)) & np.uint64(0x7F)
        more = (width[has] > i + 1).astype(np.uint64) << np.uint64(7)
        out[start[has] + i] = (byte | more).astype(np.uint8)
    row_end = end.reshape(matrix.shape)[:, -1] if matrix.shape[1] else np.zeros(len(matrix), np.int64)
    row_start = np.concatenate([[0], row_end[:-1]])
    data = out.tobytes()
    return [data[s:e] for s, e in zip(row_start, row_end)]


def tf_feature_columns(batch: MaskedBatch) -> dict[str, np.ndarray]:
    """The BERT pre-training features of a batch, as [N, width] arrays."""
    n, width = batch.input_ids.shape
    return {
        "input_ids": batch.input_ids,
        "input_mask": (np.arange(width)[None, :] < batch.lengths[:, None]).astype(np.int32),
        "segment_ids": np.zeros((n, width), dtype=np.int32),
        "masked_lm_positions": batch.masked_lm_positions,
        "masked_lm_ids": batch.masked_lm_ids,
        "masked_lm_weights": batch.masked_lm_weights,
        "next_sentence_labels": np.zeros((n, 1), dtype=np.int32),
    }


def tf_examples(batch: MaskedBatch) -> list[bytes]:
    """Serialized ``tf.train.Example`` protos, one per row."""
    columns = tf_feature_columns(batch)
    encoded = []
    for name, is_float in TFRECORD_FEATURES:
        values = columns[name]
        if is_float:
            payloads = [row.tobytes() for row in values.astype("<f4")]
            kind = 2  # Feature.float_list
        else:
            payloads = _packed_varints(values)
            kind = 3  # Feature.int64_list
        key = _delimited(1, name.encode())
        encoded.append(
            [_delimited(1, key + _delimited(2, _delimited(kind, _delimited(1, p)))) for p in payloads]
        )
    return [_delimited(1, b"".join(parts)) for parts in zip(*encoded)]


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_bytes(records: list[bytes]) -> bytes:
    """TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C.

    Written here rather than with ``WriteToTFRecord`` because a shard is
    assembled in memory in key order and hashed before it is written.
    """
    out = []
    for record in records:
        length = struct.pack("<Q", len(record))
        out += [length, struct.pack("<I", _masked_crc(length)), record]
        out.append(struct.pack("<I", _masked_crc(record)))
    return b"".join(out)


PARQUET_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("attention_mask", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("masked_lm_positions", pa.list_(pa.int32())),
        ("masked_lm_ids", pa.list_(pa.int32())),
        ("masked_lm_weights", pa.list_(pa.float32())),
    ]
)


def _list_column(matrix: np.ndarray, value_type) -> pa.ListArray:
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32) if n else [0], pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), value_type))


def parquet_table(batch: MaskedBatch) -> pa.Table:
    """The Hugging Face columns, plus the masked_lm_* ones the TFRecords carry."""
    columns = tf_feature_columns(batch)
    labels = np.full(batch.input_ids.shape, LABEL_IGNORE, dtype=np.int32)
    rows = np.repeat(np.arange(len(batch.lengths)), batch.num_predictions)
    valid = batch.masked_lm_weights > 0
    labels[rows, batch.masked_lm_positions[valid]] = batch.masked_lm_ids[valid]
    arrays = {
        "input_ids": columns["input_ids"],
        "attention_mask": columns["input_mask"],
        "token_type_ids": columns["segment_ids"],
        "labels": labels,
        "masked_lm_positions": batch.masked_lm_positions,
        "masked_lm_ids": batch.masked_lm_ids,
        "masked_lm_weights": columns["masked_lm_weights"],
    }
    return pa.Table.from_arrays(
        [_list_column(arrays[f.name], f.type.value_type) for f in PARQUET_SCHEMA],
        schema=PARQUET_SCHEMA,
    )


def parquet_bytes(batch: MaskedBatch) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(parquet_table(batch), sink)
    return sink.getvalue().to_pybytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
