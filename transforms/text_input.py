"""Documents of text files: blank-line separated (``text``) or one per line (``lines``).

A file is streamed, never read whole. Text is cut into documents a block of
lines at a time: the blank lines between documents are found by one regular
expression over the block's bytes, so the cost per document is a few string
operations, not a Python loop over its lines. Lines the block path cannot
take (a line longer than a block, carriage returns next to the end of a
range) are read one at a time, in chunks of at most ``PIECE_CHARS`` bytes, so
even a 50 MB line never becomes one string.

A large uncompressed file is read as byte ranges on several workers, as
Beam's own text reads split files. A line belongs to the range it starts in,
and a document of blank-line separated text to the range in which the last
blank line before it starts, so the ranges of a file together yield each of
its documents exactly once.
"""

import codecs
import collections
import io
import re
from collections.abc import Iterable, Iterator

from mlmprep.transforms.documents import (
    BLOCK_BYTES,
    PIECE_CHARS,
    InvalidUtf8,
    PieceBuilder,
    accepted,
    counting_replace,
    decode_utf8,
    invalid_utf8_count,
    split_pieces,
)

# A blank line: nothing but whitespace as str.isspace sees it, Unicode's
# included, matched in UTF-8 without decoding (valid UTF-8 cannot fake these
# sequences). Blocks reach it with every line ended by LF alone.
_UNICODE_SPACES = rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
_SPACE = rb"(?:[\t\x0b\x0c\x1c-\x1f ]|" + _UNICODE_SPACES + rb")"
_BLANK_LINE = re.compile(rb"^" + _SPACE + rb"*\n", re.MULTILINE)


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
        self._builder = PieceBuilder(limit)
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
            text = decode_utf8(b"\n".join(self._raw))
            self._builder.add("\n" + text if self._long else text)
            self._raw, self._raw_bytes, self._long = [], 0, True

    def finish(self) -> list[str]:
        if self._long:
            self._to_builder()
            pieces = self._builder.finish()
        else:
            pieces = split_pieces(decode_utf8(b"\n".join(self._raw)), self._limit)
        self._raw, self._raw_bytes, self._long, self.empty, self.control = [], 0, False, True, False
        return pieces


class _Decoder:
    """Decodes a line's chunks; invalid UTF-8 is replaced and counted (once: only lines read)."""

    def __init__(self):
        self._decode = codecs.getincrementaldecoder("utf-8")(errors=counting_replace()).decode

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
        self._invalid = InvalidUtf8(counts)
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
        texts = [decode_utf8(raw) for raw in raws]
        if invalid_utf8_count() != before:  # seldom: decoded once more, to count per document
            self._invalid.skip()
            for raw in raws:
                self._emit(decode_utf8(raw))
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
                yield self._emit(split_pieces(decode_utf8(line), self._limit))
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
                builder = PieceBuilder(self._limit)
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


def blocks_and_lines(stream, limit: int | None, start: int, stop: int | None):
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
    for kind, offset, data in blocks_and_lines(stream, limit, start, stop):
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


def iter_documents(lines: Iterable[str], input_format: str) -> Iterator[str]:
    """Whole documents of an in-memory text (tests, benchmarks)."""
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8")
    for pieces in iter_text_documents(io.BytesIO(data), input_format):
        yield "".join(pieces)
