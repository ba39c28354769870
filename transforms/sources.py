"""Where the job's documents come from: input files as byte ranges, and the reader for each format.

Both passes of the job (digests for deduplication, then the documents
themselves) read a file range through ``DocumentSource``; a large
uncompressed file is several ranges, read apart on several workers.
"""

import bz2
import collections
import dataclasses
import hashlib
import io
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple

import pyarrow as pa
import zstandard

from mlmprep.transforms.documents import BLOCK_BYTES, PIECE_CHARS, accepted, format_of, split_pieces
from mlmprep.transforms.jsonl_input import jsonl_values
from mlmprep.transforms.parquet_input import parquet_values
from mlmprep.transforms.text_input import iter_text_batches

BINARY_SNIFF_BYTES = 8192

# What a damaged input file raises while it is decompressed or parsed.
UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)
del bz2  # bz2 raises OSError


class _RawStream(io.RawIOBase):
    """Lets ``io`` buffer any Beam file handle; Beam's CompressedFile is not an io class."""

    def __init__(self, handle):
        super().__init__()
        self._handle = handle

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def buffered(handle) -> io.BufferedReader:
    return io.BufferedReader(_RawStream(handle), buffer_size=BLOCK_BYTES)


def open_at_line(handle, start: int) -> tuple[io.BufferedReader, int]:
    """A buffered stream at the first line starting at or after byte ``start``, and that line's offset."""
    if start == 0:
        return buffered(handle), 0
    handle.seek(start - 1)
    stream, offset = buffered(handle), start - 1
    while True:  # the rest of the line holding byte start - 1, in bounded reads
        data = stream.readline(PIECE_CHARS)
        offset += len(data)
        if not data or data.endswith(b"\n"):
            return stream, offset


class FileRange(NamedTuple):
    """Bytes [start, stop) of a file; ``stop`` None: to its end."""

    path: str
    start: int = 0
    stop: int | None = None
    size: int = 0  # the file's, where known: how much of the input the range is
    source: int = 0  # the build's source the file belongs to (a file belongs to one)

    @property
    def nbytes(self) -> int:
        """The range's bytes of the file (0 where the file's size is not known)."""
        return max(0, (self.size if self.stop is None else self.stop) - self.start)

    def key(self) -> int:
        """A 63-bit name for the range, the same in every pass and on every worker."""
        digest = hashlib.blake2b(f"{self.path}\0{self.start}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1


RANGE_BYTES = 8 << 20  # 2+ ranges per worker for a file of tens of MB on a small machine


def file_ranges(
    path: str,
    size: int,
    input_format: str = "auto",
    range_bytes: int = RANGE_BYTES,
    *,
    compressed: bool = False,
    source: int = 0,
) -> Iterator[FileRange]:
    """A file as ranges to read apart: large uncompressed text, JSONL and Parquet in near-equal parts.

    Line-oriented text can start reading at any byte (see iter_text_documents);
    a range of a Parquet file reads the row groups that start in it (as Beam's
    Parquet source splits); ``compressed`` files are read whole.
    """
    if path.endswith(("/", "\\")):  # a directory, as fileio.ReadMatches skips them
        return
    splittable = format_of(path, input_format) in ("text", "lines", "jsonl", "parquet") and not compressed
    parts = max(1, -(-size // range_bytes)) if splittable else 1
    bounds = [size * i // parts for i in range(parts)]
    for start, stop in zip(bounds, [*bounds[1:], None]):
        yield FileRange(path, start, stop, size, source)


@dataclasses.dataclass
class DocumentSource:
    """The documents of file ranges, cleaned, in file order; what it reads and drops, in ``counts``.

    Every document read is either yielded or counted as dropped, by reason.
    Reading a range again yields the same documents in the same order, so a
    document is named by its range and its index among those yielded.
    ``open_file`` opens a path for reading, decompressed by its suffix (the
    job passes Beam's ``FileSystems.open``, which also reads gs://, s3://, ...).
    """

    open_file: Callable[[str], BinaryIO]
    input_format: str = "auto"
    text_field: str = "text"
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unreadable: list = dataclasses.field(default_factory=list)  # (path, error) of damaged files

    def batches(self, file_range: FileRange) -> Iterator[list[list[str]]]:
        """The non-empty documents of a range, each as its cleaned pieces, a few at a time."""
        self.counts["input_ranges_read"] += 1
        if file_range.start == 0:
            self.counts["files_read"] += 1
        try:
            yield from self._batches(file_range, format_of(file_range.path, self.input_format))
        except UNREADABLE as e:
            parquet = format_of(file_range.path, self.input_format) == "parquet"
            if (file_range.start or file_range.stop is not None) and (isinstance(e, OSError) or not parquet):
                raise  # a range of an uncompressed file: an I/O error, which a retry may mend
            # A corrupt archive or Parquet file (or row group): what it yielded so far
            # is kept, the rest is one counted drop. Beam's retries could not help.
            self.unreadable.append((file_range.path, str(e)))
            self._drop("unreadable_file")

    def _batches(self, file_range: FileRange, fmt: str):
        path, start, stop = file_range.path, file_range.start, file_range.stop
        with self.open_file(path) as raw:  # decompresses by suffix; only uncompressed files are split
            if fmt == "parquet":  # seeks: the file itself
                yield from self._values(parquet_values(raw, self.text_field, self._drop, start, stop))
                return
            # The binary check looks at the file's first block, not the range's.
            head = raw.read(BINARY_SNIFF_BYTES) if start and fmt != "jsonl" else None
            stream, start = open_at_line(raw, start)
            if head is None:
                head = stream.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]
            if fmt == "jsonl":
                yield from self._values(
                    jsonl_values(stream, self.text_field, self.counts, self._drop, start=start, stop=stop)
                )
            elif b"\x00" in head:
                # A NUL byte in the first block: an image or an index, not text.
                if file_range.start == 0:  # one drop per file, by its first range
                    self._drop("binary")
            else:
                yield from iter_text_batches(stream, fmt, start=start, stop=stop, counts=self.counts)

    def _values(self, values: Iterable[str]) -> Iterator[list[list[str]]]:
        """Batches of documents, of about BLOCK_BYTES characters, from JSONL or Parquet text values."""
        docs, chars = [], 0
        try:
            for value in values:
                docs.append(split_pieces(value))
                chars += len(value)
                if chars >= BLOCK_BYTES:
                    yield accepted(docs, self.counts, blank=True)
                    docs, chars = [], 0
        except UNREADABLE:
            if docs:  # what a damaged file gave before the damage is kept, as the documents read
                yield accepted(docs, self.counts, blank=True)
            raise
        if docs:
            yield accepted(docs, self.counts, blank=True)

    def _drop(self, reason: str, n: int = 1):
        """Documents read and dropped: every document read is written or dropped for a reason."""
        self.counts["documents_read"] += n
        self.counts[f"documents_dropped.{reason}"] += n
