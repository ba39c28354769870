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
from apache_beam.utils.shared import Shared

from mlmprep.transforms import dedup, near_dedup
from mlmprep.transforms.beam import exit_quickly
from mlmprep.transforms.beam import near_dedup as beam_near_dedup
from mlmprep.transforms.beam.counting import COUNTS, CountingDoFn
from mlmprep.transforms.beam.progress import InputProgress, Progress
from mlmprep.transforms.documents import DocumentBatch, document_keys
from mlmprep.transforms.sources import RANGE_BYTES, DocumentSource, file_ranges

BUCKET_BYTES = 1 << 30  # input per deduplication bucket, whose digests are sorted in one worker's memory
BATCH_CHARS = 1 << 20  # text per batch for the tokenizer: its Encoding objects cost ~100x the ids
DOCUMENTS = "documents"  # the first pass's count of each range's documents
BANDS, CONTAMINATED = "bands", "contaminated"  # the first pass's band keys, and its contaminated documents
NEAR, EXAMPLE_DOCS = "near", "example_docs"  # per range: near-duplicates that lose, and example documents
EXAMPLE_TEXTS, CONTAMINATION = "example_texts", "contamination"  # texts for the manifest
EXAMPLE_DOC = np.dtype([("index", "<u4"), ("key", "<u8")])
BAND_BUCKET_BYTES = 8 << 20  # input per bucket of band keys: 14 entries of 72 bytes a document


def band_bits(input_bytes: int | None) -> int:
    """log2 of the buckets of band keys (and of near-duplicate edges): one per BAND_BUCKET_BYTES of
    input (unknown: 10)."""
    if input_bytes is None:
        return 10
    return min(16, max(0, math.ceil(math.log2(max(1, input_bytes) / BAND_BUCKET_BYTES))))


def dedup_bits(input_bytes: int | None) -> int:
    """log2 of the deduplication buckets: one per BUCKET_BYTES of input (unknown: a fine-grained default)."""
    if input_bytes is None:
        return 10
    return max(0, math.ceil(math.log2(max(1, input_bytes) / BUCKET_BYTES)))


class _ReadDigests(beam.DoFn):
    """(range key, FileRange) -> (bucket, digests) of its documents: the first pass, which counts nothing.

    With near-duplicate removal, also each document's band keys (BANDS); with
    decontamination, the documents that share an n-gram with the evaluation
    text (CONTAMINATED, per range; their band keys are left out) and a few of
    them as examples (CONTAMINATION).
    """

    def __init__(self, readers: tuple, bits: int, progress_dir: str | None = None, *,
                 near: near_dedup.NearDedupConfig | None = None,
                 decontamination: beam_near_dedup.Decontamination | None = None):  # fmt: skip
        self._readers = readers
        self._bits = bits
        self._progress_dir = progress_dir
        self._near = near
        self._decontamination = decontamination
        self._shared = Shared()
        self._input = self._evaluation = None

    def setup(self):
        exit_quickly()
        gc.freeze()  # what this worker has loaded (Beam above all) is never garbage: collections skip it
        self._input = InputProgress(self._progress_dir, "digests")
        if self._decontamination is not None:  # one copy a worker process, whatever its threads
            self._evaluation = self._shared.acquire(
                lambda: beam_near_dedup.EvaluationNgrams(self._decontamination), tag=self._decontamination
            )

    def infer_output_type(self, input_type):
        return beam.typehints.Tuple[int, bytes]  # the main output's; counts go to DOCUMENTS

    def process(self, element):
        range_key, file_range = element
        source = _document_source(self._readers, file_range)
        keys, copies, bands, dirty, examples = [], [], [], [], []
        count = 0
        for batch in source.batches(file_range):
            batch_keys, batch_copies = document_keys(batch)
            keys.append(batch_keys)
            copies.append(batch_copies)
            if self._near is not None or self._evaluation is not None:
                texts = ["".join(pieces) for pieces in batch]
                clean = np.ones(len(texts), dtype=bool)
                if self._evaluation is not None:
                    items = self._evaluation.match(texts)
                    hit = np.flatnonzero(items >= 0)
                    clean[hit] = False
                    dirty.append((hit + count).astype(dedup.INDEX))
                    for i in hit[: max(0, beam_near_dedup.EXAMPLE_PAIRS - len(examples))].tolist():
                        examples.append((int(batch_keys[i]), int(items[i]), texts[i]))
                if self._near is not None:
                    sigs, has = near_dedup.signatures(texts, self._near)
                    bands.append(near_dedup.entries(batch_keys, sigs, has & clean, self._near))
            count += len(batch)
        self._input.add(file_range.nbytes)
        yield beam.pvalue.TaggedOutput(DOCUMENTS, (range_key, count))
        if count:
            digests = dedup.digests(np.concatenate(keys), np.concatenate(copies), range_key)
            for bucket, part in dedup.by_bucket(digests, self._bits):
                yield bucket, part.tobytes()
        entries = np.concatenate(bands) if bands else ()
        if len(entries):
            yield beam.pvalue.TaggedOutput(BANDS, beam_near_dedup.band_batch(entries, self._near))
        if dirty and sum(map(len, dirty)):
            yield beam.pvalue.TaggedOutput(CONTAMINATED, (range_key, np.concatenate(dirty).tobytes()))
        for key, item, text in examples:
            item_text = self._evaluation.texts[item][: beam_near_dedup.EXAMPLE_CHARS]
            label = self._evaluation.labels[item]
            yield beam.pvalue.TaggedOutput(
                CONTAMINATION, (key, label, item_text, text[: beam_near_dedup.EXAMPLE_CHARS])
            )


