"""The same job on the portable runner (as Flink and Spark run Python) and built for Dataflow."""

import os
import socket
import subprocess
import sys
import time

import pytest

from mlmprep.pipeline import job

from conftest import run_job

# Beam validates these offline: a real-looking project id, bucket names of 3+ characters.
DATAFLOW_DRY_RUN = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--no_auth",
    "--sdk_location=container",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker_pool():
    """A Beam Python worker pool in a separate process, stopped whatever happens."""
    port = _free_port()
    env = dict(os.environ)
    # The pool starts workers with a bare `python`: make it this environment's.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("localhost", port)) == 0:
                    break
            assert pool.poll() is None, "the worker pool exited"
            assert time.monotonic() < deadline, "the worker pool did not start listening"
            time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        pool.terminate()
        try:
            pool.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()


def test_portable_runner_with_external_workers_gives_identical_shards(
    tmp_path, worker_pool, real_data, bert_vocab
):
    args = [
        f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.2",
        "--num_shards=3",
    ]
    direct = run_job(tmp_path / "direct", *args)
    portable = run_job(
        tmp_path / "portable",
        *args,
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=EXTERNAL",
        f"--environment_config={worker_pool}",
    )
    assert [s["sha256"] for s in portable["shards"]] == [s["sha256"] for s in direct["shards"]]
    assert portable["counts"] == direct["counts"]


def test_dataflow_job_builds_offline_for_gcs(tmp_path, bert_vocab):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")
    result = job.run(
        [
            "--input=gs://my-bucket/corpus/*.txt.gz",
            "--input=gs://my-bucket/web/*.jsonl.zst",
            "--output=gs://my-bucket/mlm/v1",
            f"--tokenizer={bert_vocab}",
            *DATAFLOW_DRY_RUN,
            "--whole_word_masking",
            "--packing=concat",
        ]
    )
    steps = set(job.step_names(result))
    top = {s for s in steps if "/" not in s}
    assert {"SplitFiles", "SpreadRanges", "ReadDocuments", "Deduplicate", "Tokenize"} <= top
    assert {"KeyByConcatGroup", "GroupForConcat", "PackConcat", "Mask", "WriteShards"} <= top
    assert {"SumCounts", "WriteManifest"} <= top
    writes = {"GroupKeysByBucket", "ShardIndex", "AssignShards", "GroupByShard", "WriteShard"}
    assert {f"WriteShards/{name}" for name in writes} <= steps
    assert result.job.options.view_as(job.StandardOptions).runner == "DataflowRunner"


def test_cli_dry_run_says_it_built_the_job(bert_vocab):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "run",
            "--input=gs://my-bucket/corpus/*.txt",
            "--output=gs://my-bucket/out",
            f"--tokenizer={bert_vocab}",
            *DATAFLOW_DRY_RUN,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "dry run: the job was built, not run" in done.stdout
