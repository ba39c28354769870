"""Documents as the job keeps them: cleaned text in bounded pieces, counted, and keyed by their content.

Every reader (``text_input``, ``jsonl_input``, ``parquet_input``) hands its
documents to ``accepted``, which cleans them and counts what it drops, so
that every document read is written or dropped for a reason. A document
longer than ``PIECE_CHARS`` is cut, at whitespace, into pieces that are
tokenized separately. Nothing here knows Beam.
"""

import codecs
import dataclasses
import functools
import re
import threading

import numpy as np

from mlmprep.transforms import keys

FORMATS = ("text", "lines", "jsonl", "parquet")
PIECE_CHARS = 1 << 16
BLOCK_BYTES = 1 << 20  # text cut into documents at once; also the read buffer
_CUT_AT = (" ", "\n", "\t", "\u3000")  # whitespace a piece may end at, so no word is cut

# ANSI/VT100 escape sequences (colors, cursor moves) and C0/C1 control
# characters other than tab and newline: terminal noise, never text.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # ESC, which starts every escape, included

_invalid_utf8 = threading.local()


def _replace_and_count(error: UnicodeDecodeError):
    _invalid_utf8.count = getattr(_invalid_utf8, "count", 0) + 1
    return "\ufffd", error.end


@functools.cache
def counting_replace() -> str:
    """The name of the codec error handler that replaces and counts (registered when first needed)."""
    codecs.register_error("mlmprep.replace", _replace_and_count)
    return "mlmprep.replace"


def invalid_utf8_count() -> int:
    """Invalid UTF-8 sequences replaced so far in this thread."""
    return getattr(_invalid_utf8, "count", 0)


class InvalidUtf8:
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


class PieceBuilder:
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
    builder = PieceBuilder(limit)
    builder.add(text)
    return builder.finish()


def decode_utf8(data: bytes) -> str:
    return data.decode("utf-8", counting_replace())


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


@dataclasses.dataclass
class DocumentBatch:
    """Documents read together, on their way to the tokenizer."""

    docs: list[list[str]]  # each document's pieces
    keys: np.ndarray | None = None  # uint64 document keys, where the job needs them (split, concat)
    source: int = 0  # the build's source they were read from (a batch is one range's)

    @property
    def nbytes(self) -> int:
        """About what the batch holds: its text (a character is 1 to 4 bytes; here 1)."""
        return sum(len(piece) for pieces in self.docs for piece in pieces)
