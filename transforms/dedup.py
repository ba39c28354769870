"""Exact deduplication of documents, by the key of their whitespace-normalized text.

The shuffle that brings copies together is also what spreads a file's
documents across workers. Copies that differ only in whitespace share a key;
of those, the one with the smallest exact-text hash is kept, whole, so which
copy survives never depends on the runner. A combiner keeps one copy and a
count, so memory does not grow with the number of copies.
"""

import apache_beam as beam

from mlmprep.transforms.counting import COUNTS, CountingDoFn


class _KeepOne(beam.CombineFn):
    """(copy_key, pieces, copies): the copy of smallest exact-text hash, and how many there were."""

    def create_accumulator(self):
        return None, None, 0

    def add_input(self, accumulator, copy):
        return self.merge_accumulators([accumulator, (*copy, 1)])

    def merge_accumulators(self, accumulators):
        best_key, best_pieces, copies = None, None, 0
        for copy_key, pieces, n in accumulators:
            if copy_key is not None and (best_key is None or copy_key < best_key):
                best_key, best_pieces = copy_key, pieces
            copies += n
        return best_key, best_pieces, copies

    def extract_output(self, accumulator):
        return accumulator


class _CountDuplicates(CountingDoFn):
    def process(self, element):
        doc_key, (_, pieces, copies) = element
        self.count("documents_dropped.duplicate", copies - 1)
        yield doc_key, pieces


class Deduplicate(beam.PTransform):
    """Document -> (document_key, pieces), one copy per document.

    With ``dedup=False`` every copy is kept; a reshuffle still spreads the work.
    """

    def __init__(self, dedup: bool = True):
        super().__init__()
        self._dedup = dedup

    def expand(self, documents):
        if not self._dedup:
            # An empty counts output keeps the interface of the dedup branch.
            pieces = documents | "KeyDocuments" >> beam.Map(lambda d: (d.key, d.pieces))
            return pieces | "Spread" >> beam.Reshuffle(), pieces | "NoCounts" >> beam.FlatMap(lambda _: ())
        kept = (
            documents
            | "KeyCopies" >> beam.Map(lambda d: (d.key, (d.copy_key, d.pieces)))
            | "KeepOne" >> beam.CombinePerKey(_KeepOne())
            | "CountDuplicates" >> beam.ParDo(_CountDuplicates()).with_outputs(COUNTS, main="documents")
        )
        return kept.documents, kept[COUNTS]