def _losers(element, exact: bool = True, examples=(), clusters=()):
    """(bucket, {"digests", "near"}) -> (range key, indices) of the documents that lose to an exact copy;
    on NEAR those of the near-duplicate keys that lose (the copy exact deduplication kept, or every
    copy without it), and on EXAMPLE_DOCS where the example pairs' and largest clusters' documents are."""
    _, grouped = element
    digests = np.frombuffer(b"".join(grouped["digests"]), dedup.DIGEST)
    if exact:
        for range_key, indices in dedup.losers(digests):
            yield range_key, indices.tobytes()
    near = grouped.get(NEAR)
    if not (near or examples or clusters):
        return
    firsts = dedup.firsts(digests)
    kept = firsts if exact else digests
    if near:
        lost = kept[np.isin(kept["key"], np.frombuffer(b"".join(near), "<u8"))]
        for range_key, indices in dedup.by_range(lost):
            yield beam.pvalue.TaggedOutput(NEAR, (range_key, indices.tobytes()))
    wanted = [k for _, a, b, _ in examples for k in (a, b)] + [root for _, root in clusters]
    shown = firsts[np.isin(firsts["key"], np.array(wanted, dtype=np.uint64))]
    shown = shown[np.lexsort((shown["index"], shown["range"]))]
    ranges, starts = np.unique(shown["range"], return_index=True)
    for range_key, part in zip(ranges.tolist(), np.split(shown, starts[1:])):
        docs = np.empty(len(part), EXAMPLE_DOC)
        docs["index"], docs["key"] = part["index"], part["key"]
        yield beam.pvalue.TaggedOutput(EXAMPLE_DOCS, (range_key, docs.tobytes()))


def _indices(parts) -> np.ndarray:
    return np.unique(np.frombuffer(b"".join(parts), dedup.INDEX))


