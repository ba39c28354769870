"""Reading documents out of text files.

A file is read as a stream of lines, never whole, so memory does not grow with
file size. Splitting one file across workers would need byte offsets that land
on document boundaries; instead each file is read by one worker and the
documents are spread out afterwards (``Reshuffle``), which is where the cost is.
"""

import io
from collections.abc import Iterable, Iterator

from mlmprep.transforms import keys
from mlmprep.transforms.counting import CountingDoFn

FORMATS = ("text", "lines")


def iter_documents(lines: Iterable[str], input_format: str) -> Iterator[str]:
    """Documents of a text stream.

    ``text``: documents are separated by one or more blank lines (the original
    BERT convention); the lines of a document are kept, joined by newlines.
    ``lines``: every non-blank line is a document.
    """
    if input_format == "lines":
        for line in lines:
            if line.strip():
                yield line.rstrip("\r\n")
        return
    document = []
    for line in lines:
        if line.strip():
            document.append(line.rstrip("\r\n"))
        elif document:
            yield "\n".join(document)
            document = []
    if document:
        yield "\n".join(document)


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


def text_lines(handle) -> io.TextIOWrapper:
    """A streaming UTF-8 line reader over a Beam file handle (decompressed or not)."""
    buffered = io.BufferedReader(_RawStream(handle), buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="replace")


class ReadDocuments(CountingDoFn):
    """ReadableFile -> (document_key, text), the key a hash of the text."""

    def __init__(self, input_format: str):
        super().__init__()
        self._input_format = input_format

    def process(self, readable_file):
        with readable_file.open() as raw:  # decompresses by suffix
            self.count("files_read")
            for text in iter_documents(text_lines(raw), self._input_format):
                self.count("documents_read")
                data = text.encode("utf-8")
                if "\ufffd" in text:
                    self.count("documents_with_invalid_utf8")
                yield keys.content_key(data), text
