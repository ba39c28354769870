"""Writing shards: balanced to one record, sorted by record key.

As TFDS's BeamWriter does, a record's place is a function of its key alone,
so the files do not depend on the runner or the number of workers. On top of
that, every shard of a split holds the same number of records, give or take
one (multi-host trainers hang on unequal shards): records are ranked by key
within their split, and shard ``s`` of ``N`` takes the ranks
``[s * T / N, (s + 1) * T / N)``. Ranks come without a global sort, and
without moving the records for it: only their keys are grouped, into
key-range buckets whose sizes (counted first, a small side input) give each
bucket its first rank. A bucket sorts its keys and tells where in it each
shard begins; those few shard starts, a side input, place every record. The
records reach their shard through ``groups.SortedGroups`` (the runner's
shuffle, or run files on the local runner), in key order. (Two records with
equal keys, which practically never occur, stay in one shard.)

Each shard is written under a temporary name and renamed when complete, so a
reader never sees half a shard; a retried write produces the same bytes.
"""

import concurrent.futures
import dataclasses
import hashlib
import math
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import encode, records
from mlmprep.transforms.groups import SortedGroups, Sorting
from mlmprep.transforms.progress import Progress
from mlmprep.transforms.tokenize import SPLITS

FORMATS = ("tfrecord", "parquet")
TEMP_SUFFIX = ".incomplete"
_KEY_BITS = 63
RECORDS_PER_BUCKET = 50_000  # a bucket's keys are sorted in one worker's memory: a few MB


def bucket_bits(expected_records: int | None) -> int:
    """log2 of the key-range buckets per split: about RECORDS_PER_BUCKET records each.

    Fewer, fuller buckets mean fewer, larger elements between the steps (and
    less per-element overhead); the count only needs to bound a bucket's size.
    """
    if expected_records is None:
        return 12
    return min(16, max(4, math.ceil(math.log2(max(1, expected_records) / RECORDS_PER_BUCKET))))


def generation_tag(generation: int) -> str:
    """What the files of a build that replaced ``generation`` earlier ones carry before their suffix.

    A build written over another (``--overwrite``) gets names of its own, so
    that the old build stays whole beside it until the new manifest.json
    replaces the old one (see ``manifest.write``).
    """
    return f".g{generation}" if generation else ""


def shard_name(split: str, index: int, num_shards: int, fmt: str, generation: int = 0) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}{generation_tag(generation)}.{fmt}"


def _keys_by_bucket(rows, bits: int):
    """Record rows -> ((split, bucket), record keys as uint64 bytes) per bucket they hit."""
    splits = rows.column("split").to_numpy().astype(np.int64)
    keys = rows.column("key").to_numpy()
    groups = (splits << bits) | (keys >> np.uint64(_KEY_BITS - bits)).astype(np.int64)
    order = np.argsort(groups, kind="stable")
    values, starts = np.unique(groups[order], return_index=True)
    for group, part in zip(values.tolist(), np.split(keys[order], starts[1:])):
        yield (group >> bits, group & ((1 << bits) - 1)), part.tobytes()


def estimated_record_bytes(max_seq_length: int, max_predictions_per_seq: int) -> int:
    """A TFRecord record's size: varint ids (~2.5 bytes), 1-byte mask/segments, float weights."""
    return 120 + 5 * max_seq_length + 8 * max_predictions_per_seq


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How many shards each split gets: fixed, or from a target shard size."""

    num_shards: int | None  # for train; validation gets ceil(num_shards * validation_fraction)
    target_shard_bytes: int
    validation_fraction: float
    record_bytes: int

    def shards(self, split: int, total: int) -> int:
        if split == 1 and self.validation_fraction == 0:
            return 0
        if self.num_shards is not None:
            return (
                self.num_shards
                if split == 0
                else max(1, math.ceil(self.num_shards * self.validation_fraction))
            )
        return max(1, math.ceil(total * self.record_bytes / self.target_shard_bytes))


def layout(bucket_counts: list, plan: ShardPlan) -> dict:
    """{split: (total, num_shards, {bucket: first rank})} from ((split, bucket), count) pairs."""
    by_split = {s: {} for s in range(len(SPLITS))}
    for (split, bucket), count in bucket_counts:
        by_split[split][bucket] = count
    out = {}
    for split, counts in by_split.items():
        first, total = {}, 0
        for bucket in sorted(counts):
            first[bucket] = total
            total += counts[bucket]
        num_shards = plan.shards(split, total)
        if num_shards:
            out[split] = (total, num_shards, first)
    return out


def _shard_starts(element, layout):
    """((split, bucket), [key bytes]) -> (split, key, shard) for each shard's first key in the bucket."""
    (split, bucket), parts = element
    total, num_shards, first = layout[split]
    keys = np.sort(np.frombuffer(b"".join(parts), dtype=np.uint64))
    shards = (first[bucket] + np.arange(len(keys))) * num_shards // total
    starts = np.flatnonzero(np.diff(shards, prepend=-1))
    for key, shard in zip(keys[starts].tolist(), shards[starts].tolist()):
        yield split, key, shard


