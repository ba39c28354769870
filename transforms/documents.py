"""Reading documents out of text, JSONL and Parquet files, as bounded pieces.

Nothing here knows Beam: both passes of the job (digests for deduplication,
then the documents themselves) read a file range through ``DocumentSource``.

A file is streamed, never read whole. Text is cut into documents a block of
lines at a time: the blank lines between documents are found by one regular
expression over the block's bytes, so the cost per document is a few string
operations, not a Python loop over its lines. Lines the block path cannot
take (a line longer than a block, carriage returns next to the end of a
range) are read one at a time, in chunks of at most ``PIECE_CHARS`` bytes, so
even a 50 MB line never becomes one string (a JSONL record is parsed whole,
so its line is). A document longer than ``PIECE_CHARS`` is cut, at
whitespace, into pieces that are tokenized separately.

A large uncompressed text or JSONL file is read as byte ranges on several
workers, as Beam's own text reads split files. A line belongs to the range
it starts in, and a document of blank-line separated text to the range in
which the last blank line before it starts, so the ranges of a file together
yield each of its documents exactly once.
"""

import bz2
import codecs
import collections
import dataclasses
import functools
import hashlib
import io
import json
import lzma
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mlmprep.transforms import keys

FORMATS = ("text", "lines", "jsonl", "parquet")
PIECE_CHARS = 1 << 16
BLOCK_BYTES = 1 << 20  # text cut into documents at once; also the read buffer
_CUT_AT = (" ", "\n", "\t", "\u3000")  # whitespace a piece may end at, so no word is cut
BINARY_SNIFF_BYTES = 8192

# ANSI/VT100 escape sequences (colors, cursor moves) and C0/C1 control
# characters other than tab and newline: terminal noise, never text.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # ESC, which starts every escape, included

# A blank line: nothing but whitespace as str.isspace sees it, Unicode's
# included, matched in UTF-8 without decoding (valid UTF-8 cannot fake these
# sequences). Blocks reach it with every line ended by LF alone.
_UNICODE_SPACES = rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
_SPACE = rb"(?:[\t\x0b\x0c\x1c-\x1f ]|" + _UNICODE_SPACES + rb")"
_BLANK_LINE = re.compile(rb"^" + _SPACE + rb"*\n", re.MULTILINE)

# What a damaged input file raises while it is decompressed or parsed.
UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)
del bz2  # bz2 raises OSError

_invalid_utf8 = threading.local()


def _replace_and_count(error: UnicodeDecodeError):
    _invalid_utf8.count = getattr(_invalid_utf8, "count", 0) + 1
    return "\ufffd", error.end


@functools.cache
def _replace() -> str:
    """The name of the codec error handler that replaces and counts (registered when first needed)."""
    codecs.register_error("mlmprep.replace", _replace_and_count)
    return "mlmprep.replace"


def invalid_utf8_count() -> int:
    """Invalid UTF-8 sequences replaced so far in this thread."""
    return getattr(_invalid_utf8, "count", 0)


class _InvalidUtf8:
    """Counts, per document, the invalid UTF-8 replaced since the document before."""

    def __init__(self, counts):
        self._counts = counts
        self._seen = invalid_utf8_count()

    def note(self) -> None:
        """A document was read: what was replaced since the last call is its."""
        now = invalid_utf8_count()
        if now != self._seen:
            self._counts["documents_with_invalid_utf8"] += 1
            self._counts["invalid_utf8_sequences"] += now - self._seen
            self._seen = now

    def skip(self) -> None:
        """Forgets what was replaced since the last call (it was counted another way)."""
        self._seen = invalid_utf8_count()


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


# ASCII whitespace as str.split sees it, but for the control characters cleaning removed.
_SPACES = bytes.maketrans(b"\t\n\r\x0b\x0c", b"     ")


