"""Rows grouped by key, each group's rows in sorted order: through the runner's shuffle, or through run files.

A step that needs a group's rows together and in order (a shard's records,
a concat-packing group's documents) gets them from ``SortedGroups``, which
has two expansions with the same result, row for row, as Beam itself
expands some transforms differently per runner:

``shuffle``: rows travel in the elements of a GroupByKey, and a group is
sorted where it is read. Dataflow's shuffle, Flink and Spark spill to disk,
so this holds at any corpus size; it is the path on distributed runners.

``run_files``: the in-memory local runner keeps everything that crosses a
shuffle in RAM. So each worker sorts what it produces, about RUN_BYTES at a
time, into a run file under the job's temporary folder (Beam's
temp-then-finalize pattern), and only references to each group's rows in
each run cross the shuffle: ``(group, (run file, first row, end row))``. A
group is then a k-way merge of its rows in the runs, a slice at a time. A
run file is named by a hash of its content and written under a temporary
name first, so a retried bundle writes the same file again; runs of a failed
attempt are never referenced, and the job deletes the folder at its end.

Rows are Arrow record batches. The order is by unsigned integer columns;
rows equal in them are ordered by a content tiebreak, and a slice never
splits such a tie, so both expansions cut a group into the same slices.
Equal keys mean equal content but for a 63-bit collision: one sequence that
recurs (a boilerplate header, copies kept with ``--nodedup``) is one tie,
so a slice grows by its copies, and they stay in one shard.
"""

import dataclasses
import hashlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import shards
from mlmprep.transforms.beam.counting import in_global_window

MODES = shards.GROUPINGS
RUN_BYTES = 32 << 20  # rows a worker sorts at once, before they leave it (Arrow buffer bytes)
RUN_BATCH_ROWS = 4096  # rows per record batch in a run file: the unit read back
_TEMP_SUFFIX = ".incomplete"


@dataclasses.dataclass(frozen=True)
class Sorting:
    """How rows are ordered and grouped.

    ``columns``: unsigned integer columns, ascending, in order of precedence.
    ``group``: ``(rows, *side_inputs) -> int64 [n]``, a function of the sort
    columns alone that never decreases along the order (so a group's rows
    are contiguous in every sorted run).
    ``tiebreak``: ``(rows, indices) -> bytes per row``, ordering rows whose
    sort columns are equal.
    """

    columns: tuple[str, ...]
    group: Callable
    tiebreak: Callable


def _column(rows, name: str) -> np.ndarray:
    return rows.column(name).to_numpy()


def sorted_order(rows, sorting: Sorting) -> np.ndarray:
    """Indices that put ``rows`` in order: by the sort columns, then (for ties) by the tiebreak."""
    columns = [_column(rows, c) for c in sorting.columns]
    order = np.lexsort(columns[::-1])
    ties = _ties([c[order] for c in columns])
    if ties:
        tied = np.concatenate([order[start:end] for start, end in ties])
        content = iter(sorting.tiebreak(rows, tied))
        for start, end in ties:
            keys = [next(content) for _ in range(end - start)]
            order[start:end] = order[start:end][sorted(range(end - start), key=keys.__getitem__)]
    return order


def take(rows: pa.Table, indices: np.ndarray) -> pa.Table:
    """``rows.take(indices)``, on one chunk per column: Arrow's take is several times slower across chunks."""
    return rows.combine_chunks().take(indices)


def _changes(sorted_columns: list[np.ndarray]) -> np.ndarray:
    """Positions i > 0 where row i differs from row i - 1 in some sort column."""
    if not len(sorted_columns[0]):
        return np.zeros(0, np.int64)
    change = np.zeros(len(sorted_columns[0]) - 1, dtype=bool)
    for column in sorted_columns:
        change |= column[1:] != column[:-1]
    return np.flatnonzero(change) + 1


def _ties(sorted_columns: list[np.ndarray]) -> list[tuple[int, int]]:
    """[start, end) of each run of two or more rows equal in every sort column."""
    n = len(sorted_columns[0])
    bounds = np.concatenate([[0], _changes(sorted_columns), [n]]) if n else np.zeros(1, np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]


def _cuts(sorted_columns: list[np.ndarray], slice_rows: int) -> list[int]:
    """Slice bounds: every ``slice_rows`` rows, moved on to the end of a tie it would split."""
    n = len(sorted_columns[0])
    changes = _changes(sorted_columns)
    cuts, at = [0], slice_rows
    while at < n:
        i = np.searchsorted(changes, at)
        if i == len(changes):
            break
        cuts.append(int(changes[i]))
        at = cuts[-1] + slice_rows
    return [*cuts, n]


