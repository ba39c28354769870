"""Exact deduplication of documents, by the key of their normalized text.

The shuffle that brings copies together is also what spreads a file's
documents across workers. Each piece of a document is keyed by (document
key, piece index); identical documents have identical pieces, so dropping
copies piece by piece drops whole documents. A combiner keeps one copy and a
count, so memory does not grow with the number of copies.
"""

import apache_beam as beam

from mlmprep.transforms.counting import COUNTS, CountingDoFn


class _KeepOne(beam.CombineFn):
    """(text, copies): the smallest text of the group, so which copy is kept is deterministic."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, accumulator, text):
        kept, copies = accumulator
        return (text if kept is None or text < kept else kept), copies + 1

    def merge_accumulators(self, accumulators):
        kept, copies = None, 0
        for text, n in accumulators:
            if text is not None and (kept is None or text < kept):
                kept = text
            copies += n
        return kept, copies

    def extract_output(self, accumulator):
        return accumulator


class _EmitPieces(CountingDoFn):
    def __init__(self, dedup: bool):
        super().__init__()
        self._dedup = dedup

    def process(self, element):
        (doc_key, index, num_pieces), (text, copies) = element
        if index == 0 and copies > 1 and self._dedup:
            self.count("documents_dropped.duplicate", copies - 1)
        for _ in range(1 if self._dedup else copies):
            yield doc_key, index, num_pieces, text


class Deduplicate(beam.PTransform):
    """Document -> (document_key, piece_index, num_pieces, text), one copy per document.

    With ``dedup=False`` every copy is kept; the shuffle still spreads the work.
    """

    def __init__(self, dedup: bool = True):
        super().__init__()
        self._dedup = dedup

    def expand(self, documents):
        return (
            documents
            | "KeyPieces"
            >> beam.FlatMap(lambda d: (((d.key, i, len(d.pieces)), p) for i, p in enumerate(d.pieces)))
            | "KeepOne" >> beam.CombinePerKey(_KeepOne())
            | "EmitPieces" >> beam.ParDo(_EmitPieces(self._dedup)).with_outputs(COUNTS, main="pieces")
        )