# Whitespace str.split cuts at beyond ASCII's (a character class: one fast scan).
_UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _ascii_normalized(data: bytes) -> bytes:
    """``b" ".join(data.split())`` without making a bytes object per word.

    For cleaned UTF-8 without Unicode's own whitespace, this is what
    ``str.split`` and a join give: no byte of a multi-byte character is ASCII.
    """
    data = data.translate(_SPACES)
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data.strip(b" ")


def _normalized(pieces: list[str], data: bytes) -> bytes:
    """UTF-8 of a document's words joined by single spaces (``data``: its UTF-8 text).

    A long document's pieces are normalized each and joined by a space, as
    they always were: a piece cut where no whitespace was splits a word.
    """
    if len(pieces) == 1 and (data.isascii() or not _UNICODE_SPACE.search(pieces[0])):
        return _ascii_normalized(data)
    words = (" ".join(piece.split()) for piece in pieces)
    return " ".join(w for w in words if w).encode("utf-8", "surrogatepass")


def document_keys(docs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(keys, copy keys) of documents, uint64: hashes of their whitespace-normalized text and of their text.

    The key is a document's identity for deduplication and the split; the
    copy key says which of several copies with one key is kept.
    """
    exact = ["".join(pieces).encode("utf-8", "surrogatepass") for pieces in docs]
    return keys.content_keys_of(map(_normalized, docs, exact)), keys.content_keys_of(exact)


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
            # Cut before the whitespace: the space stays with the word after it, as byte-level BPE and
            # Metaspace tokenizers attach it, so the pieces tokenize as the whole text does.
            space = max(text.rfind(c, 0, self._limit) for c in _CUT_AT)
            cut = space if space > 0 else self._limit  # no whitespace at all: a hard cut
            self.pieces.append(text[:cut])
            self._parts, self._size = [text[cut:]], len(text) - cut

    def finish(self) -> list[str]:
        if self._size:
            self.pieces.append("".join(self._parts))
        pieces, self.pieces, self._parts, self._size = self.pieces, [], [], 0
        return pieces


def split_pieces(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """A text cut at whitespace into pieces of at most ``limit`` characters (none if it is empty)."""
    if len(text) <= limit:
        return [text] if text else []
    builder = _PieceBuilder(limit)
    builder.add(text)
    return builder.finish()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", _replace())


class _DocumentText:
    """The text of the document being read: its lines as bytes while it is short, else pieces.

    Lines come as runs of LF-joined bytes (from blocks) or as decoded chunks
    (a line read alone); a document's lines are joined by LF either way. Bytes
    are decoded only where they end at a line end, so where the decoding
    happens does not change the text.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._raw: list[bytes] = []
        self._raw_bytes = 0
        self._builder = _PieceBuilder(limit)
        self._long = False  # the builder holds some of the text
        self.empty = True
        self.control = False  # it may hold control characters

    def add_lines(self, data: bytes, control: bool = True):
        self._raw.append(data)
        self._raw_bytes += len(data)
        self.empty = False
        self.control = self.control or control
        if self._raw_bytes > 4 * self._limit:
            self._to_builder()

    def add_line(self, chunks: list[str]):
        self._to_builder()
        if not self.empty:
            chunks = ["\n" + chunks[0], *chunks[1:]]
        for chunk in chunks:
            self._builder.add(chunk)
        self._long, self.empty, self.control = True, False, True

    def _to_builder(self):
        if self._raw:
            text = _decode(b"\n".join(self._raw))
            self._builder.add("\n" + text if self._long else text)
            self._raw, self._raw_bytes, self._long = [], 0, True

    def finish(self) -> list[str]:
        if self._long:
            self._to_builder()
            pieces = self._builder.finish()
        else:
            pieces = split_pieces(_decode(b"\n".join(self._raw)), self._limit)
        self._raw, self._raw_bytes, self._long, self.empty, self.control = [], 0, False, True, False
        return pieces


class _Decoder:
    """Decodes a line's chunks; invalid UTF-8 is replaced and counted (once: only lines read)."""

    def __init__(self):
        self._decode = codecs.getincrementaldecoder("utf-8")(errors=_replace()).decode

    def __call__(self, chunks: list[bytes]) -> list[str]:
        if len(chunks) == 1:
            return [self._decode(chunks[0], True)]
        last = len(chunks) - 1  # a chunk may end inside a character; a line may not
        return [self._decode(chunk, i == last) for i, chunk in enumerate(chunks)]


_ASCII_SPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.isspace counts below 0x80


def _blank(chunks: list[bytes]) -> bool:
    """Whether a line is only whitespace, Unicode's included, as ``str.strip`` sees it."""
    rest = b"".join(chunk.strip(_ASCII_SPACE)[:1] for chunk in chunks)
    if not rest or rest[0] < 0x80:  # a line of text fails on its first byte
        return not rest
    # Chunks may end inside a character: decoded as one line, wherever they were cut.
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    return not any(decode(chunk, i == len(chunks) - 1).strip() for i, chunk in enumerate(chunks))


# A document's last LF and the blank lines after it; a line's LF and any blank lines after it.
_DOCUMENT_BREAK = re.compile(rb"\n(?:" + _SPACE + rb"*\n)+")
_LINE_BREAK = re.compile(rb"\n(?:" + _SPACE + rb"*\n)*")
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")


def _has_control(data: bytes) -> bool:
    """Whether UTF-8 bytes may hold a character ``clean`` removes (two C loops, no regex per character)."""
    return len(data.translate(None, _CONTROL_BYTES)) != len(data) or _C1_UTF8.search(data) is not None


class _TextDocuments:
    """Documents of text, fed a block of lines or a single line at a time.

    ``text``: documents are separated by one or more blank lines (the original
    BERT convention), their lines joined by newlines. ``lines``: every
    non-blank line is a document. Offsets are those of LF-ended lines in the
    file; they only matter against ``stop``. Invalid UTF-8 is counted per
    document in ``counts``.
    """

    def __init__(self, input_format: str, limit: int, start: int, stop: int | None, counts):
        self._lines_format = input_format == "lines"
        self._limit = limit
        self._stop = stop
        self._owned = start == 0  # later ranges begin after the tail of a document they do not own
        self._text = _DocumentText(limit)
        self._decoder = _Decoder()
        self._invalid = _InvalidUtf8(counts)
        self.done = False

    def _past(self, offset: int) -> bool:
        return self._stop is not None and offset >= self._stop

    def _emit(self, pieces: list[str]) -> list[str]:
        """A document read; counts the invalid UTF-8 replaced since the one before."""
        self._invalid.note()
        return pieces

    def _whole(self, raws: list[bytes]) -> list[list[str]]:
        """Documents given whole as bytes, decoded and cut into pieces."""
        limit = self._limit
        before = invalid_utf8_count()
        texts = [_decode(raw) for raw in raws]
        if invalid_utf8_count() != before:  # seldom: decoded once more, to count per document
            self._invalid.skip()
            for raw in raws:
                self._emit(_decode(raw))
        return [[text] if len(text) <= limit else split_pieces(text, limit) for text in texts]

    def block(self, block: bytes, offset: int) -> Iterator[tuple[list[list[str]], bool]]:
        """The documents a block of lines ends or holds, in batches, each with whether it may hold control
        characters. The block's lines end with LF alone, its last one too.
        """
        if self._stop is None or offset + len(block) <= self._stop:  # no line of it is past the stop
            control = _has_control(block)
            if self._lines_format:
                yield self._whole([line for line in _LINE_BREAK.split(b"\n" + block) if line]), control
                return
            if self._owned:
                yield from self._documents(block, control)
                return
        for doc in self._lines_of_block(block, offset):
            yield [doc], True

    def _documents(self, block: bytes, control: bool) -> Iterator[tuple[list[list[str]], bool]]:
        """A block's documents, cut by one regular expression: the one it continues, whole ones, and the
        one it opens."""
        parts = _DOCUMENT_BREAK.split(b"\n" + block)
        text = self._text
        if len(parts) == 1:
            text.add_lines(block[:-1], control)
            return
        if len(parts[0]) > 1:
            text.add_lines(parts[0][1:], control)
        if not text.empty:
            carried = text.control
            yield [self._emit(text.finish())], carried
        yield self._whole(parts[1:-1]), control
        if parts[-1]:
            text.add_lines(parts[-1][:-1], control)

    def _lines_of_block(self, block: bytes, offset: int) -> Iterator[list[str]]:
        """A block's documents, blank line by blank line: where the range starts or stops."""
        pos = 0
        for blank in _BLANK_LINE.finditer(block):
            start = blank.start()
            if start > pos:
                yield from self._run(block, pos, start, offset)
                if self.done:
                    return
            if not self._lines_format and not self._text.empty:
                yield self._emit(self._text.finish())
            if self._past(offset + start):
                self.done = True
                return
            self._owned = True
            pos = blank.end()
        if pos < len(block):
            yield from self._run(block, pos, len(block), offset)

    def _run(self, block: bytes, start: int, end: int, offset: int) -> Iterator[list[str]]:
        """Consecutive non-blank lines ``block[start:end]``."""
        if self._lines_format:
            for line in block[start : end - 1].split(b"\n"):
                if self._past(offset + start):
                    self.done = True
                    return
                yield self._emit(split_pieces(_decode(line), self._limit))
                start += len(line) + 1
        elif self._owned:
            self._text.add_lines(block[start : end - 1])
        elif self._stop is not None:
            last = block.rfind(b"\n", start, end - 1)  # the run's last line starts after it
            self.done = self._past(offset + (start if last < 0 else last + 1))

    def line(self, offset: int, chunks: list[bytes]) -> list[list[str]]:
        """The document one line (in chunks, at LF-line ``offset``) ends or is, if any."""
        blank = _blank(chunks)
        past = self._past(offset)
        if self._lines_format:
            if past:
                self.done = True
            elif not blank:
                builder = _PieceBuilder(self._limit)
                for chunk in self._decoder(chunks):
                    builder.add(chunk)
                return [self._emit(builder.finish())]
            return []
        if blank:
            self.done = past
            self._owned = True
            if not self._text.empty:
                return [self._emit(self._text.finish())]
        elif self._owned:
            self._text.add_line(self._decoder(chunks))
        else:
            self.done = past
        return []

    def finish(self) -> list[list[str]]:
        return [] if self._text.empty else [self._emit(self._text.finish())]


def _read_line(stream, limit: int | None) -> tuple[list[bytes], int]:
    """One LF-ended line in chunks of at most ``limit`` bytes (None: whole), LF stripped; bytes read."""
    chunks, size = [], 0
    while True:
        data = stream.readline(-1 if limit is None else limit)
        if not data:
            return chunks, size
        size += len(data)
        if data.endswith(b"\n"):
            chunks.append(data[:-1])
            return chunks, size
        chunks.append(data)


def _split_at_cr(chunks: list[bytes]) -> Iterator[list[bytes]]:
    """One LF-ended line's lines: CRLF is LF, and a lone CR ends a line too, as Python's text files."""
    if len(chunks) > 1 and not chunks[-1]:  # the LF came alone, after a full chunk
        chunks.pop()
    if chunks[-1].endswith(b"\r"):
        chunks[-1] = chunks[-1][:-1]
    if not any(b"\r" in chunk for chunk in chunks):
        yield chunks
        return
    line = []
    for chunk in chunks:
        first, *rest = chunk.split(b"\r")
        line.append(first)
        for part in rest:
            yield line
            line = [part]
    yield line


def _peekable(stream):
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream, BLOCK_BYTES)


