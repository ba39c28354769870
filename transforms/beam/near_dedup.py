"""The Beam side of near-duplicate removal and decontamination (``transforms.near_dedup`` does the work).

The first pass of ``read`` emits each document's band entries in Arrow
record batches; here they are sorted into buckets of band keys (``groups.SortedGroups``:
through run files on the in-memory runner, which would otherwise hold them
all, as it does every shuffle), a bucket's entries confirmed into pairs a
slice at a time, the pairs joined into clusters by rounds of large-star and
small-star steps, and the clusters made the keys that lose, which the
exact-duplicate grouping routes to the ranges that hold them. The edges
cross their shuffles as NumPy arrays' bytes keyed by a bucket: no element
per document or per pair.
"""

import dataclasses
import functools
import json
import posixpath

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import dedup, near_dedup
from mlmprep.transforms.beam import groups
from mlmprep.transforms.beam.counting import COUNTS, CountingDoFn
from mlmprep.transforms.keys import mix64
from mlmprep.transforms.near_dedup import EDGE, NearDedupConfig

MAX_ROUNDS = 20  # large-star + small-star rounds unrolled across workers (``rounds_for``)
LOCAL_BYTES = 1 << 30  # input below which the confirmed pairs are clustered in one worker
LOCAL_ROUNDS = 200  # rounds run to settle them there: far beyond any chain's
BAND_SLICE_ROWS = 1 << 18  # band entries confirmed at a time, of a bucket's sorted entries
EXAMPLE_PAIRS = 8  # removed pairs the manifest shows, with both texts
LARGEST_CLUSTERS = 10
EXAMPLE_CHARS = 400  # of each example document's text


@dataclasses.dataclass(frozen=True)
class Decontamination:
    """Evaluation text to keep out of the training data: a pattern of its files, and the n-gram."""

    pattern: str
    ngram: int = near_dedup.DECONTAMINATION_NGRAM
    listed: tuple[str, ...] | None = None  # the files the plan found (None: not listed, as in a dry run)

    def files(self) -> list[str]:
        """The files the plan listed (so that every worker reads the same), or the pattern's matches."""
        if self.listed is not None:
            return list(self.listed)
        return sorted(m.path for m in FileSystems.match([self.pattern])[0].metadata_list)


def _item_text(value) -> str:
    """An evaluation item's text: a JSON object's "text", else every string in it joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return value["text"]
        return " ".join(_item_text(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_item_text(v) for v in value)
    return ""


def evaluation_items(files) -> tuple[list[str], list[str]]:
    """(each evaluation item's text, its label: file:line). A .jsonl/.json/.ndjson file holds a JSON
    value per line; any other file an item per line."""
    texts, labels = [], []
    for path in files:
        structured = path.endswith((".jsonl", ".json", ".ndjson"))
        with FileSystems.open(path) as f:
            for number, line in enumerate(f.read().decode("utf-8", "replace").splitlines(), 1):
                if not line.strip():
                    continue
                if structured:
                    try:
                        line = _item_text(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line that is not JSON is an item of text
                texts.append(line)
                labels.append(f"{posixpath.basename(path)}:{number}")
    return texts, labels


class EvaluationNgrams:
    """Every n-gram of the evaluation items, sorted, and which item each came from (a worker's, loaded
    once in its ``setup``)."""

    def __init__(self, decontamination: Decontamination):
        texts, self.labels = evaluation_items(decontamination.files())
        self.texts = texts
        hashes, first = near_dedup.ngram_hashes(texts, decontamination.ngram)
        item = np.repeat(np.arange(len(texts)), np.diff(first))
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.items = hashes[order], item[order]
        self.ngram = decontamination.ngram
        self.short_items = int((np.diff(first) == 0).sum())  # fewer words than the n-gram: cannot match

    def match(self, texts: list[str]) -> np.ndarray:
        """Each text's matching evaluation item, -1 where none."""
        found, at = near_dedup.contaminated(texts, self.hashes, self.ngram)
        return np.where(found, self.items[np.maximum(at, 0)], -1)


def band_batch(entries: np.ndarray, config: NearDedupConfig) -> pa.RecordBatch:
    """Band entries (``config.entry_dtype()``) as the record batch ``SortedGroups`` sorts."""
    sig = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(config.signature_bytes), len(entries), [None, pa.py_buffer(entries["sig"].tobytes())]
    )
    return pa.RecordBatch.from_arrays(
        [pa.array(entries["band"]), pa.array(entries["key"]), sig], names=["band", "key", "sig"]
    )


