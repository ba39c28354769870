"""Reading documents out of text, JSONL and Parquet files, as bounded pieces.

A file is streamed, never read whole: text is read in line chunks of at most
``PIECE_CHARS`` bytes, so even a 50 MB line never becomes one string (a JSONL
record is parsed whole, so its line is). A document longer than that is cut,
at whitespace, into pieces that are tokenized separately; all pieces of a
document share its key (a hash of its whitespace-normalized text), so they
dedup and split together.

A large uncompressed text or JSONL file is read as byte ranges on several
workers, as Beam's own text reads split files. A line belongs to the range
it starts in, and a document of blank-line separated text to the range in
which the last blank line before it starts, so the ranges of a file together
yield each of its documents exactly once.
"""

import bz2
import codecs
import dataclasses
import hashlib
import io
import json
import logging
import lzma
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms.counting import CountingDoFn
from mlmprep.transforms.progress import Progress

FORMATS = ("text", "lines", "jsonl", "parquet")
PIECE_CHARS = 1 << 16
_CUT_AT = (" ", "\n", "\t", "\u3000")  # whitespace a piece may end at, so no word is cut
BINARY_SNIFF_BYTES = 8192

# ANSI/VT100 escape sequences (colors, cursor moves) and C0/C1 control
# characters other than tab and newline: terminal noise, never text.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# What a damaged input file raises while it is decompressed or parsed.
UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)
del bz2  # bz2 raises OSError

_invalid_utf8 = threading.local()


def _replace_and_count(error: UnicodeDecodeError):
    _invalid_utf8.count = getattr(_invalid_utf8, "count", 0) + 1
    return "\ufffd", error.end


codecs.register_error("mlmprep.replace", _replace_and_count)


def invalid_utf8_count() -> int:
    """Invalid UTF-8 sequences replaced so far in this thread."""
    return getattr(_invalid_utf8, "count", 0)


def format_of(path: str, input_format: str = "auto") -> str:
    """The input format, from ``--input_format`` or the file suffix."""
    if input_format != "auto":
        return input_format
    name = re.sub(r"\.(gz|gzip|bz2|zst|zstd|deflate|xz|lzma)$", "", path.lower())
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def clean(text: str) -> str:
    """Removes terminal escape sequences and control characters."""
    return _CONTROL.sub("", _ANSI.sub("", text))


@dataclasses.dataclass
class Document:
    """A document as pieces of at most about PIECE_CHARS characters each."""

    key: int  # 63 bits of a hash of the whitespace-normalized text: identity for dedup and split
    copy_key: int  # a hash of the exact text: which of several copies is kept
    pieces: list[str]


def _key(hasher) -> int:
    return int.from_bytes(hasher.digest(), "little") >> 1


def document(pieces: list[str]) -> Document | None:
    """Keys a document; None when it has no non-space text."""
    normalized, exact = hashlib.blake2b(digest_size=8), hashlib.blake2b(digest_size=8)
    empty = True
    for piece in pieces:
        exact.update(piece.encode("utf-8", "surrogatepass"))
        words = piece.split()
        if words:
            if not empty:
                normalized.update(b" ")
            normalized.update(" ".join(words).encode("utf-8", "surrogatepass"))
            empty = False
    if empty:
        return None
    return Document(_key(normalized), _key(exact), pieces)


class _PieceBuilder:
    """Accumulates a document's text; cuts a piece at whitespace when it grows too long."""

    def __init__(self, limit: int):
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.pieces: list[str] = []

    def add(self, text: str):
        self._parts.append(text)
        self._size += len(text)
        while self._size > self._limit:
            text = "".join(self._parts)
            space = max(text.rfind(c, 0, self._limit) for c in _CUT_AT)
            cut = space + 1 if space > 0 else self._limit  # no whitespace at all: a hard cut
            self.pieces.append(text[:cut])
            self._parts, self._size = [text[cut:]], len(text) - cut

    def finish(self) -> list[str]:
        if self._size:
            self.pieces.append("".join(self._parts))
        pieces, self.pieces, self._parts, self._size = self.pieces, [], [], 0
        return pieces


def _lines(stream, limit: int | None, offset: int) -> Iterator[tuple[int, list[bytes]]]:
    """(byte offset, chunks) of each line of a binary stream, line end stripped.

    Lines are split as bytes, so each has its offset (ranges of one file are
    read apart); a chunk holds at most ``limit`` bytes (None: the whole line).
    Line ends are those of Python's text files: LF, CRLF and a lone CR.
    """
    chunks, start = [], offset
    while True:
        data = stream.readline(-1 if limit is None else limit)
        if not data:
            break
        offset += len(data)
        if data.endswith(b"\n"):
            chunks.append(data[:-1])
            if len(chunks) == 1 and b"\r" not in data:
                yield start, chunks  # the common case, kept fast
            else:
                yield from _split_at_cr(start, chunks)
            chunks, start = [], offset
        else:
            chunks.append(data)
    if chunks:
        yield from _split_at_cr(start, chunks)