def _blocks_and_lines(stream, limit: int | None, start: int, stop: int | None):
    """``("block", offset, bytes)`` for runs of whole lines, ``("line", offset, chunks)`` for the others.

    A block's lines end with LF alone (CRLF and lone CRs are made LFs, which
    moves offsets, so a block with a CR is only taken where offsets cannot
    matter: before ``stop``); a line is read alone where it does not end in
    the read buffer, and near ``stop`` in a file with CRs.
    """
    stream = _peekable(stream)
    offset, one_by_one = start, False
    while True:
        if not one_by_one:
            data = stream.peek(BLOCK_BYTES)[:BLOCK_BYTES]
            if not data:
                return
            end = data.rfind(b"\n") + 1
            if end:
                has_cr = b"\r" in data[:end]
                if not (has_cr and stop is not None and offset + end > stop):
                    block = stream.read(end)
                    if has_cr:
                        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                    yield "block", offset, block
                    offset += end
                    continue
                one_by_one = True  # what remains of this range: a few lines past the stop
        chunks, size = _read_line(stream, limit)
        if not size:
            return
        for line in _split_at_cr(chunks):
            yield "line", offset, line
        offset += size


def iter_text_batches(
    stream,
    input_format: str,
    limit: int = PIECE_CHARS,
    *,
    start: int = 0,
    stop: int | None = None,
    counts: collections.Counter | None = None,
) -> Iterator[list[list[str]]]:
    """Documents of a binary text stream positioned at line offset ``start``, a block's worth at a time.

    Each document comes as its pieces, cleaned of control characters, the
    empty ones dropped; ``counts`` gets what was read and dropped.

    With ``stop``, only the documents of the byte range [start, stop) are read,
    so that ranges of one file can be read apart and together read every
    document once: a line belongs to the range it starts in; a ``text``
    document, to the range where the last blank line before it starts (the
    first range owns the file's first document).
    """
    counts = collections.Counter() if counts is None else counts
    reader = _TextDocuments(input_format, limit, start, stop, counts)
    for kind, offset, data in _blocks_and_lines(stream, limit, start, stop):
        batches = reader.block(data, offset) if kind == "block" else [(reader.line(offset, data), True)]
        for docs, control in batches:
            if docs:
                yield accepted(docs, counts, control=control)
        if reader.done:
            return
    docs = reader.finish()
    if docs:
        yield accepted(docs, counts, control=True)