def _entries(table: pa.Table, config: NearDedupConfig) -> np.ndarray:
    table = table.combine_chunks()
    out = np.empty(table.num_rows, config.entry_dtype())
    out["band"] = table.column("band").to_numpy()
    out["key"] = table.column("key").to_numpy()
    sig = table.column("sig").chunks[0] if table.num_rows else None
    if sig is not None:
        data = np.frombuffer(sig.buffers()[1], np.uint8)
        start = sig.offset * config.signature_bytes
        out["sig"] = data[start : start + table.num_rows * config.signature_bytes].reshape(table.num_rows, -1)
    return out


def _band_bucket(rows, bits: int) -> np.ndarray:
    band = rows.column("band").to_numpy()
    return (band >> np.uint64(64 - bits)).astype(np.int64) if bits else np.zeros(len(band), np.int64)


def _signature_bytes(rows, indices) -> list[bytes]:
    """Orders a document's copies (one key, one band) by their signatures: the same, so any order."""
    return rows.column("sig").take(pa.array(indices)).to_pylist()


def band_sorting(bits: int) -> groups.Sorting:
    """Band entries by band key, in buckets of the top ``bits`` of it."""
    return groups.Sorting(
        columns=("band", "key"), group=functools.partial(_band_bucket, bits=bits), tiebreak=_signature_bytes
    )


def rounds_for(input_bytes: int | None) -> int:
    """Rounds to unroll across workers; 0: the confirmed pairs are clustered in one worker.

    Below LOCAL_BYTES of input the pairs (16 bytes each, one or two a near-duplicate) fit a worker
    many times over, and one grouping of them all beats unrolling rounds (each round is two groupings
    for the runner to plan and run: about 70 ms a round to build on the local runner). From there,
    MAX_ROUNDS: a chain of n near-copies settles in about log2(n) + 2 rounds (10 at 1,000, 12 at
    10,000, 15 at 100,000).
    """
    if input_bytes is not None and input_bytes < LOCAL_BYTES:
        return 0
    return MAX_ROUNDS


def key_buckets(rows: np.ndarray, bits: int, field: str = "a"):
    """Rows keyed by the bucket of their ``field`` (a 63-bit key, of which the top ``bits``; the first
    bit is always 0): (bucket, bytes)."""
    for bucket, part in near_dedup.by_bucket(rows, field, bits + 1 if bits else 0):
        yield bucket, part.tobytes()


def _rows(parts, dtype) -> np.ndarray:
    return np.frombuffer(b"".join(parts), dtype)


class _Edges(CountingDoFn):
    """A DoFn of (bucket, bytes) edges: its output type said, so that Beam need not infer it from the
    bytecode at each of the many steps of the rounds (what built the graph's rounds took seconds)."""

    def infer_output_type(self, input_type):
        return beam.typehints.Tuple[int, bytes]


class _Confirm(_Edges):
    """(bucket, its sorted band entries) -> (bucket, edges of the confirmed pairs, both ways); counts the
    candidate pairs compared and those confirmed; and a few pairs, the least by a hash of theirs, as
    examples. The entries come a slice at a time; a band key's entries at a slice's end wait for the next."""

    def __init__(self, config: NearDedupConfig, bits: int):
        super().__init__()
        self._config, self._bits = config, bits

    def process(self, element):
        _, group = element
        found, waiting = [], np.zeros(0, self._config.entry_dtype())
        for table in group.slices(BAND_SLICE_ROWS):
            entries = np.concatenate([waiting, _entries(table, self._config)])
            last = np.searchsorted(entries["band"], entries["band"][-1])  # entries sorted by band
            entries, waiting = entries[:last], entries[last:]
            found.append(self._confirm(entries))
        found.append(self._confirm(waiting))
        pairs = near_dedup.unique_pairs(np.concatenate(found))
        if len(pairs):
            score = mix64(pairs["a"] ^ mix64(pairs["b"]))
            for i in np.argsort(score)[:EXAMPLE_PAIRS].tolist():
                yield beam.pvalue.TaggedOutput(
                    "examples",
                    (int(score[i]), int(pairs["a"][i]), int(pairs["b"][i]), float(pairs["jaccard"][i])),
                )
            edges = np.empty(len(pairs), EDGE)
            edges["a"], edges["b"] = pairs["a"], pairs["b"]
            yield from key_buckets(near_dedup.both_ways(edges), self._bits)

    def _confirm(self, entries: np.ndarray) -> np.ndarray:
        pairs, compared = near_dedup.confirmed_pairs(entries, self._config)
        self.count("near_dedup.comparisons", compared)  # a pair in several bands is compared in each
        return pairs


