"""MosaicML Streaming's MDS shards: the rows of ``encode.parquet_table``, written by the format's layout.

Written here rather than with the library's ``MDSWriter``: that brings
PyTorch, torchvision and several cloud SDKs onto every Beam worker, holds a
shard in memory and writes it through uploaders of its own; the layout is a
small fixed one, and the tests read the shards back with the library's own
``StreamingDataset``. A shard file is (uint32 little-endian throughout):

  the sample count N; N + 1 offsets of the samples from the file's start;
  the shard's config as JSON (``config``); the samples.

A sample is the sizes of its variable-size columns, then every column's
bytes, the columns in name order. The whole file is compressed (MDS's
``zip_data``); ``index.json``, one per split, lists the shards in order.
"""

import bz2
import gzip
import json
import tempfile
import zlib

import numpy as np
import pyarrow as pa
import zstandard

from mlmprep.transforms import encode
from mlmprep.transforms.records import MaskedBatch

# Compressions MDS reads: algorithm -> (its default level, the levels it knows).
COMPRESSIONS = {"zstd": (3, range(1, 23)), "gz": (9, range(10)), "bz2": (9, range(1, 10))}
# Known to MDS, not written here: their libraries would be Beam worker dependencies for no gain over zstd.
UNWRITTEN = ("br", "snappy")
DEFAULT_COMPRESSION = "zstd"
INDEX = "index.json"
# ModernBERT's loader (and MosaicML's LLM Foundry) decode these from int64 bytes when they are bytes.
INT64_BYTES = ("input_ids", "attention_mask")
LENGTH = "len"  # what that loader reads as the length of input_ids


def parse_compression(text: str | None) -> tuple[str, int] | None:
    """``zstd``, ``zstd:7``, ``gz:6``, ``bz2``, or ``none`` -> (algorithm, level); None: uncompressed."""
    if text in (None, "", "none"):
        return None
    name, _, level = text.partition(":")
    if name in UNWRITTEN:
        raise ValueError(f"MDS compression {name!r} is not one mlmprep writes; use one of {_choices()}")
    if name not in COMPRESSIONS:
        raise ValueError(f"MDS does not know the compression {text!r}; use one of {_choices()}")
    default, levels = COMPRESSIONS[name]
    try:
        value = int(level) if level else default
    except ValueError:
        value = None
    if value not in levels:
        raise ValueError(f"MDS compression {name} takes a level from {levels.start} to {levels.stop - 1}")
    return name, value


def _choices() -> str:
    return ", ".join([*COMPRESSIONS, "none"]) + " (with a level: zstd:7)"


def columns(seq: int, preds: int, pairs: bool, unmasked: bool, sources: bool) -> dict[str, str]:
    """The Parquet row's columns and their MDS encodings: arrays of a fixed shape where the row's are,
    one value a piece otherwise; unmasked ids and mask as int64 bytes, as ModernBERT's loader reads them."""
    fixed = {f.name: seq for f in encode.parquet_schema(pairs, unmasked, sources) if f.name not in _NOT_SEQ}
    out = {name: f"ndarray:int32:{width}" for name, width in fixed.items()}
    if not unmasked:
        out.update(
            masked_lm_positions=f"ndarray:int32:{preds}",
            masked_lm_ids=f"ndarray:int32:{preds}",
            masked_lm_weights=f"ndarray:float32:{preds}",
        )
    else:
        out.update(dict.fromkeys(INT64_BYTES, "bytes"), **{LENGTH: "int32"})
    out.update(
        dict.fromkeys([encode.PIECE_LENGTHS, *([encode.SOURCE_IDS] if sources else [])], "ndarray:int32")
    )
    if pairs:
        out["next_sentence_label"] = "int32"
    return dict(sorted(out.items()))


_NOT_SEQ = (
    "masked_lm_positions", "masked_lm_ids", "masked_lm_weights", "next_sentence_label", *encode.PER_PIECE,
)  # fmt: skip


def _size(encoding: str) -> int | None:
    """A column's fixed size in bytes; None: variable (its size is in each sample's head)."""
    kind, *rest = encoding.split(":")
    if kind == "ndarray" and len(rest) == 2:
        return np.dtype(rest[0]).itemsize * int(rest[1])
    return {"int32": 4}.get(encoding)


def config(columns: dict[str, str], compression: str | None) -> dict:
    """What an MDS shard says of itself, in its file and in index.json (MDSWriter.get_config's keys)."""
    parsed = parse_compression(compression)
    return {
        "version": 2,
        "format": "mds",
        "compression": None if parsed is None else f"{parsed[0]}:{parsed[1]}",
        "hashes": [],
        "size_limit": None,
        "column_names": list(columns),
        "column_encodings": list(columns.values()),
        "column_sizes": [_size(e) for e in columns.values()],
    }


def suffix(mds_config: dict) -> str | None:
    """The compressed file's suffix after ``.mds`` (MDS's: the algorithm); None: uncompressed."""
    return None if mds_config["compression"] is None else mds_config["compression"].split(":")[0]


