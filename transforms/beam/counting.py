"""Counts that are both Beam metrics and data.

Beam counters show up in the runner's UI but are not readable from inside the
pipeline on every runner, so each counting DoFn also emits its per-bundle
totals on a ``counts`` output, which the job sums into manifest.json.
"""

import collections

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

COUNTS = "counts"
NAMESPACE = "mlmprep"


def in_global_window(value) -> WindowedValue:
    """An output of ``finish_bundle``, which Beam needs windowed explicitly."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


class CountingDoFn(beam.DoFn):
    """A DoFn whose ``count(name, n)`` feeds a Beam counter and the counts output."""

    def __init__(self):
        self._counters = {}
        self._bundle_counts = None

    def start_bundle(self):
        self._bundle_counts = collections.Counter()

    def count(self, name: str, n: int = 1):
        if n:
            if name not in self._counters:
                self._counters[name] = beam.metrics.Metrics.counter(NAMESPACE, name)
            self._counters[name].inc(n)
            self._bundle_counts[name] += n

    def finish_bundle(self):
        if self._bundle_counts:
            yield beam.pvalue.TaggedOutput(COUNTS, in_global_window(dict(self._bundle_counts)))


class SumCounts(beam.CombineFn):
    """Adds up count dicts: the job-wide totals, one dict."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, counts):
        accumulator.update(counts)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = collections.Counter()
        for a in accumulators:
            total.update(a)
        return total

    def extract_output(self, accumulator):
        return dict(sorted(accumulator.items()))
