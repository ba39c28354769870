"""The writing step on Beam: records to balanced shards, sorted by record key (see ``shards``).

Only the record keys are grouped to plan the shards (the bucket sizes and the
shard starts travel as small side inputs); the records reach their shard
through ``groups.SortedGroups`` (the runner's shuffle, or run files on the
local runner), in key order. Each shard is written under a temporary name and
renamed when complete, so a reader never sees half a shard; a retried write
produces the same bytes.
"""

import concurrent.futures
import hashlib
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import arrayrecord, encode, mds, profile, records
from mlmprep.transforms.beam.groups import SortedGroups, Sorting
from mlmprep.transforms.beam.progress import Progress
from mlmprep.transforms.shards import (
    TEMP_SUFFIX,
    ShardPlan,
    keys_by_bucket,
    layout,
    shard_groups,
    shard_index,
    shard_name,
    shard_starts,
    shard_stem,
)
from mlmprep.transforms.tokenize import SPLITS

RECORD_ORDER = Sorting(columns=records.SORT_COLUMNS, group=shard_groups, tiebreak=records.content)


class WriteShard(beam.DoFn):
    """(split << 32 | shard, group of its rows) -> one info dict per file written."""

    def __init__(
        self,
        *,
        output_dir,
        formats,
        max_seq_length,
        max_predictions_per_seq,
        pad_id,
        unk_id=None,
        generation=0,
        pairs=False,
        unmasked=False,
        frame=None,
        sources=False,
        mds_config=None,
    ):
        self._output_dir = output_dir
        self._sources = sources
        self._mds_config = mds_config
        self._formats = formats
        self._generation = generation
        self._pairs = pairs
        self._unmasked = unmasked
        self._unk_id = unk_id
        self._shape = dict(
            max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions_per_seq,
            pad_id=pad_id,
            b_type=1 if frame is None else frame.b_type,  # the tokenizer's pair frame's
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
            fmt: shard_name(
                SPLITS[split], shard, layout[split][1], fmt, self._generation, self._mds_suffix(fmt)
            )
            for fmt in self._formats
        }
        files, sinks = {}, {}
        try:
            for fmt, name in names.items():
                files[fmt] = _AtomicFile(FileSystems.join(self._output_dir, name))
                sinks[fmt] = self._sink(fmt, files[fmt])
            stats = _write_in_slices(
                slices, shape=self._shape, unk_id=self._unk_id, pairs=self._pairs, sinks=sinks,
                parquet_thread=self._parquet,
            )  # fmt: skip
            closed = {fmt: sink.close() for fmt, sink in sinks.items() if fmt != "tfrecord"}
        except BaseException:
            for fmt, sink in sinks.items():
                if fmt != "tfrecord":
                    sink.abort()
            for file in files.values():
                file.abort()
            raise
        finally:
            if hasattr(slices, "close"):
                slices.close()  # a merge's generator lets go of what it read
        for fmt in sorted(names, key=lambda f: f != "tfrecord"):
            sha256 = files[fmt].commit()
            self._progress.update(files=1, records=stats["records"])
            info = {"file": names[fmt], "split": SPLITS[split], "format": fmt, **stats, "sha256": sha256}
            info["bytes"] = files[fmt].size
            if fmt == "mds":
                info["raw_bytes"] = closed[fmt]
            yield info

    def _mds_suffix(self, fmt: str) -> str | None:
        return mds.suffix(self._mds_config) if fmt == "mds" else None

    def _sink(self, fmt: str, file: "_AtomicFile"):
        """What encodes a shard's rows into its file in one format (TFRecord: the file itself)."""
        if fmt == "parquet":
            return encode.ParquetShard(file, self._pairs, self._unmasked, self._sources)
        if fmt == "mds":
            return mds.MdsShard(file, self._mds_config)
        if fmt == "arrayrecord":
            return arrayrecord.ArrayRecordShard(file)
        return file


