"""The input as batches of documents, each document once, in two passes that keep text off the shuffles.

The first pass reads every file range for its documents' digests (keys and
place, 28 bytes a document); only those are grouped, to find the copies that
lose. The second pass reads each range again, grouped with its own losers
(range descriptors and indices are all that cross the shuffle), skips them,
and hands the rest in batches to the tokenizer fused after it: a document's
text never leaves the worker that read it. Reading costs a few percent of
tokenizing, so reading twice is cheaper than moving the text.

Without deduplication there is one pass; the ranges are still spread.
"""

import gc
import logging
import math

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import dedup
from mlmprep.transforms.beam import exit_quickly
from mlmprep.transforms.beam.counting import COUNTS, CountingDoFn
from mlmprep.transforms.beam.progress import InputProgress, Progress
from mlmprep.transforms.documents import DocumentBatch, document_keys
from mlmprep.transforms.sources import RANGE_BYTES, DocumentSource, file_ranges

BUCKET_BYTES = 1 << 30  # input per deduplication bucket, whose digests are sorted in one worker's memory
BATCH_CHARS = 1 << 20  # text per batch for the tokenizer: its Encoding objects cost ~100x the ids
DOCUMENTS = "documents"  # the first pass's count of each range's documents


def dedup_bits(input_bytes: int | None) -> int:
    """log2 of the deduplication buckets: one per BUCKET_BYTES of input (unknown: a fine-grained default)."""
    if input_bytes is None:
        return 10
    return max(0, math.ceil(math.log2(max(1, input_bytes) / BUCKET_BYTES)))


class _ReadDigests(beam.DoFn):
    """(range key, FileRange) -> (bucket, digests) of its documents: the first pass, which counts nothing."""

    def __init__(self, readers: tuple, bits: int, progress_dir: str | None = None):
        self._readers = readers
        self._bits = bits
        self._progress_dir = progress_dir
        self._input = None

    def setup(self):
        exit_quickly()
        gc.freeze()  # what this worker has loaded (Beam above all) is never garbage: collections skip it
        self._input = InputProgress(self._progress_dir, "digests")

    def infer_output_type(self, input_type):
        return beam.typehints.Tuple[int, bytes]  # the main output's; counts go to DOCUMENTS

    def process(self, element):
        range_key, file_range = element
        source = _document_source(self._readers, file_range)
        keys, copies = [], []
        for batch in source.batches(file_range):
            batch_keys, batch_copies = document_keys(batch)
            keys.append(batch_keys)
            copies.append(batch_copies)
        count = sum(len(k) for k in keys)
        self._input.add(file_range.nbytes)
        yield beam.pvalue.TaggedOutput(DOCUMENTS, (range_key, count))
        if count:
            digests = dedup.digests(np.concatenate(keys), np.concatenate(copies), range_key)
            for bucket, part in dedup.by_bucket(digests, self._bits):
                yield bucket, part.tobytes()


def _losers(element):
    """(bucket, digests) -> (range key, indices) of the documents that lose, per range."""
    _, parts = element
    for range_key, indices in dedup.losers(np.frombuffer(b"".join(parts), dedup.DIGEST)):
        yield range_key, indices.tobytes()