def _slices(table: pa.Table, sorting: Sorting, slice_rows: int) -> Iterator[pa.Table]:
    """A sorted table in the slices ``_cuts`` gives."""
    bounds = _cuts([_column(table, c) for c in sorting.columns], slice_rows)
    for start, end in zip(bounds[:-1], bounds[1:]):
        yield table.slice(start, end - start)


def to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes: what a shuffle moves of a group."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


class _Buffered(beam.DoFn):
    """Collects record batches up to RUN_BYTES, then hands them on as one table (``_flush``)."""

    def __init__(self, sorting: Sorting):
        self._sorting = sorting
        self._batches = []
        self._bytes = 0
        self._side = ()

    def start_bundle(self):
        self._batches, self._bytes = [], 0

    def process(self, batch, *side):
        self._side = side
        self._batches.append(batch)
        self._bytes += batch.nbytes
        if self._bytes >= RUN_BYTES:
            yield from self._take()

    def finish_bundle(self):
        if self._batches:
            for out in self._take():
                yield in_global_window(out)

    def _take(self):
        table = pa.Table.from_batches(self._batches)
        self._batches, self._bytes = [], 0
        return self._flush(table)


class _ShuffleRows(_Buffered):
    """Record batches -> (group, Arrow IPC bytes of its rows): what a shuffle moves."""

    def _flush(self, table):
        groups = self._sorting.group(table, *self._side)
        order = np.argsort(groups, kind="stable")
        values, starts = np.unique(groups[order], return_index=True)
        table = take(table, order)
        for group, start, end in zip(values, starts, [*starts[1:], len(order)]):
            yield int(group), to_ipc(table.slice(start, end - start))


class RunFile(NamedTuple):
    path: str  # the rows; their sort columns alone are in ``path + KEYS``
    rows: int


KEYS = ".keys"


def _write(path: str, data: pa.Buffer) -> None:
    """Writes a file under a temporary name and renames it: a reader never sees half of it."""
    temp = f"{path}.{uuid.uuid4().hex}{_TEMP_SUFFIX}"
    with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    FileSystems.rename([temp], [path])


def _ipc_file(table: pa.Table, batch_rows: int) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return sink.getvalue()


class WriteRuns(_Buffered):
    """Record batches -> RunFile: each RUN_BYTES of rows sorted into a run file under ``temp_dir``."""

    def __init__(self, sorting: Sorting, temp_dir: str):
        super().__init__(sorting)
        self._temp_dir = temp_dir

    def _flush(self, table):
        table = take(table, sorted_order(table, self._sorting))
        data = _ipc_file(table, RUN_BATCH_ROWS)
        name = hashlib.blake2b(data, digest_size=16).hexdigest()  # a retried bundle rewrites the same file
        path = FileSystems.join(self._temp_dir, f"run-{name}.arrow")
        _write(path, data)
        _write(path + KEYS, _ipc_file(table.select(list(self._sorting.columns)), RUN_BATCH_ROWS))
        yield RunFile(path, table.num_rows)


def _source(path: str):
    """A run file to read from, closed by ``with`` (not memory-mapped: mapped pages a merge touched would
    stay in its resident memory, a shard's worth of them)."""
    if "://" not in path:
        return pa.OSFile(path)
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _Cursor:
    """Reads consecutive row ranges of one file of record batches of RUN_BATCH_ROWS rows each.

    Each record batch is read once, however many ranges it serves; the file
    is opened for each read and closed again, so a merge of thousands of runs
    holds no file open between reads.
    """

    def __init__(self, path: str):
        self._path = path
        self._batch = (-1, None)  # the last batch read, and its index

    def rows(self, start: int, end: int) -> pa.Table:
        """Rows [start, end), ``start`` at or after the last call's."""
        first, last = start // RUN_BATCH_ROWS, (end - 1) // RUN_BATCH_ROWS
        if self._batch[0] != first or last > first:
            batches = [self._batch[1]] if self._batch[0] == first else []
            with _source(self._path) as source:
                reader = pa.ipc.open_file(source)
                batches += [reader.get_batch(i) for i in range(first + len(batches), last + 1)]
            self._batch = (last, batches[-1])
        else:
            batches = [self._batch[1]]
        return pa.Table.from_batches(batches).slice(start - first * RUN_BATCH_ROWS, end - start)