def _split_at_cr(offset: int, chunks: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """One LF-ended line's lines: CRLF is LF, and a lone CR ends a line too.

    The lines share the offset of the LF line: ranges start only after an LF.
    """
    if len(chunks) > 1 and not chunks[-1]:  # the LF came alone, after a full chunk
        chunks.pop()
    if chunks[-1].endswith(b"\r"):
        chunks[-1] = chunks[-1][:-1]
    if not any(b"\r" in chunk for chunk in chunks):
        yield offset, chunks
        return
    line = []
    for chunk in chunks:
        first, *rest = chunk.split(b"\r")
        line.append(first)
        for part in rest:
            yield offset, line
            line = [part]
    yield offset, line


_ASCII_SPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.isspace counts below 0x80


def _blank(chunks: list[bytes]) -> bool:
    """Whether a line is only whitespace, Unicode's included, as ``str.strip`` sees it."""
    for chunk in chunks:
        rest = chunk.strip(_ASCII_SPACE)  # a line of text fails on its first byte
        if rest and (rest[0] < 0x80 or chunk.decode("utf-8", "replace").strip()):
            return False
    return True


class _Decoder:
    """Decodes a line's chunks; invalid UTF-8 is replaced and counted (once: only lines read)."""

    def __init__(self):
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="mlmprep.replace").decode

    def __call__(self, chunks: list[bytes]) -> list[str]:
        if len(chunks) == 1:
            return [self._decode(chunks[0], True)]
        last = len(chunks) - 1  # a chunk may end inside a character; a line may not
        return [self._decode(chunk, i == last) for i, chunk in enumerate(chunks)]


def iter_text_documents(
    stream, input_format: str, limit: int = PIECE_CHARS, *, start: int = 0, stop: int | None = None
) -> Iterator[list[str]]:
    """Documents of a binary text stream positioned at line offset ``start``, each as its pieces.

    ``text``: documents are separated by one or more blank lines (the original
    BERT convention), their lines joined by newlines. ``lines``: every
    non-blank line is a document.

    With ``stop``, only the documents of the byte range [start, stop) are read,
    so that ranges of one file can be read apart and together read every
    document once: a line belongs to the range it starts in; a ``text``
    document, to the range where the last blank line before it starts (the
    first range owns the file's first document).
    """
    builder, decode = _PieceBuilder(limit), _Decoder()
    owned = start == 0  # later ranges begin after the tail of a document they do not own
    in_document = False
    for offset, chunks in _lines(stream, limit, start):
        blank = _blank(chunks)
        past = stop is not None and offset >= stop
        if input_format == "lines":
            if past:
                break
            if not blank:
                for chunk in decode(chunks):
                    builder.add(chunk)
                yield builder.finish()
            continue
        if blank:
            if in_document:
                yield builder.finish()
                in_document = False
            if past:
                break
            owned = True
            continue
        if not owned:
            if past:
                break
            continue
        text = decode(chunks)
        if in_document:
            text[0] = "\n" + text[0]
        for chunk in text:
            builder.add(chunk)
        in_document = True
    if in_document:
        yield builder.finish()


def iter_documents(lines: Iterable[str], input_format: str) -> Iterator[str]:
    """Whole documents of an in-memory text (tests, benchmarks)."""
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8")
    for pieces in iter_text_documents(io.BytesIO(data), input_format):
        yield "".join(pieces)


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
    return io.BufferedReader(_RawStream(handle), buffer_size=1 << 20)


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


def _split(text: str, limit: int = PIECE_CHARS) -> list[str]:
    builder = _PieceBuilder(limit)
    builder.add(text)
    return builder.finish()


class FileRange(NamedTuple):
    """Bytes [start, stop) of a file; ``stop`` None: to its end."""

    path: str
    start: int = 0
    stop: int | None = None


RANGE_BYTES = 8 << 20  # 2+ ranges per worker for a file of tens of MB on a small machine


