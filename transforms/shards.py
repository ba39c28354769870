"""Where each record goes: the shard plan, the balanced layout, and shard file names.

As TFDS's BeamWriter does, a record's place is a function of its key alone,
so the files do not depend on the runner or the number of workers. On top of
that, every shard of a split holds the same number of records, give or take
one (multi-host trainers hang on unequal shards): records are ranked by key
within their split, and shard ``s`` of ``N`` takes the ranks
``[s * T / N, (s + 1) * T / N)``. Ranks come without a global sort, and
without moving the records for it: only their keys are grouped, into
key-range buckets whose sizes (counted first) give each bucket its first
rank. A bucket sorts its keys and tells where in it each shard begins; those
few shard starts place every record. (Two records with equal keys, which
practically never occur, stay in one shard.)
"""

import dataclasses
import math
import re

import numpy as np

from mlmprep.transforms.tokenize import SPLITS

FORMATS = ("tfrecord", "parquet", "arrayrecord", "mds")
DEFAULT_FORMATS = ("tfrecord", "parquet")
# A format's file suffix; MDS adds its compression's (``mds.SUFFIXES``).
SUFFIXES = {"tfrecord": "tfrecord", "parquet": "parquet", "arrayrecord": "array_record", "mds": "mds"}
# MosaicML Streaming reads a split from a folder of its own, with its index.json: ``mds/<split>/``.
MDS_FOLDER = "mds"
# How records reach their shards: the runner's shuffle, or run files (transforms/beam/groups.py).
GROUPINGS = ("shuffle", "run_files")
TEMP_SUFFIX = ".incomplete"
_KEY_BITS = 63
RECORDS_PER_BUCKET = 50_000  # a bucket's keys are sorted in one worker's memory: a few MB


TEXT_BYTES_PER_TOKEN = 4  # about, for WordPiece over English text: to size what an input makes


def expected_records(input_bytes: int | None, dupe_factor: int, max_seq_length: int) -> int | None:
    """About how many records an input of this size makes; None where the size is unknown (a dry run)."""
    if input_bytes is None:
        return None
    return dupe_factor * input_bytes // (TEXT_BYTES_PER_TOKEN * (max_seq_length - 2))


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


def shard_name(
    split: str, index: int, num_shards: int, fmt: str, generation: int = 0, compression: str | None = None
) -> str:
    """A shard file's path relative to the output; ``compression``: MDS's file suffix after ``.mds``."""
    name = f"{split}-{index:05d}-of-{num_shards:05d}{generation_tag(generation)}.{SUFFIXES[fmt]}"
    if fmt == "mds":
        return f"{mds_folder(split)}/{name}{'.' + compression if compression else ''}"
    return name


def mds_folder(split: str) -> str:
    return f"{MDS_FOLDER}/{split}"


def shard_stem(name: str) -> str:
    """What a shard's files in every format share: the name without its folder and format suffix."""
    return re.match(r"[^.]+(?:\.g\d+)?", name.rsplit("/", 1)[-1])[0]


def keys_by_bucket(rows, bits: int):
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


def shard_starts(element, layout):
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
