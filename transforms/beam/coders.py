"""How the batches passed between steps are encoded, and sized.

Beam samples the size of the elements each step emits, for its metrics,
with the element's coder; a pickling coder pickles a whole batch to measure
it, which cost as much as tokenizing the batch's short documents. These
batches are measured by their arrays instead, and pickled only when they
really cross a process (between fused steps they never do).
"""

import pickle

import apache_beam as beam
import pyarrow as pa

from mlmprep.transforms.documents import DocumentBatch
from mlmprep.transforms.pack import SequenceBatch
from mlmprep.transforms.tokenize import TokenizedBatch


class BatchCoder(beam.coders.Coder):
    """Pickle, with ``estimate_size`` from the batch's own ``nbytes``."""

    def encode(self, value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def is_deterministic(self):
        return False

    def estimate_size(self, value):
        return value.nbytes

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def register() -> None:
    """Makes BatchCoder the coder of every PCollection of batches typed as such (``with_output_types``)."""
    for batch in (DocumentBatch, TokenizedBatch, SequenceBatch, pa.RecordBatch):
        beam.coders.registry.register_coder(batch, BatchCoder)
