"""Documents of JSONL files: the text field of each line's object.

A line is parsed whole, so a record is one string; ranges of a large file
are read apart as text's are (a line belongs to the range it starts in).
"""

import json
from collections.abc import Callable, Iterator

from mlmprep.transforms.documents import InvalidUtf8, decode_utf8
from mlmprep.transforms.text_input import blocks_and_lines


def iter_jsonl_lines(stream, *, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """The decoded lines of a JSONL stream (or of its byte range [start, stop)), each whole."""
    for kind, offset, data in blocks_and_lines(stream, None, start, stop):
        if kind == "line":
            if stop is not None and offset >= stop:
                return
            yield decode_utf8(b"".join(data))
            continue
        lines = data[:-1].split(b"\n")
        if stop is None or offset + len(data) <= stop:
            yield from map(decode_utf8, lines)
            continue
        for line in lines:
            if offset >= stop:
                return
            yield decode_utf8(line)
            offset += len(line) + 1


def jsonl_values(
    stream, text_field: str, counts, drop: Callable[..., None], *, start: int = 0, stop: int | None = None
) -> Iterator[str]:
    """The text values of a JSONL stream's lines; a line that is not an object with the field is dropped."""
    invalid = InvalidUtf8(counts)
    for line in iter_jsonl_lines(stream, start=start, stop=stop):
        invalid.note()  # per line, as a line is a document
        if not line.strip():
            continue
        try:
            value = json.loads(line)[text_field]
        except (ValueError, TypeError, KeyError, IndexError):
            drop("malformed_json")
            continue
        if not isinstance(value, str):
            drop("no_text_field")
            continue
        yield value
