"""--overwrite replaces a build only once the new one is complete; a rerun that dies leaves the old one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlmprep.pipeline import manifest, planning, verify

from conftest import run_job


def _files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.slow
def test_a_rerun_killed_midway_leaves_the_previous_build_whole(tmp_path, real_data, bert_vocab):
    out = tmp_path / "out"
    small = real_data / "corpora" / "small"
    inputs = [
        f"--input={small / 'jargon.txt'}",
        f"--input={small / 'devils_dictionary.txt'}",
        f"--tokenizer={bert_vocab}",
    ]
    first = run_job(out, *inputs, "--num_shards=4")
    (out / "notes.txt").write_text("the user's own file")
    before = _files(out)
    assert first["generation"] == 0 and "train-00000-of-00004.tfrecord" in before

    # A rerun with other options, killed (as a preempted machine would be) once its first shard is on disk.
    rerun = [*inputs, "--overwrite", "--num_shards=8", "--max_seq_length=64", "--dupe_factor=2"]
    job = subprocess.Popen(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--output={out}", *rerun],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not any(".g1." in name for name in os.listdir(out)):
        assert job.poll() is None, "the rerun ended before it wrote a shard"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert any(".g1." in name for name in os.listdir(out))  # the new build was under way...
    after = _files(out)
    assert {name: after[name] for name in before} == before  # ...and the old one is as it was
    report = verify.verify(str(out))
    assert report.problems == [] and report.records == sum(
        s["records"] for s in first["shards"] if s["format"] == "tfrecord"
    )

    second = run_job(out, *rerun)
    assert second["generation"] == 2  # above the killed attempt's files, which it never writes over
    assert second["tokenizer"]["file"] == "tokenizer.json"  # the same tokenizer keeps its file
    assert all(".g2." in s["file"] for s in second["shards"])
    # The new build is left, and what was not mlmprep's; the old build's and the killed run's files are gone.
    listed = {s["file"] for s in second["shards"]} | {second["tokenizer"]["file"]}
    assert set(_files(out)) == listed | {"manifest.json", "notes.txt"}
    assert verify.verify(str(out)).problems == []
    assert json.loads((out / "manifest.json").read_text()) == second

    # The next build over it takes generation 3, and holds what a fresh build would.
    third = run_job(out, *inputs, "--num_shards=4", "--overwrite")
    assert third["generation"] == 3
    assert [s["sha256"] for s in third["shards"]] == [s["sha256"] for s in first["shards"]]
    assert [s["file"].replace(".g3.", ".") for s in third["shards"]] == [s["file"] for s in first["shards"]]


def _plan(out, tokenizer, *flags):
    argv = [f"--input={tokenizer}", f"--tokenizer={tokenizer}", f"--output={out}", "--overwrite", *flags]
    return planning.plan_command(argv)[1]


def test_a_damaged_manifest_never_lets_a_build_write_over_the_files_there(tmp_path, bert_vocab):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train-00000-of-00001.g4.tfrecord", "tokenizer.g4.json", "manifest.json"):
        (out / name).write_text("{ damaged")
    job = _plan(out, bert_vocab)
    assert job.generation == 5 and job.replaces is None  # no finished build is there
    (out / "manifest.json").unlink()
    (out / "train-00000-of-00001.g7.parquet.0123456789abcdef0123456789abcdef.incomplete").write_text("")
    assert _plan(out, bert_vocab).generation == 8  # a killed attempt's files count too
    assert _plan(tmp_path / "empty", bert_vocab).generation == 0


def test_stale_files_are_other_builds_and_never_the_users():
    keep = {"train-00000-of-00002.g3.tfrecord", "tokenizer.json", "manifest.json"}
    replaced = ["train-00000-of-00001.tfrecord", "tokenizer.json"]
    names = [
        *keep,
        *replaced,
        "train-00000-of-00002.g2.parquet",  # a killed attempt's
        "train-00001-of-00002.g3.tfrecord.0123456789abcdef0123456789abcdef.incomplete",
        "manifest.json.fedcba9876543210fedcba9876543210.incomplete",
        "tokenizer.g1.json",
        # The user's: names mlmprep does not write, or that no manifest of a finished build lists.
        "notes.txt",
        "train-00000-of-00010.parquet",
        "validation.tfrecord",
        "tokenizer.model",
        "train-00000-of-00002.g3.tfrecord.backup",
    ]
    stale = manifest.stale_files(names, keep, replaced)
    assert sorted(stale) == sorted(
        [
            "train-00000-of-00001.tfrecord",
            "train-00000-of-00002.g2.parquet",
            "train-00001-of-00002.g3.tfrecord.0123456789abcdef0123456789abcdef.incomplete",
            "manifest.json.fedcba9876543210fedcba9876543210.incomplete",
            "tokenizer.g1.json",
        ]
    )
    # Without a finished build, shard names are a failed attempt's; a tokenizer.json may be the user's input.
    assert "train-00000-of-00010.parquet" in manifest.stale_files(names, keep - {"tokenizer.json"}, None)
    assert "tokenizer.json" not in manifest.stale_files(names, keep - {"tokenizer.json"}, None)


@pytest.mark.slow
def test_the_outputs_own_tokenizer_can_build_over_it_again_and_again(tmp_path, real_data, bert_vocab):
    out = tmp_path / "out"
    inputs = f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}"
    first = run_job(out, inputs, f"--tokenizer={bert_vocab}")
    for generation in (1, 2):
        again = run_job(out, inputs, f"--tokenizer={out / 'tokenizer.json'}", "--overwrite")
        assert again["generation"] == generation and again["tokenizer"] == first["tokenizer"]
        assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]
