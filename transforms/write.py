"""Writing shards: grouped by a hash of the record key, sorted by it inside.

As TFDS's BeamWriter does, a record's shard and its place in the shard are
functions of its key alone, so the files do not depend on the runner. Each
shard is written under a temporary name and renamed when complete, so a
reader never sees half a shard; a retried write produces the same bytes.
"""

import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import encode, records
from mlmprep.transforms.progress import Progress
from mlmprep.transforms.tokenize import SPLITS

FORMATS = ("tfrecord", "parquet")
TEMP_SUFFIX = ".incomplete"


def shard_name(split: str, index: int, num_shards: int, fmt: str) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.{fmt}"


class _WriteShard(beam.DoFn):
    """((split, shard), [(record_key, payload)]) -> one info dict per file written."""

    def __init__(self, *, output_dir, formats, shard_counts, max_seq_length, max_predictions_per_seq, pad_id):
        self._output_dir = output_dir
        self._formats = formats
        self._shard_counts = shard_counts
        self._shape = dict(
            max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq, pad_id=pad_id
        )
        self._progress = None

    def setup(self):
        self._progress = Progress("write")

    def process(self, element):
        (split, shard), keyed = element
        keyed = sorted(keyed)  # by record key; payload breaks ties
        batch = records.from_payloads([p for _, p in keyed], **self._shape)
        stats = {
            "records": len(keyed),
            "tokens": int(batch.lengths.sum()),
            "predictions": int(batch.num_predictions.sum()),
        }
        for fmt in self._formats:
            if fmt == "tfrecord":
                data = encode.tfrecord_bytes(encode.tf_examples(batch))
            else:
                data = encode.parquet_bytes(batch)
            name = shard_name(SPLITS[split], shard, self._shard_counts[split], fmt)
            _write_atomically(FileSystems.join(self._output_dir, name), data)
            self._progress.update(files=1, records=len(keyed))
            yield {
                "file": name,
                "split": SPLITS[split],
                "format": fmt,
                **stats,
                "sha256": encode.sha256(data),
            }


def _write_atomically(path: str, data: bytes):
    temp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with FileSystems.create(temp) as f:
        f.write(data)
    if FileSystems.exists(path):  # a retried or speculative attempt finished first
        FileSystems.delete([path])
    FileSystems.rename([temp], [path])


def shard_of(record_key: int, num_shards: int) -> int:
    return record_key % num_shards


class WriteShards(beam.PTransform):
    """(split, record_key, payload) -> info dicts of the shard files written.

    Every shard of every split is written, empty or not, so a split's file set
    is always complete.
    """

    def __init__(self, *, output_dir, formats, shard_counts, max_seq_length, max_predictions_per_seq, pad_id):
        super().__init__()
        self._output_dir = output_dir
        self._shard_counts = tuple(shard_counts)
        self._write = _WriteShard(
            output_dir=output_dir,
            formats=tuple(formats),
            shard_counts=self._shard_counts,
            max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions_per_seq,
            pad_id=pad_id,
        )

    def expand(self, records_pcoll):
        counts = self._shard_counts
        keyed = records_pcoll | "KeyByShard" >> beam.Map(
            lambda r: ((r[0], shard_of(r[1], counts[r[0]])), (r[1], r[2]))
        )
        every_shard = (
            keyed.pipeline
            | "EveryShard" >> beam.Create([(s, i) for s in range(len(counts)) for i in range(counts[s])])
            | "NoRecords" >> beam.Map(lambda key: (key, None))
        )
        return (
            (keyed, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "DropMarkers" >> beam.MapTuple(lambda key, values: (key, [v for v in values if v is not None]))
            | "WriteShard" >> beam.ParDo(self._write)
        )