def shard_index(starts: list) -> dict:
    """{split: (first keys, shards)}, ascending: a record goes to the last shard starting at or below it."""
    index = {}
    for split, key, shard in sorted(starts):
        keys, shards = index.setdefault(split, ([], []))
        keys.append(key)
        shards.append(shard)
    return {
        split: (np.array(keys, np.uint64), np.array(shards, np.int64))
        for split, (keys, shards) in index.items()
    }


def shard_groups(rows, index: dict) -> np.ndarray:
    """The group of each record row: ``split << 32 | shard``, never decreasing in (split, key) order."""
    splits = rows.column("split").to_numpy().astype(np.int64)
    keys = rows.column("key").to_numpy()
    groups = np.empty(len(keys), dtype=np.int64)
    for split in np.unique(splits).tolist():
        at = splits == split
        first, shards = index[split]
        place = np.searchsorted(first, keys[at], side="right") - 1
        if (
            place < 0
        ).any():  # every split's smallest key starts its first shard: two reads of records differ
            raise ValueError(f"a record key is below every shard of split {split}")
        groups[at] = (split << 32) | shards[place]
    return groups


RECORD_ORDER = Sorting(columns=records.SORT_COLUMNS, group=shard_groups, tiebreak=records.content)


class _WriteShard(beam.DoFn):
    """(split << 32 | shard, group of its rows) -> one info dict per file written."""

    def __init__(self, *, output_dir, formats, max_seq_length, max_predictions_per_seq, pad_id, generation=0):
        self._output_dir = output_dir
        self._formats = formats
        self._generation = generation
        self._shape = dict(
            max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq, pad_id=pad_id
        )
        self._progress = None
        self._parquet = None

    def setup(self):
        self._progress = Progress("write")
        # pyarrow encodes and compresses Parquet without holding the GIL, so a
        # thread makes a shard's two files take about the time of the larger one.
        self._parquet = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlmprep-parquet")

    def teardown(self):
        if self._parquet is not None:
            self._parquet.shutdown()

    def process(self, element, layout):
        group, rows = element
        split, shard = group >> 32, group & 0xFFFFFFFF
        slices = rows.slices(encode.slice_rows(self._shape["max_seq_length"])) if rows is not None else ()
        names = {
            fmt: shard_name(SPLITS[split], shard, layout[split][1], fmt, self._generation)
            for fmt in self._formats
        }
        paths = {fmt: FileSystems.join(self._output_dir, name) for fmt, name in names.items()}
        files, parquet = {}, None
        try:
            for fmt, path in paths.items():
                files[fmt] = _AtomicFile(path)
            tfrecord = files.get("tfrecord")
            parquet = encode.ParquetShard(files["parquet"]) if "parquet" in files else None
            stats = _write_in_slices(
                slices, shape=self._shape, tfrecord=tfrecord, parquet=parquet, parquet_thread=self._parquet
            )
            if parquet is not None:
                parquet.close()
        except BaseException:
            if parquet is not None:
                parquet.close(abandon=True)
            for file in files.values():
                file.abort()
            raise
        finally:
            if hasattr(slices, "close"):
                slices.close()  # a merge's generator lets go of what it read
        for fmt in sorted(names, key=lambda f: f != "tfrecord"):
            sha256 = files[fmt].commit()
            self._progress.update(files=1, records=stats["records"])
            yield {"file": names[fmt], "split": SPLITS[split], "format": fmt, **stats, "sha256": sha256}


def _write_in_slices(slices, *, shape, tfrecord, parquet, parquet_thread) -> dict:
    """Encodes a shard's sorted slices of rows into its files; returns its counts.

    What the write holds besides a slice does not grow with the shard: a
    slice's Parquet row group is written on ``parquet_thread`` while the
    slice's TFRecord bytes are encoded here.
    """
    stats = {"records": 0, "tokens": 0, "predictions": 0}
    pending = None
    try:
        for rows in slices:
            batch = records.to_masked(rows, **shape)
            stats["records"] += len(batch.lengths)
            stats["tokens"] += int(batch.lengths.sum())
            stats["predictions"] += int(batch.num_predictions.sum())
            if parquet is not None:
                if pending is not None:
                    pending.result()
                pending = parquet_thread.submit(parquet.add, batch)
            if tfrecord is not None:
                tfrecord.write(encode.tfrecord_bytes(encode.tf_examples(batch)))
    finally:
        if pending is not None:
            pending.result()  # never leave the Parquet writer to a thread still using it
    return stats