class _Star(_Edges):
    """(bucket, edges) -> the edges after a large-star or small-star step, keyed by the node the next step
    groups them by; counts the edges that moved in the round."""

    def __init__(self, step: str, round_: int, bits: int):
        super().__init__()
        self._step, self._round, self._bits = step, round_, bits

    def process(self, element):
        _, parts = element
        edges = _rows(parts, EDGE)
        if self._step == "large" and self._round == 0:  # each confirmed pair, under its smaller key
            self.count("near_dedup.confirmed_pairs", len(np.unique(edges[edges["b"] > edges["a"]])))
        if self._step == "large":
            out, moved = near_dedup.large_star(edges)  # (v, m), v > m: small-star groups by v
        else:
            out, moved = near_dedup.small_star(edges)  # (x, m), x > m: large-star wants both ways
            out = near_dedup.both_ways(out)
        self.count(f"near_dedup.moved.{self._round}", moved)
        yield from key_buckets(out, self._bits)


def _settled(element, bits: int):
    """(bucket, edges (x, m) both ways after the last round) -> each cluster's members but its least, as
    edges (member, least) keyed by the bucket of the least (its cluster's sizes are counted there)."""
    _, parts = element
    yield from _members(_rows(parts, EDGE), bits)


def _members(edges: np.ndarray, bits: int):
    down = edges[edges["a"] > edges["b"]]
    return key_buckets(near_dedup.unique_pairs(down), bits, field="b")


class _SettleHere(_Edges):
    """(0, every confirmed edge) -> the rounds run here until one moves nothing, then as ``_settled``;
    counts each round's moved edges and the rounds as the unrolled rounds do."""

    def __init__(self, bits: int):
        super().__init__()
        self._bits = bits

    def process(self, element):
        _, parts = element
        edges = _rows(parts, EDGE)
        self.count("near_dedup.confirmed_pairs", len(np.unique(edges[edges["b"] > edges["a"]])))
        for r in range(LOCAL_ROUNDS):
            edges, moved = near_dedup.large_star(edges)
            edges, also = near_dedup.small_star(edges)
            edges = near_dedup.both_ways(edges)
            self.count(f"near_dedup.moved.{r}", moved + also)
            if not moved + also:
                break
        self.count("near_dedup.rounds", r + 1)
        yield from _members(edges, self._bits)


class _Clusters(_Edges):
    """(bucket, edges (member, least)) -> the losing keys, keyed by the exact-duplicate bucket they join,
    and each cluster's (size, least key) on the "clusters" output."""

    def __init__(self, dedup_bits: int):
        super().__init__()
        self._bits = dedup_bits

    def process(self, element):
        _, parts = element
        edges = _rows(parts, EDGE)
        losers = near_dedup.losers(edges)
        # Settled (every round but the last changed nothing): a member's one edge is to its cluster's least.
        roots, sizes = np.unique(edges["b"], return_counts=True)
        self.count("near_dedup.clusters", len(roots))
        self.count("near_dedup.documents_in_clusters", int(sizes.sum()) + len(roots))
        self.count("near_dedup.keys_removed", len(losers))
        for i in np.argsort(-sizes, kind="stable")[:LARGEST_CLUSTERS].tolist():
            yield beam.pvalue.TaggedOutput("clusters", (int(sizes[i]) + 1, int(roots[i])))
        found, starts = np.unique(dedup.bucket_of(losers, self._bits), return_index=True)
        for bucket, part in zip(found.tolist(), np.split(losers, starts[1:])):
            yield bucket, part.tobytes()