def locate(run: RunFile, sorting: Sorting, *side):
    """RunFile -> (group, (run path, first row, end row)) for each group with rows in the run."""
    with _source(run.path + KEYS) as source:
        groups = sorting.group(pa.ipc.open_file(source).read_all(), *side)
    values, starts = np.unique(groups, return_index=True)
    for group, start, end in zip(values, starts, [*starts[1:], len(groups)]):
        yield int(group), (run.path, int(start), int(end))


@dataclasses.dataclass
class ShuffledGroup:
    """A group's rows as the shuffle delivered them, in pieces."""

    pieces: list[bytes]
    sorting: Sorting

    def slices(self, slice_rows: int) -> Iterator[pa.Table]:
        """The group's rows, sorted, a slice at a time (the whole group is held: the engine's own way)."""
        tables = [_from_ipc(piece) for piece in self.pieces]
        if not tables:
            return
        table = pa.concat_tables(tables)
        yield from _slices(take(table, sorted_order(table, self.sorting)), self.sorting, slice_rows)


@dataclasses.dataclass
class MergedGroup:
    """A group's rows as ranges of sorted run files."""

    parts: list[tuple[str, int, int]]
    sorting: Sorting

    def slices(self, slice_rows: int) -> Iterator[pa.Table]:
        """The group's rows merged from its runs, a slice at a time: what is held is a slice's rows and
        the group's sort columns (a few bytes a row); every run's rows and keys are read once."""
        parts = sorted(self.parts)
        if not parts:
            return
        keys = [_Cursor(path + KEYS).rows(start, end) for path, start, end in parts]
        columns = [np.concatenate([_column(k, c) for k in keys]) for c in self.sorting.columns]
        sizes = [end - start for _, start, end in parts]
        order = np.lexsort(columns[::-1])  # stable: ties stay in part order, resolved in their slice
        bounds = _cuts([c[order] for c in columns], slice_rows)
        # Rows of each part before each bound: a part is sorted, so a slice takes a range of each.
        slice_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        part_of = np.repeat(np.arange(len(parts)), sizes)[order]
        before = np.zeros((len(bounds), len(parts)), dtype=np.int64)
        np.add.at(before, (slice_of + 1, part_of), 1)
        np.cumsum(before, axis=0, out=before)
        cursors = [_Cursor(path) for path, _, _ in parts]
        for i in range(len(bounds) - 1):
            pieces = [
                cursors[p].rows(start + before[i, p], start + before[i + 1, p])
                for p, (_, start, _) in enumerate(parts)
                if before[i + 1, p] > before[i, p]
            ]
            table = pa.concat_tables(pieces)
            yield take(table, sorted_order(table, self.sorting))


class SortedGroups(beam.PTransform):
    """Arrow record batches -> (group, ShuffledGroup or MergedGroup), whose ``slices`` give the rows in order.

    ``side_inputs`` are passed to ``sorting.group`` after the rows.
    """

    def __init__(self, sorting: Sorting, *, mode: str, temp_dir: str | None = None, side_inputs=()):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._sorting = sorting
        self._mode = mode
        self._temp_dir = temp_dir
        self._side_inputs = tuple(side_inputs)

    def expand(self, batches):
        sorting = self._sorting
        if self._mode == "shuffle":
            return (
                batches
                | "ShuffleRows" >> beam.ParDo(_ShuffleRows(sorting), *self._side_inputs)
                | "GroupRows" >> beam.GroupByKey()
                | "ShuffledGroups"
                >> beam.MapTuple(lambda g, pieces: (g, ShuffledGroup(list(pieces), sorting)))
            )
        return (
            batches
            | "WriteRuns" >> beam.ParDo(WriteRuns(sorting, self._temp_dir))
            | "LocateGroups" >> beam.FlatMap(locate, sorting, *self._side_inputs)
            | "GroupRuns" >> beam.GroupByKey()
            | "MergedGroups" >> beam.MapTuple(lambda g, parts: (g, MergedGroup(list(parts), sorting)))
        )


def delete_temp(temp_dir: str) -> None:
    """Deletes the job's temporary folder, with every run file in it, used or not."""
    if "://" not in temp_dir:
        # Beam's local delete would match the folder's files, not the folder itself.
        shutil.rmtree(temp_dir, ignore_errors=True)
        return
    try:
        FileSystems.delete([temp_dir.rstrip("/") + "/"])  # a trailing slash: the prefix, recursively
    except BeamIOError:
        pass  # nothing there: no run files were written
