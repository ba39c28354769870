"""Records reach their shards by the engine's shuffle or by run files: the same bytes, and no text moved."""

import hashlib
import json
import pathlib
import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from mlmprep.pipeline import job, planning
from mlmprep.transforms import records
from mlmprep.transforms.beam import groups, write

from conftest import run_job


@pytest.fixture(scope="module")
def corpus(real_data, tmp_path_factory):
    """A few MB of real text in several files, with exact and whitespace-variant duplicates."""
    folder = tmp_path_factory.mktemp("corpus")
    tiny = real_data / "corpora" / "tiny"
    for path in sorted(tiny.glob("*.txt"))[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    kjv = (real_data / "corpora" / "small" / "kjv.txt").read_text(encoding="utf-8")
    (folder / "kjv.txt").write_text(kjv, encoding="utf-8")
    (folder / "kjv_copy.txt").write_text(kjv.replace(" ", "  ", 50), encoding="utf-8")
    return folder


def _shards(manifest, output):
    return {s["file"]: hashlib.sha256((pathlib.Path(output) / s["file"]).read_bytes()).hexdigest()
            for s in manifest["shards"]}  # fmt: skip


@pytest.mark.parametrize(
    "flags",
    [
        ["--num_shards=3", "--validation_fraction=0.1"],
        ["--packing=concat", "--whole_word_masking", "--num_shards=2", "--max_seq_length=64"],
    ],
    ids=["document", "concat"],
)
@pytest.mark.slow
def test_shuffle_and_run_files_write_the_same_bytes(tmp_path, corpus, bert_vocab, flags):
    args = [f"--input={corpus}/*.txt", f"--tokenizer={bert_vocab}", *flags]
    shuffled = run_job(tmp_path / "shuffle", *args, "--grouping=shuffle")
    merged = run_job(tmp_path / "runs", *args, "--grouping=run_files", "--direct_num_workers=2")
    assert _shards(shuffled, tmp_path / "shuffle") == _shards(merged, tmp_path / "runs")
    assert shuffled["counts"] == merged["counts"]
    assert shuffled["counts"]["documents_dropped"]["duplicate"] > 1000
    for output in ("shuffle", "runs"):
        assert not (tmp_path / output / planning.TEMP_DIR).exists()


@pytest.mark.slow
def test_retried_bundles_leave_no_trace(tmp_path, corpus, bert_vocab):
    args = [f"--input={corpus}/*.txt", f"--tokenizer={bert_vocab}", "--num_shards=3", "--grouping=run_files"]
    plain = run_job(tmp_path / "plain", *args)
    # What an earlier attempt left: a run file of records no later attempt makes.
    temp = tmp_path / "retried" / planning.TEMP_DIR
    temp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batch = records.MaskedBatch(
        rng.integers(1000, 2000, (50, 8)).astype(np.int32), np.full(50, 8, np.int32),
        np.ones((50, 2), np.int32), np.ones((50, 2), np.int32), np.full(50, 2, np.int32),
    )  # fmt: skip
    stale = records.to_rows(
        np.zeros(50, np.int8), rng.integers(0, 2**63, 50, dtype=np.uint64), batch, pa.uint16()
    )
    writer = groups.WriteRuns(write.RECORD_ORDER, str(temp))
    writer.start_bundle()
    list(writer.process(stale))
    [left_behind] = [out.value for out in writer.finish_bundle()]
    assert pathlib.Path(left_behind.path).exists()
    # Beam's own replay: every bundle runs twice, the first attempt's outputs (run references) thrown away.
    retried = run_job(tmp_path / "retried", *args, "--overwrite", "--direct_runner_bundle_repeat=1")
    assert _shards(retried, tmp_path / "retried") == _shards(plain, tmp_path / "plain")
    assert retried["counts"] == plain["counts"]
    assert not temp.exists()


def _measure_shuffles(p, out_file):
    """Adds to ``p`` a count of the pickled bytes entering each GroupByKey, written to ``out_file``."""
    entering = []

    class Finder(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey):
                entering.append((node.full_label, node.inputs[0]))

    p.visit(Finder())
    sizes = [
        pcoll
        | f"Size {label}" >> beam.Map(lambda kv: len(pickle.dumps(kv)))
        | f"Sum {label}" >> beam.CombineGlobally(sum)
        | f"Label {label}" >> beam.Map(lambda n, label=label: (label, n))
        for label, pcoll in entering
    ]
    _ = (
        sizes
        | "AllSizes" >> beam.Flatten()
        | "Collect" >> beam.combiners.ToDict()
        | "Save" >> beam.Map(lambda sizes: pathlib.Path(out_file).write_text(json.dumps(sizes)))
    )


@pytest.mark.parametrize("packing", ["document", "concat"])
@pytest.mark.slow
def test_no_text_and_no_records_cross_a_shuffle_on_the_local_runner(tmp_path, corpus, bert_vocab, packing):
    text_bytes = sum(p.stat().st_size for p in corpus.glob("*.txt"))
    argv = [f"--input={corpus}/*.txt", f"--output={tmp_path / 'out'}", f"--tokenizer={bert_vocab}"]
    argv += [f"--packing={packing}", "--validation_fraction=0.05", "--direct_num_workers=2"]
    pipeline_options, plan = planning.plan_command(argv)
    assert plan.grouping == "run_files"
    beam_flags = ["--direct_num_workers=2", *job.local_worker_flags(pipeline_options, plan, argv)]
    pipeline_options = PipelineOptions(beam_flags)
    p = beam.Pipeline(runner=job.local_runner(pipeline_options), options=pipeline_options)
    job.build_pipeline(p, plan)
    _measure_shuffles(p, tmp_path / "sizes.json")
    p.run().wait_until_finish()
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    records_written = sum(s["records"] for s in manifest["shards"]) // 2  # two formats
    assert records_written > 5_000
    # Digests (28 bytes a document), record keys (8 bytes a record), ranges and references only.
    assert sum(sizes.values()) < 0.03 * text_bytes, sizes
    assert max(sizes.values()) < 16 * records_written + 64 * manifest["counts"]["documents_read"], sizes


def test_merged_runs_and_a_shuffle_give_the_same_slices(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    n, width = 6000, 8
    keys = rng.integers(0, 1 << 12, n).astype(np.uint64)  # equal keys in plenty
    keys[::7] = keys[0]  # and one tie of hundreds of rows
    lengths = rng.integers(3, width + 1, n).astype(np.int32)
    ids = np.where(np.arange(width) < lengths[:, None], rng.integers(5, 9, (n, width)), 0).astype(np.int32)
    counts = rng.integers(0, 3, n).astype(np.int32)
    batch = records.MaskedBatch(ids, lengths, np.ones((n, 2), np.int32), ids[:, :2].copy(), counts)
    rows = pa.Table.from_batches(
        [records.to_rows(rng.integers(0, 2, n).astype(np.int8), keys, batch, pa.uint16())]
    )
    by_split = groups.Sorting(
        columns=records.SORT_COLUMNS,
        group=lambda rows: rows.column("split").to_numpy().astype(np.int64),
        tiebreak=records.content,
    )
    monkeypatch.setattr(groups, "RUN_BYTES", 30_000)  # many runs
    monkeypatch.setattr(groups, "RUN_BATCH_ROWS", 64)  # read back in many small batches
    writer = groups.WriteRuns(by_split, str(tmp_path))
    writer.start_bundle()
    runs, pieces, start = [], {0: [], 1: []}, 0
    while start < n:  # batches of every size, as masking emits them
        end = min(n, start + int(rng.integers(1, 700)))
        chunk = rows.slice(start, end - start)
        runs += list(writer.process(chunk.to_batches()[0]))
        for split in (0, 1):
            part = chunk.filter(pa.compute.equal(chunk.column("split"), split))
            pieces[split].append(groups.to_ipc(part))
        start = end
    runs += [out.value for out in writer.finish_bundle()]
    assert len(runs) > 5
    parts = {0: [], 1: []}
    for run in runs:
        for group, part in groups.locate(run, by_split):
            parts[group].append(part)
    for split in (0, 1):
        merged = list(groups.MergedGroup(parts[split], by_split).slices(97))
        shuffled = list(groups.ShuffledGroup(pieces[split], by_split).slices(97))
        assert [t.num_rows for t in merged] == [t.num_rows for t in shuffled]
        assert all(a.equals(b) for a, b in zip(merged, shuffled))
        # The order is (key, then content) over all the rows of the group, as one sort gives it.
        whole = pa.concat_tables(shuffled)
        mine = rows.filter(pa.compute.equal(rows.column("split"), split))
        content = records.content(mine, np.arange(mine.num_rows))
        expected = sorted(
            range(mine.num_rows), key=lambda i: (int(mine.column("key")[i].as_py()), content[i])
        )
        assert whole.equals(mine.take(expected))


def test_the_temporary_folder_is_deleted_whole_or_was_never_there(tmp_path):
    temp = tmp_path / planning.TEMP_DIR
    groups.delete_temp(str(temp))  # nothing written: nothing to do
    (temp / "sub").mkdir(parents=True)
    (temp / "run-1.arrow").write_bytes(b"x")
    (temp / "sub" / "left.incomplete").write_bytes(b"y")
    groups.delete_temp(str(temp))
    assert not temp.exists() and tmp_path.exists()