def _write_in_slices(slices, *, shape, unk_id, pairs, sinks, parquet_thread) -> dict:
    """Encodes a shard's sorted slices of rows into its files; returns its counts and profile.

    What the write holds besides a slice does not grow with the shard: a
    slice's Parquet row group is written on ``parquet_thread`` while the
    slice's other formats are encoded here. A slice's ``tf.train.Example``s
    (TFRecord, ArrayRecord) and its Arrow table (Parquet, MDS) are made once.
    """
    stats = {"records": 0, "tokens": 0, "predictions": 0, "unk_tokens": 0, "padding": 0, "pieces": 0}
    lengths, labels = np.zeros(profile.BUCKETS, np.int64), np.zeros(2, np.int64)
    pending = None
    try:
        for rows in slices:
            batch = records.to_masked(rows, **shape)
            stats["records"] += len(batch.lengths)
            stats["tokens"] += int(batch.lengths.sum())
            stats["predictions"] += int(batch.num_predictions.sum())
            stats["unk_tokens"] += profile.unk_tokens(batch, unk_id)
            stats["padding"] += profile.padding(batch)
            stats["pieces"] += len(batch.piece_lengths)  # as packing placed them
            lengths += profile.length_buckets(batch.lengths, shape["max_seq_length"])
            if pairs:
                labels += np.bincount(batch.next_sentence_labels, minlength=2)
            table = encode.parquet_table(batch) if sinks.keys() & {"parquet", "mds"} else None
            if "parquet" in sinks:
                if pending is not None:
                    pending.result()
                pending = parquet_thread.submit(sinks["parquet"].add_table, table)
            examples = encode.tf_examples(batch) if sinks.keys() & {"tfrecord", "arrayrecord"} else None
            if "tfrecord" in sinks:
                sinks["tfrecord"].write(encode.tfrecord_bytes(examples))
            if "arrayrecord" in sinks:
                sinks["arrayrecord"].add(examples)
            if "mds" in sinks:
                sinks["mds"].add(batch, table)
    finally:
        if pending is not None:
            pending.result()  # never leave the Parquet writer to a thread still using it
    stats["sequence_lengths"] = lengths.tolist()
    if pairs:
        stats["next_sentence_labels"] = labels.tolist()
    return stats


class _AtomicFile:
    """A file written under a temporary name, hashed as written, and renamed when complete."""

    def __init__(self, path: str):
        self._path = path
        self._temp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        self._file = FileSystems.create(self._temp)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._digest.update(data)
        self._file.write(data)
        n = len(memoryview(data).cast("B"))
        self.size += n
        return n

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


class WriteEmptyShards(WriteShard):
    """Writes every shard no record went to, once the others are written."""

    def process(self, unused_trigger, layout, written):
        done = {shard_stem(info["file"]) for info in written}
        for split, (_, num_shards, _) in layout.items():
            for shard in range(num_shards):
                if (
                    shard_stem(shard_name(SPLITS[split], shard, num_shards, "tfrecord", self._generation))
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
        unk_id=None,
        grouping: str,
        temp_dir: str,
        generation: int = 0,
        pairs: bool = False,
        unmasked: bool = False,
        frame=None,
        sources: bool = False,
        mds_config: dict | None = None,
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
            unk_id=unk_id,
            generation=generation,
            pairs=pairs,
            unmasked=unmasked,
            frame=frame,
            sources=sources,
            mds_config=mds_config,
        )

    def expand(self, rows):
        plan, bits = self._plan, self._bucket_bits
        buckets = (
            rows
            | "KeysByBucket" >> beam.FlatMap(keys_by_bucket, bits)
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
            | "ShardStarts" >> beam.FlatMap(shard_starts, shard_layout)
            | "AllShardStarts" >> beam.combiners.ToList()
            | "ShardIndex" >> beam.Map(shard_index)
        )
        written = (
            rows
            | "GroupByShard"
            >> SortedGroups(RECORD_ORDER, mode=self._grouping, temp_dir=self._temp_dir, side_inputs=[index])
            | "WriteShard" >> beam.ParDo(WriteShard(**self._writer_args), layout=shard_layout)
        )
        # Empty shards are written by a step of their own rather than by
        # flattening empty groups into the records: an in-memory runner would
        # copy every record to materialize that flatten.
        empty = (
            rows.pipeline
            | "Once" >> beam.Create([None])
            | "WriteEmptyShards"
            >> beam.ParDo(
                WriteEmptyShards(**self._writer_args),
                layout=shard_layout,
                written=beam.pvalue.AsList(written),
            )
        )
        return (written, empty) | "AllShards" >> beam.Flatten()