class _AtomicFile:
    """A file written under a temporary name, hashed as written, and renamed when complete."""

    def __init__(self, path: str):
        self._path = path
        self._temp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        self._file = FileSystems.create(self._temp)
        self._digest = hashlib.sha256()

    def write(self, data) -> int:
        self._digest.update(data)
        self._file.write(data)
        return len(memoryview(data))

    @property
    def closed(self) -> bool:  # what pyarrow asks of a file it writes to
        return self._file.closed

    def abort(self) -> None:
        """Closes and deletes the unfinished file (a retry writes it anew)."""
        if not self._file.closed:
            self._file.close()
        if FileSystems.exists(self._temp):
            FileSystems.delete([self._temp])

    def commit(self) -> str:
        """Closes and renames the file; returns its SHA-256."""
        self._file.close()
        if FileSystems.exists(self._path):  # a retried or speculative attempt finished first
            FileSystems.delete([self._path])
        FileSystems.rename([self._temp], [self._path])
        return self._digest.hexdigest()


class _WriteEmptyShards(_WriteShard):
    """Writes every shard no record went to, once the others are written."""

    def process(self, unused_trigger, layout, written):
        done = {info["file"] for info in written}
        for split, (_, num_shards, _) in layout.items():
            for shard in range(num_shards):
                if (
                    shard_name(SPLITS[split], shard, num_shards, self._formats[0], self._generation)
                    not in done
                ):
                    yield from super().process(((split << 32) | shard, None), layout)


class WriteShards(beam.PTransform):
    """Arrow record rows -> info dicts of the shard files written.

    Every shard of every split is written, empty or not, so a split's file
    set is always complete. ``grouping`` and ``temp_dir``: see ``groups``;
    ``generation``: see ``generation_tag``.
    """

    def __init__(
        self,
        *,
        output_dir,
        formats,
        plan: ShardPlan,
        bucket_bits: int,
        max_seq_length,
        max_predictions_per_seq,
        pad_id,
        grouping: str,
        temp_dir: str,
        generation: int = 0,
    ):
        super().__init__()
        self._plan = plan
        self._bucket_bits = bucket_bits
        self._grouping = grouping
        self._temp_dir = temp_dir
        self._writer_args = dict(
            output_dir=output_dir,
            formats=tuple(formats),
            max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions_per_seq,
            pad_id=pad_id,
            generation=generation,
        )

    def expand(self, rows):
        plan, bits = self._plan, self._bucket_bits
        buckets = (
            rows
            | "KeysByBucket" >> beam.FlatMap(_keys_by_bucket, bits)
            | "GroupKeysByBucket" >> beam.GroupByKey()
        )
        shard_layout = beam.pvalue.AsSingleton(
            buckets
            | "BucketSizes" >> beam.MapTuple(lambda bucket, parts: (bucket, sum(len(p) for p in parts) // 8))
            | "AllSizes" >> beam.combiners.ToList()
            | "Layout" >> beam.Map(layout, plan)
        )
        index = beam.pvalue.AsSingleton(
            buckets
            | "ShardStarts" >> beam.FlatMap(_shard_starts, shard_layout)
            | "AllShardStarts" >> beam.combiners.ToList()
            | "ShardIndex" >> beam.Map(shard_index)
        )
        written = (
            rows
            | "GroupByShard"
            >> SortedGroups(RECORD_ORDER, mode=self._grouping, temp_dir=self._temp_dir, side_inputs=[index])
            | "WriteShard" >> beam.ParDo(_WriteShard(**self._writer_args), layout=shard_layout)
        )
        # Empty shards are written by a step of their own rather than by
        # flattening empty groups into the records: an in-memory runner would
        # copy every record to materialize that flatten.
        empty = (
            rows.pipeline
            | "Once" >> beam.Create([None])
            | "WriteEmptyShards"
            >> beam.ParDo(
                _WriteEmptyShards(**self._writer_args),
                layout=shard_layout,
                written=beam.pvalue.AsList(written),
            )
        )
        return (written, empty) | "AllShards" >> beam.Flatten()