class NearDuplicates(beam.PTransform):
    """(bucket, band entries) -> {"losers": (dedup bucket, uint64 keys that lose), "counts", "examples":
    [(score, a, b, jaccard)] pairs, "clusters": [(size, least key)] the largest}.

    ``bits``: log2 of the buckets edges are grouped in (as band keys are: ``read.band_bits``);
    ``dedup_bits``: the exact-duplicate grouping's, which the losing keys join.
    """

    def __init__(self, config: NearDedupConfig, *, dedup_bits: int, bits: int, rounds: int, grouping: str,
                 temp_dir: str | None):  # fmt: skip
        super().__init__()
        self._config, self._dedup_bits, self._bits, self._rounds = config, dedup_bits, bits, rounds
        self._grouping, self._temp_dir = grouping, temp_dir

    def expand(self, bands):
        confirmed = (
            bands
            | "GroupBands"
            >> groups.SortedGroups(band_sorting(self._bits), mode=self._grouping, temp_dir=self._temp_dir)
            | "Confirm"
            >> beam.ParDo(_Confirm(self._config, self._bits)).with_outputs(COUNTS, "examples", main="edges")
        )
        counts, edges = [confirmed[COUNTS]], confirmed.edges
        if self._rounds:
            counts.append(bands.pipeline | "Rounds" >> beam.Create([{"near_dedup.rounds": self._rounds}]))
        for r in range(self._rounds):
            for step in ("large", "small"):
                stepped = (
                    edges
                    | f"Group{step.title()}Star{r}" >> beam.GroupByKey()
                    | f"{step.title()}Star{r}"
                    >> beam.ParDo(_Star(step, r, self._bits)).with_outputs(COUNTS, main="edges")
                )
                counts.append(stepped[COUNTS])
                edges = stepped.edges
        if self._rounds:
            settled = (
                edges
                | "GroupSettled" >> beam.GroupByKey()
                | "Settled"
                >> beam.FlatMap(_settled, self._bits).with_output_types(beam.typehints.Tuple[int, bytes])
            )
        else:
            here = (
                edges
                | "AllEdges"
                >> beam.MapTuple(lambda _, data: (0, data)).with_output_types(
                    beam.typehints.Tuple[int, bytes]
                )
                | "GroupEdges" >> beam.GroupByKey()
                | "SettleHere" >> beam.ParDo(_SettleHere(self._bits)).with_outputs(COUNTS, main="edges")
            )
            counts.append(here[COUNTS])
            settled = here.edges
        clusters = (
            settled
            | "GroupClusters" >> beam.GroupByKey()
            | "Clusters"
            >> beam.ParDo(_Clusters(self._dedup_bits)).with_outputs(COUNTS, "clusters", main="losers")
        )
        counts.append(clusters[COUNTS])
        return {
            "losers": clusters.losers,
            "counts": counts | "FlattenNearCounts" >> beam.Flatten(),
            "examples": confirmed.examples
            | "OncePerPair" >> beam.Distinct()  # a pair in several bands' buckets
            | "ExamplePairs" >> beam.combiners.Top.Smallest(EXAMPLE_PAIRS),
            "clusters": clusters.clusters | "LargestClusters" >> beam.combiners.Top.Largest(LARGEST_CLUSTERS),
        }


def summary(unused_trigger, texts, contamination, examples=(), clusters=()) -> dict:
    """What the manifest shows of near-duplicate removal and decontamination beside their counts: example
    pairs and the largest clusters with their documents' text, and contaminated documents with the
    evaluation item each shares an n-gram with."""
    text = dict(texts)
    return {
        "examples": [
            {"jaccard": round(jaccard, 4), "removed": text.get(b, ""), "near_copy_of": text.get(a, "")}
            for _, a, b, jaccard in examples
        ],
        "largest_clusters": [{"size": size, "kept": text.get(root, "")} for size, root in clusters],
        "contamination": [
            {"item": label, "item_text": item_text, "document": document}
            for _, label, item_text, document in contamination
        ],
    }