class _ReadBatches(CountingDoFn):
    """(range key, {"range": [FileRange], "losers": [indices]}) -> DocumentBatch, losers skipped."""

    def __init__(self, readers: tuple, with_keys: bool, progress_dir: str | None = None):
        super().__init__()
        self._readers = readers
        self._with_keys = with_keys
        self._progress_dir = progress_dir
        self._progress = self._input = None

    def setup(self):
        exit_quickly()
        self._progress = Progress("read")
        self._input = InputProgress(self._progress_dir, "tokenize")

    def process(self, element):
        _, grouped = element
        (file_range,) = grouped["range"]
        losers = np.unique(np.frombuffer(b"".join(grouped["losers"]), dedup.INDEX)).tolist()
        source = _document_source(self._readers, file_range)
        pending, pending_since, next_loser, read, skipped = [], 0, 0, 0, 0
        for batch in source.batches(file_range):
            if next_loser < len(losers) and losers[next_loser] < read + len(batch):
                kept = []
                for index, doc in enumerate(batch, read):
                    if next_loser < len(losers) and index == losers[next_loser]:
                        next_loser += 1
                    else:
                        kept.append(doc)
                skipped += len(batch) - len(kept)
                read += len(batch)
                batch = kept
            else:
                read += len(batch)
            pending += batch
            if source.counts["characters_read"] - pending_since >= BATCH_CHARS:
                yield self._batch(pending, file_range.source)
                pending, pending_since = [], source.counts["characters_read"]
        if pending:
            yield self._batch(pending, file_range.source)
        first_pass = grouped.get(DOCUMENTS)
        if skipped != len(losers) or (first_pass and first_pass[0] != read):
            # A file edited during the job, or a read cut short (an I/O error on a compressed
            # file ends its read as damage would): the runner retries; a real change fails again.
            raise RuntimeError(
                f"{file_range.path}: {read} documents read where the first pass read "
                f"{first_pass[0] if first_pass else read}: the file changed, or a read failed"
            )
        for path, error in source.unreadable:
            logging.warning("mlmprep: cannot read %s after its valid part: %s", path, error)
        self.count("documents_dropped.duplicate", skipped)
        for name, n in source.counts.items():
            self.count(name, n)
        self._progress.update(documents=read, characters=source.counts["characters_read"])
        self._input.add(file_range.nbytes)

    def _batch(self, docs, source: int):
        return DocumentBatch(docs, document_keys(docs)[0] if self._with_keys else None, source)


def _document_source(readers: tuple, file_range) -> DocumentSource:
    input_format, text_field = readers[file_range.source]
    return DocumentSource(FileSystems.open, input_format=input_format, text_field=text_field)


def split_file(
    path: str, size: int, input_format: str = "auto", range_bytes: int = RANGE_BYTES, source: int = 0
):
    """``sources.file_ranges``, compressed files (by Beam's reading of their suffix) read whole."""
    compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
    return file_ranges(path, size, input_format, range_bytes, compressed=compressed, source=source)


def _split(file, formats: list[str], range_bytes: int):
    source, path, size = file
    return split_file(path, size, formats[source], range_bytes, source)


def _matches(source: int, pattern: str):
    """(source, path, size) of each file a pattern matches (``fileio.MatchAll``'s match, with the source
    the pattern is of)."""
    for m in FileSystems.match([pattern])[0].metadata_list:
        if not m.path.endswith("/"):
            yield source, m.path, m.size_in_bytes


class ReadDocuments(beam.PTransform):
    """(source, file pattern) -> DocumentBatch of about BATCH_CHARS, every document read once (deduplicated
    across every source).

    ``readers``: each source's (input format, text field), by source index.
    """

    def __init__(self, *, readers: tuple, range_bytes: int, dedup: bool, with_keys: bool, dedup_bits: int,
                 progress_dir: str | None = None):  # fmt: skip
        super().__init__()
        self._progress_dir = (
            progress_dir  # a local folder the readers note their progress in (ProgressMonitor)
        )
        self._readers = tuple(readers)
        self._range_bytes = range_bytes
        self._dedup = dedup
        self._with_keys = with_keys
        self._bits = dedup_bits

    def expand(self, patterns):
        formats = [input_format for input_format, _ in self._readers]
        ranges = (
            patterns
            | "MatchFiles" >> beam.FlatMapTuple(_matches)
            | "OncePerFile" >> beam.Distinct()  # a file two patterns match is still one file
            | "SplitFiles" >> beam.FlatMap(_split, formats, self._range_bytes)
            | "KeyRanges" >> beam.Map(lambda r: (r.key(), r))
        )
        if self._dedup:
            digests = (
                ranges
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadDigests"
                >> beam.ParDo(_ReadDigests(self._readers, self._bits, self._progress_dir)).with_outputs(
                    DOCUMENTS, main="digests"
                )
            )
            losers = (
                digests.digests | "GroupDigests" >> beam.GroupByKey() | "FindLosers" >> beam.FlatMap(_losers)
            )
            work = {
                "range": ranges,
                "losers": losers,
                DOCUMENTS: digests[DOCUMENTS],
            } | "RangesWithLosers" >> beam.CoGroupByKey()
        else:
            work = (
                ranges
                | "SpreadRanges" >> beam.Reshuffle()
                | "NoLosers" >> beam.MapTuple(lambda key, r: (key, {"range": [r], "losers": []}))
            )
        read = _ReadBatches(self._readers, self._with_keys, self._progress_dir)
        read = beam.ParDo(read).with_output_types(DocumentBatch)
        return work | "ReadBatches" >> read.with_outputs(COUNTS, main="batches")
