"""The mixture on Beam: the histogram of the build's documents, summed over the job, and each phase's plan.

Both are small (phases x sources x groups); the plan reaches the packing
step as a side input, once every document has been tokenized and counted.
"""

import apache_beam as beam
import numpy as np

from mlmprep.transforms import mixture
from mlmprep.transforms.beam.counting import in_global_window


class Histogram(beam.DoFn):
    """TokenizedBatch -> the histogram of a bundle's documents (``mixture.histogram``), once per bundle."""

    def __init__(self, filters, num_sources: int, num_groups: int):
        self._filters, self._shape = filters, (num_sources, num_groups)
        self._hist = None

    def start_bundle(self):
        self._hist = None

    def process(self, batch):
        lengths = np.fromiter(map(len, batch.token_ids), dtype=np.int64, count=len(batch.token_ids))
        sources = np.full(len(lengths), batch.source, dtype=np.int64)
        groups = mixture.range_groups(batch.keys, self._shape[1]).astype(np.int64)
        hist = mixture.histogram(
            self._filters, sources, batch.splits.astype(np.int64), groups, lengths, *self._shape
        )
        self._hist = hist if self._hist is None else self._hist + hist
        return ()

    def finish_bundle(self):
        if self._hist is not None:
            yield in_global_window(self._hist)


class SumHistograms(beam.CombineFn):
    def __init__(self, shape: tuple[int, ...]):
        self._shape = shape

    def create_accumulator(self):
        return np.zeros(self._shape, dtype=np.int64)

    def add_input(self, accumulator, hist):
        accumulator += hist
        return accumulator

    def merge_accumulators(self, accumulators):
        return sum(accumulators, self.create_accumulator())

    def extract_output(self, accumulator):
        return accumulator


def plan_phases(hist: np.ndarray, mixes, names: list[str], phase_names: list[str]):
    """Each phase's ``mixture.plan``; a mixture the sources cannot give fails the job, naming the source."""
    return tuple(
        mixture.plan(hist[p], mix, names, phase) for p, (mix, phase) in enumerate(zip(mixes, phase_names))
    )