def file_ranges(metadata, input_format: str = "auto", range_bytes: int = RANGE_BYTES) -> Iterator[FileRange]:
    """A matched file as ranges to read apart: large uncompressed text or JSONL in near-equal parts.

    Line-oriented text can start reading at any byte (see iter_text_documents);
    compressed and Parquet files are read whole. As in Beam's ReadAllFiles,
    a shuffle after this spreads the ranges over the workers.
    """
    path, size = metadata.path, metadata.size_in_bytes
    if path.endswith(("/", "\\")):  # a directory, as fileio.ReadMatches skips them
        return
    splittable = (
        format_of(path, input_format) in ("text", "lines", "jsonl")
        and CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED
    )
    parts = max(1, -(-size // range_bytes)) if splittable else 1
    bounds = [size * i // parts for i in range(parts)]
    for start, stop in zip(bounds, [*bounds[1:], None]):
        yield FileRange(path, start, stop)


class ReadDocuments(CountingDoFn):
    """FileRange -> Document, cleaned; what cannot be read is counted by reason."""

    def __init__(self, input_format: str = "auto", text_field: str = "text"):
        super().__init__()
        self._input_format = input_format
        self._text_field = text_field
        self._progress = None

    def setup(self):
        self._progress = Progress("read")

    def process(self, file_range: FileRange):
        self.count("input_ranges_read")
        if file_range.start == 0:
            self.count("files_read")
        try:
            yield from self._read(file_range, format_of(file_range.path, self._input_format))
        except UNREADABLE as e:
            if file_range.start or file_range.stop is not None:
                raise  # a range of an uncompressed file: an I/O error, which a retry may mend
            # A corrupt archive or Parquet file: what it yielded so far is kept,
            # the rest is one counted drop. Beam's retries could not help.
            logging.warning("mlmprep: cannot read %s after its valid part: %s", file_range.path, e)
            self._drop("unreadable_file")

    def _read(self, file_range: FileRange, fmt):
        path, start, stop = file_range
        with FileSystems.open(path) as raw:  # decompresses by suffix; only uncompressed files are split
            if fmt == "parquet":
                texts = self._parquet_texts(raw)  # seeks to its footer: the file itself
            else:
                # The binary check looks at the file's first block, not the range's.
                head = raw.read(BINARY_SNIFF_BYTES) if start and fmt != "jsonl" else None
                stream, start = open_at_line(raw, start)
                if head is None:
                    head = stream.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]
                if fmt != "jsonl" and b"\x00" in head:
                    # A NUL byte in the first block: an image or an index, not text.
                    if file_range.start == 0:  # one drop per file, by its first range
                        self._drop("binary")
                    return
                if fmt == "jsonl":
                    texts = self._jsonl_texts(stream, start, stop)
                else:
                    texts = self._text_texts(stream, fmt, start, stop)
            for pieces in texts:
                yield from self._document(pieces)

    def _count_invalid_utf8(self, seen: int) -> int:
        """Counts the replacements made since ``seen``: those of the document or line just read."""
        now = invalid_utf8_count()
        if now > seen:
            self.count("documents_with_invalid_utf8")
            self.count("invalid_utf8_sequences", now - seen)
        return now

    def _text_texts(self, stream, fmt, start, stop):
        seen = invalid_utf8_count()
        for pieces in iter_text_documents(stream, fmt, start=start, stop=stop):
            seen = self._count_invalid_utf8(seen)
            yield pieces

    def _jsonl_texts(self, stream, start, stop):
        seen = invalid_utf8_count()
        decode = _Decoder()
        for offset, chunks in _lines(stream, None, start):
            if stop is not None and offset >= stop:
                break
            (line,) = decode(chunks)
            seen = self._count_invalid_utf8(seen)
            if not line.strip():
                continue
            try:
                value = json.loads(line)[self._text_field]
            except (ValueError, TypeError, KeyError, IndexError):
                self._drop("malformed_json")
                continue
            if not isinstance(value, str):
                self._drop("no_text_field")
                continue
            yield _split(value)

    def _parquet_texts(self, handle):
        parquet = pq.ParquetFile(handle)
        if self._text_field not in parquet.schema_arrow.names:
            self._drop("no_text_field", parquet.metadata.num_rows)
            return
        for batch in parquet.iter_batches(batch_size=1024, columns=[self._text_field]):
            for value in batch.column(0).to_pylist():
                if not isinstance(value, str):
                    self._drop("no_text_field")
                    continue
                yield _split(value)

    def _drop(self, reason: str, n: int = 1):
        """Documents read and dropped: every document read is written or dropped for a reason."""
        self.count("documents_read", n)
        self.count(f"documents_dropped.{reason}", n)

    def _document(self, pieces):
        self.count("documents_read")
        cleaned = [clean(p) for p in pieces]
        if cleaned != pieces:
            self.count("documents_with_control_characters")
        doc = document(cleaned)
        if doc is None:
            self.count("documents_dropped.empty")  # read: counted above
            return
        if len(doc.pieces) > 1:
            self.count("documents_split_into_pieces")
            self.count("pieces_of_split_documents", len(doc.pieces))
        characters = sum(len(p) for p in pieces)
        self.count("characters_read", characters)
        self._progress.update(documents=1, characters=characters)
        yield doc