class _ReadBatches(CountingDoFn):
    """(range key, {"range": [FileRange], "losers": [indices], ...}) -> DocumentBatch, losers skipped.

    Each document skipped is counted once, by the first reason of: an exact
    duplicate, contaminated, a near-duplicate.
    """

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
        duplicate = _indices(grouped["losers"])
        contaminated = np.setdiff1d(_indices(grouped.get(CONTAMINATED, ())), duplicate)
        near = np.setdiff1d(_indices(grouped.get(NEAR, ())), np.union1d(duplicate, contaminated))
        losers = np.union1d(np.union1d(duplicate, contaminated), near).tolist()
        shown = np.frombuffer(b"".join(grouped.get(EXAMPLE_DOCS, ())), EXAMPLE_DOC)
        shown = dict(zip(shown["index"].tolist(), shown["key"].tolist()))
        source = _document_source(self._readers, file_range)
        pending, pending_since, next_loser, read, skipped = [], 0, 0, 0, 0
        for batch in source.batches(file_range):
            for index in (i for i in shown if read <= i < read + len(batch)):
                text = "".join(batch[index - read])[: beam_near_dedup.EXAMPLE_CHARS]
                yield beam.pvalue.TaggedOutput(EXAMPLE_TEXTS, (shown[index], text))
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
        self.count("documents_dropped.duplicate", len(duplicate))
        for reason, dropped in (("contaminated", contaminated), ("near_duplicate", near)):
            self.count(f"documents_dropped.{reason}", len(dropped))
            self.count(f"source_dropped.{file_range.source}.{reason}", len(dropped))
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
    """(source, file pattern) -> {"batches": DocumentBatch of about BATCH_CHARS, every document read once
    (deduplicated across every source); "counts"; "near_dedup": one dict of what near-duplicate removal
    and decontamination found (``near_dedup.summary``), only with them}.

    ``readers``: each source's (input format, text field), by source index.
    """

    def __init__(
        self,
        *,
        readers: tuple,
        range_bytes: int,
        dedup: bool,
        with_keys: bool,
        dedup_bits: int,
        progress_dir: str | None = None,
        near: near_dedup.NearDedupConfig | None = None,
        band_bits: int = 10,
        rounds: int = beam_near_dedup.MAX_ROUNDS,
        grouping: str = "shuffle",
        temp_dir: str | None = None,
        decontamination: beam_near_dedup.Decontamination | None = None,
    ):
        super().__init__()
        self._progress_dir = (
            progress_dir  # a local folder the readers note their progress in (ProgressMonitor)
        )
        self._readers = tuple(readers)
        self._range_bytes = range_bytes
        self._dedup = dedup
        self._with_keys = with_keys
        self._bits = dedup_bits
        self._near = near
        self._band_bits = band_bits
        self._rounds = rounds
        self._grouping, self._temp_dir = grouping, temp_dir  # how band entries are grouped (SortedGroups)
        self._decontamination = decontamination

    def expand(self, patterns):
        formats = [input_format for input_format, _ in self._readers]
        ranges = (
            patterns
            | "MatchFiles" >> beam.FlatMapTuple(_matches)
            | "OncePerFile" >> beam.Distinct()  # a file two patterns match is still one file
            | "SplitFiles" >> beam.FlatMap(_split, formats, self._range_bytes)
            | "KeyRanges" >> beam.Map(lambda r: (r.key(), r))
        )
        summary = None
        counts = []
        if self._dedup or self._near or self._decontamination:
            first = _ReadDigests(
                self._readers, self._bits, self._progress_dir, near=self._near,
                decontamination=self._decontamination,
            )  # fmt: skip
            digests = (
                ranges
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadDigests"
                >> beam.ParDo(first).with_outputs(
                    DOCUMENTS, BANDS, CONTAMINATED, CONTAMINATION, main="digests"
                )
            )
            grouped = {"digests": digests.digests}
            side = {}
            if self._near is not None:
                near = digests[BANDS] | "NearDuplicates" >> beam_near_dedup.NearDuplicates(
                    self._near,
                    dedup_bits=self._bits,
                    bits=self._band_bits,
                    rounds=self._rounds,
                    grouping=self._grouping,
                    temp_dir=self._temp_dir,
                )
                grouped[NEAR] = near["losers"]
                counts.append(near["counts"])
                side = {
                    "examples": beam.pvalue.AsSingleton(near["examples"]),
                    "clusters": beam.pvalue.AsSingleton(near["clusters"]),
                }
            losers = (
                grouped
                | "GroupDigests" >> beam.CoGroupByKey()
                | "FindLosers"
                >> beam.FlatMap(_losers, self._dedup, **side).with_outputs(NEAR, EXAMPLE_DOCS, main="losers")
            )
            work = {
                "range": ranges,
                "losers": losers.losers,
                DOCUMENTS: digests[DOCUMENTS],
                NEAR: losers[NEAR],
                CONTAMINATED: digests[CONTAMINATED],
                EXAMPLE_DOCS: losers[EXAMPLE_DOCS],
            } | "RangesWithLosers" >> beam.CoGroupByKey()
        else:
            work = (
                ranges
                | "SpreadRanges" >> beam.Reshuffle()
                | "NoLosers" >> beam.MapTuple(lambda key, r: (key, {"range": [r], "losers": []}))
            )
        read = _ReadBatches(self._readers, self._with_keys, self._progress_dir)
        read = beam.ParDo(read).with_output_types(DocumentBatch)
        batches = work | "ReadBatches" >> read.with_outputs(COUNTS, EXAMPLE_TEXTS, main="batches")
        counts = [batches[COUNTS], *counts]
        if self._near is not None or self._decontamination is not None:
            contamination = (
                digests[CONTAMINATION]
                | "KeyContaminated" >> beam.Map(lambda example: (example[0], example))
                | "OncePerKey" >> beam.CombinePerKey(min)  # a document's exact copies, one example
                | "ContaminatedExamples" >> beam.Values()
                | "ContaminationExamples" >> beam.combiners.Top.Smallest(beam_near_dedup.EXAMPLE_PAIRS)
            )
            texts = batches[EXAMPLE_TEXTS] | "ExampleTexts" >> beam.combiners.ToList()
            summary = (
                patterns.pipeline
                | "NearDedupTrigger" >> beam.Create([None])
                | "NearDedupSummary"
                >> beam.Map(
                    beam_near_dedup.summary,
                    texts=beam.pvalue.AsSingleton(texts),
                    contamination=beam.pvalue.AsSingleton(contamination),
                    **side,
                )
            )
        outputs = {"batches": batches.batches, COUNTS: counts | "FlattenReadCounts" >> beam.Flatten()}
        if summary is not None:
            outputs["near_dedup"] = summary
        return outputs