def _column_cells(name: str, encoding: str, table: pa.Table) -> tuple[encode.Cells, bool]:
    """(a column's bytes per row, whether its size goes in the sample's head)."""
    column = table.column(name).combine_chunks() if name in table.column_names else None
    if encoding == "bytes":  # int64 ids or mask
        values = column.flatten().to_numpy().astype("<i8").reshape(len(column), -1)
        return encode.fixed_cells(values.view(np.uint8)), True
    if encoding == "int32":
        values = (
            np.array(column.to_numpy(), "<i4")
            if column is not None
            else np.full(table.num_rows, _width(table), "<i4")  # len: how many ids input_ids holds
        )
        return encode.fixed_cells(values[:, None].view(np.uint8)), False
    if encoding.count(":") == 2:  # a fixed shape
        dtype = encoding.split(":")[1]
        values = column.flatten().to_numpy().astype(np.dtype(dtype).newbyteorder("<"))
        return encode.fixed_cells(values.reshape(len(column), -1).view(np.uint8)), False
    return _ragged(column), True


def _width(table: pa.Table) -> int:
    """How many ids a row's input_ids holds: the rows' lists are all of the sequence's length."""
    return len(table.column("input_ids")[0]) if table.num_rows else 0


def _ragged(column: pa.ListArray) -> encode.Cells:
    """``ndarray:int32`` of a dynamic shape: a byte (ndim << 2 | the shape's dtype), the shape, the values."""
    counts = np.diff(column.offsets.to_numpy()).astype(np.int64)
    width = int(counts.max(initial=0))
    present = np.arange(width)[None, :] < counts[:, None]
    matrix = np.zeros(present.shape, "<i4")
    matrix[present] = column.values.to_numpy()
    shape_dtype = np.where(counts < 256, 0, np.where(counts < 1 << 16, 1, 2))
    head = np.zeros((len(counts), 5), np.uint8)
    head[:, 0] = (1 << 2) | shape_dtype
    head[:, 1:] = counts.astype("<u4")[:, None].view(np.uint8)
    head_present = np.arange(5)[None, :] <= (1 << shape_dtype)[:, None]  # 1 + the shape's bytes
    data = np.concatenate([head, matrix.view(np.uint8)], axis=1)
    mask = np.concatenate([head_present, np.repeat(present, 4, axis=1)], axis=1)
    return encode.Cells(data, mask, mask.sum(axis=1))


def samples(table: pa.Table, mds_config: dict) -> pa.BinaryArray:
    """Each row of a Parquet table as an MDS sample."""
    heads, bodies = [], []
    for name, encoding in zip(mds_config["column_names"], mds_config["column_encodings"]):
        cells, variable = _column_cells(name, encoding, table)
        if variable:
            heads.append(cells.lengths.astype("<u4")[:, None].view(np.uint8))
        bodies.append(cells)
    fields = ([encode.fixed_cells(np.concatenate(heads, axis=1))] if heads else []) + bodies
    return encode.join_binary([encode.binary_array(f) for f in fields])


class MdsShard:
    """An MDS shard file written into ``sink`` (any object with ``write``) once its rows are all added.

    The offsets come before the samples, so the samples wait in a local
    temporary file (what the shard holds in memory does not grow with it);
    ``close`` writes the header, the config and the samples through the
    compressor. Returns the uncompressed size, which index.json records.
    """

    def __init__(self, sink, mds_config: dict):
        self._sink = sink
        self._config = mds_config
        self._config_bytes = json.dumps(mds_config, sort_keys=True).encode("utf-8")
        self._spool = tempfile.TemporaryFile(prefix="mlmprep-mds-")
        self._sizes = []

    def add(self, batch: MaskedBatch, table: pa.Table | None = None) -> None:
        encoded = samples(encode.parquet_table(batch) if table is None else table, self._config)
        offsets = np.frombuffer(encoded.buffers()[1], np.int32)[
            encoded.offset : encoded.offset + len(encoded) + 1
        ]
        self._sizes.append(np.diff(offsets))
        if len(encoded):
            self._spool.write(memoryview(encoded.buffers()[2])[offsets[0] : offsets[-1]])

    def close(self) -> int:
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        start = 4 + 4 * (len(sizes) + 1) + len(self._config_bytes)
        offsets = start + np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if offsets[-1] >= 1 << 32:  # MDS's offsets are uint32
            raise ValueError(
                f"an MDS shard of {offsets[-1]:,} bytes is above the format's 4 GiB: use more shards "
                "(--num_shards, or a smaller --target_shard_mb)"
            )
        compress = _compressor(self._config["compression"], int(offsets[-1]))
        self._sink.write(compress(np.uint32(len(sizes)).tobytes() + offsets.astype("<u4").tobytes()))
        self._sink.write(compress(self._config_bytes))
        self._spool.seek(0)
        while chunk := self._spool.read(1 << 22):
            self._sink.write(compress(chunk))
        self._sink.write(compress(None))
        self._spool.close()
        return int(offsets[-1])

    def abort(self) -> None:
        self._spool.close()