def iter_text_documents(
    stream, input_format: str, limit: int = PIECE_CHARS, *, start: int = 0, stop: int | None = None
) -> Iterator[list[str]]:
    """The documents of ``iter_text_batches``, one at a time."""
    for batch in iter_text_batches(stream, input_format, limit, start=start, stop=stop):
        yield from batch


def accepted(docs: list[list[str]], counts, *, control: bool = True, blank: bool = False) -> list[list[str]]:
    """Documents read, cleaned of control characters (where they may hold some), the empty ones dropped.

    Every document read is kept or counted as dropped: ``counts`` gets them
    all, by reason. ``blank``: documents may be only whitespace as read (a
    JSONL or Parquet value; a document of text has a line that is not blank).
    """
    counts["documents_read"] += len(docs)
    if not (control or blank):
        kept, characters = docs, sum(len(p) for pieces in docs for p in pieces)
    else:
        kept, characters = [], 0
        for read in docs:
            pieces = read
            if control and any(_CONTROL.search(p) for p in read):
                pieces = [clean(p) for p in read]
                counts["documents_with_control_characters"] += 1
            elif not blank:  # text with a line that is not blank, and nothing removed from it
                kept.append(pieces)
                characters += sum(map(len, read))
                continue
            if all(not p or p.isspace() for p in pieces):
                counts["documents_dropped.empty"] += 1
                continue
            kept.append(pieces)
            characters += sum(map(len, read))
    counts["characters_read"] += characters
    split = [len(pieces) for pieces in kept if len(pieces) > 1]
    if split:
        counts["documents_split_into_pieces"] += len(split)
        counts["pieces_of_split_documents"] += sum(split)
    return kept


