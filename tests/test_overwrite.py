"""--overwrite replaces a build only once the new one is complete; a rerun that dies leaves the old one."""

import json
import os
import signal
import subprocess
import sys
import time

from mlmprep.pipeline import verify

from conftest import run_job


def _files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_a_rerun_killed_midway_leaves_the_previous_build_whole(tmp_path, real_data, bert_vocab):
    out = tmp_path / "out"
    inputs = [f"--input={real_data / 'corpora' / 'small' / '*.txt'}", f"--tokenizer={bert_vocab}"]
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
    assert second["generation"] == 1 and second["tokenizer"]["file"] == "tokenizer.g1.json"
    assert all(".g1." in s["file"] for s in second["shards"])
    # The new build is left, and what was not mlmprep's; the old build's and the killed run's files are gone.
    listed = {s["file"] for s in second["shards"]} | {second["tokenizer"]["file"]}
    assert set(_files(out)) == listed | {"manifest.json", "notes.txt"}
    assert verify.verify(str(out)).problems == []
    assert json.loads((out / "manifest.json").read_text()) == second

    # The next build over it takes generation 2, and holds what a fresh build would.
    third = run_job(out, *inputs, "--num_shards=4", "--overwrite")
    assert third["generation"] == 2
    assert [s["sha256"] for s in third["shards"]] == [s["sha256"] for s in first["shards"]]
    assert [s["file"].replace(".g2.", ".") for s in third["shards"]] == [s["file"] for s in first["shards"]]