def _compressor(compression: str | None, size: int):
    """A function of bytes (None: the end) -> the compressed bytes to write so far."""
    if compression is None:
        return lambda data: data or b""
    name, level = compression.split(":")
    if name == "zstd":  # the frame records its size: MDS's reader (python-zstd) needs it
        obj = zstandard.ZstdCompressor(level=int(level)).compressobj(size=size)
    elif name == "gz":
        obj = zlib.compressobj(int(level), zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        obj = bz2.BZ2Compressor(int(level))
    return lambda data: obj.compress(data) if data is not None else obj.flush()


def index(mds_config: dict, shards: list[dict]) -> dict:
    """A split's index.json: its MDS shard entries (the manifest's, in order) as MosaicML Streaming lists
    them, their names relative to the split's folder."""
    out = []
    for shard in sorted(shards, key=lambda s: s["file"]):
        name = shard["file"].rsplit("/", 1)[-1]
        raw = name if mds_config["compression"] is None else name.rsplit(".", 1)[0]
        out.append(
            {
                **mds_config,
                "samples": shard["records"],
                "raw_data": {"basename": raw, "bytes": shard["raw_bytes"], "hashes": {}},
                "zip_data": None
                if mds_config["compression"] is None
                else {"basename": name, "bytes": shard["bytes"], "hashes": {}},
            }
        )
    return {"version": 2, "shards": out}


def index_bytes(mds_config: dict, shards: list[dict]) -> bytes:
    return json.dumps(index(mds_config, shards), sort_keys=True).encode("utf-8")


class MdsFormatError(ValueError):
    """An MDS shard that does not decode as its config says."""


def _decompressed(stream, compression: str | None):
    if compression is None:
        return stream
    name = compression.split(":")[0]
    if name == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(stream)
    if name == "gz":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    return bz2.BZ2File(stream, mode="rb")


def _read_exactly(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n and (chunk := stream.read(n - len(out))):
        out += chunk
    if len(out) != n:
        raise MdsFormatError(f"the file ends {n - len(out)} bytes early")
    return bytes(out)


def read_shard(stream, compression: str | None, rows: int):
    """(the shard's own config, then lists of at most ``rows`` samples as {column: array or bytes}),
    read front to back from a shard file's stream."""
    raw = _decompressed(stream, compression)
    (count,) = np.frombuffer(_read_exactly(raw, 4), "<u4")
    offsets = np.frombuffer(_read_exactly(raw, 4 * (int(count) + 1)), "<u4").astype(np.int64)
    start = 4 + 4 * (int(count) + 1)
    if count and (offsets[0] <= start or (np.diff(offsets) < 0).any()):
        raise MdsFormatError("offsets that do not follow the header")
    config_end = int(offsets[0]) if count else None
    if config_end is None:  # no samples: the config runs to the end
        shard_config = json.loads(raw.read().decode("utf-8"))
        return shard_config, iter(())
    shard_config = json.loads(_read_exactly(raw, config_end - start).decode("utf-8"))
    return shard_config, _samples(raw, shard_config, np.diff(offsets), rows)


def _samples(raw, shard_config: dict, sizes: np.ndarray, rows: int):
    names, encodings = shard_config["column_names"], shard_config["column_encodings"]
    fixed = shard_config["column_sizes"]
    variable = sum(size is None for size in fixed)
    for first in range(0, len(sizes), rows):
        out = []
        for size in sizes[first : first + rows].tolist():
            data = _read_exactly(raw, size)
            heads = iter(np.frombuffer(data[: 4 * variable], "<u4").tolist())
            at, sample = 4 * variable, {}
            for name, encoding, width in zip(names, encodings, fixed):
                n = width if width is not None else next(heads)
                sample[name] = _decode(encoding, data[at : at + n])
                at += n
            if at != size:
                raise MdsFormatError(f"a sample of {size} bytes whose columns take {at}")
            out.append(sample)
        yield out


def _decode(encoding: str, data: bytes):
    if encoding == "bytes":
        return data
    if encoding == "int32":
        return int(np.frombuffer(data, "<i4")[0])
    _, dtype, *shape = encoding.split(":")
    if shape:
        return np.frombuffer(data, np.dtype(dtype).newbyteorder("<"))
    head = data[0]
    shape_bytes = 1 << (head & 3)
    (count,) = np.frombuffer(data[1 : 1 + shape_bytes], f"<u{shape_bytes}")
    values = np.frombuffer(data[1 + shape_bytes :], np.dtype(dtype).newbyteorder("<"))
    if head >> 2 != 1 or values.size != count:
        raise MdsFormatError(f"an {encoding} array of shape {count} holding {values.size} values")
    return values