def iter_jsonl_lines(stream, *, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """The decoded lines of a JSONL stream (or of its byte range [start, stop)), each whole."""
    for kind, offset, data in _blocks_and_lines(stream, None, start, stop):
        if kind == "line":
            if stop is not None and offset >= stop:
                return
            yield _decode(b"".join(data))
            continue
        lines = data[:-1].split(b"\n")
        if stop is None or offset + len(data) <= stop:
            yield from map(_decode, lines)
            continue
        for line in lines:
            if offset >= stop:
                return
            yield _decode(line)
            offset += len(line) + 1


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


@dataclasses.dataclass
class DocumentBatch:
    """Documents read together, on their way to the tokenizer."""

    docs: list[list[str]]  # each document's pieces
    keys: np.ndarray | None = None  # uint64 document keys, where the job needs them (split, concat)

    @property
    def nbytes(self) -> int:
        """About what the batch holds: its text (a character is 1 to 4 bytes; here 1)."""
        return sum(len(piece) for pieces in self.docs for piece in pieces)


def row_group_offsets(metadata: pq.FileMetaData) -> list[int]:
    """The byte where each row group starts: its first column chunk's first page (dictionary or data)."""
    offsets = []
    for i in range(metadata.num_row_groups):
        column = metadata.row_group(i).column(0)
        pages = [column.data_page_offset]
        if column.has_dictionary_page and column.dictionary_page_offset:
            pages.append(column.dictionary_page_offset)
        offsets.append(min(pages))
    return offsets


class FileRange(NamedTuple):
    """Bytes [start, stop) of a file; ``stop`` None: to its end."""

    path: str
    start: int = 0
    stop: int | None = None
    size: int = 0  # the file's, where known: how much of the input the range is

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
        yield FileRange(path, start, stop, size)


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
            if fmt == "parquet":
                yield from self._values(self._parquet_values(raw, start, stop))  # seeks: the file itself
                return
            # The binary check looks at the file's first block, not the range's.
            head = raw.read(BINARY_SNIFF_BYTES) if start and fmt != "jsonl" else None
            stream, start = open_at_line(raw, start)
            if head is None:
                head = stream.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]
            if fmt == "jsonl":
                yield from self._values(self._jsonl_values(stream, start, stop))
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

    def _jsonl_values(self, stream, start, stop):
        invalid = _InvalidUtf8(self.counts)
        for line in iter_jsonl_lines(stream, start=start, stop=stop):
            invalid.note()  # per line, as a line is a document
            if not line.strip():
                continue
            try:
                value = json.loads(line)[self.text_field]
            except (ValueError, TypeError, KeyError, IndexError):
                self._drop("malformed_json")
                continue
            if not isinstance(value, str):
                self._drop("no_text_field")
                continue
            yield value

    def _parquet_values(self, handle, start: int, stop: int | None):
        """The text values of the row groups that start in [start, stop)."""
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowException as e:
            if start and not isinstance(e, OSError):
                return  # a damaged footer: every range finds it, the first one counts it
            raise
        row_groups = [
            i
            for i, offset in enumerate(row_group_offsets(parquet.metadata))
            if start <= offset < (stop or math.inf)
        ]
        if self.text_field not in parquet.schema_arrow.names:
            self._drop("no_text_field", sum(parquet.metadata.row_group(i).num_rows for i in row_groups))
            return
        if not row_groups:
            return
        for batch in parquet.iter_batches(batch_size=1024, row_groups=row_groups, columns=[self.text_field]):
            values = batch.column(0).to_pylist()
            texts = [v for v in values if isinstance(v, str)]
            if len(texts) < len(values):
                self._drop("no_text_field", len(values) - len(texts))
            yield from texts

    def _drop(self, reason: str, n: int = 1):
        """Documents read and dropped: every document read is written or dropped for a reason."""
        self.counts["documents_read"] += n
        self.counts[f"documents_dropped.{reason}"] += n
