"""The same job run locally, on the portable runner (as Flink and Spark run Python), built for Dataflow."""

import dataclasses
import logging
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from mlmprep.pipeline import job, planning

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


def test_local_run_never_tries_prism(tmp_path, real_data, bert_vocab, caplog):
    # Beam's DirectRunner tries Prism first, a runner it downloads, which would ignore the worker count.
    # Its job server also left an empty beam-temp* folder in the temp directory on every run.
    caplog.set_level(logging.INFO, logger="apache_beam.runners")
    temp_before = set(pathlib.Path(tempfile.gettempdir()).glob("beam-temp*"))
    manifest = run_job(
        tmp_path / "out", f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}", f"--tokenizer={bert_vocab}"
    )
    assert manifest["counts"]["documents_read"] > 0
    assert [r.getMessage() for r in caplog.records if "prism" in r.getMessage().lower()] == []
    assert set(pathlib.Path(tempfile.gettempdir()).glob("beam-temp*")) == temp_before


@pytest.mark.parametrize(
    "input_mb, runner_flags, mode, workers",
    [
        (1, [], "in_memory", 1),
        (64, [], "multi_processing", 2),  # a process per two cores
        (64, ["--direct_num_workers=3"], "multi_processing", 3),
        (1, ["--direct_num_workers", "2"], "multi_processing", 2),
        (64, ["--direct_num_workers=1"], "in_memory", 1),  # an explicit 1 is honoured
        (64, ["--direct_running_mode=multi_threading"], "multi_threading", 1),
        (64, ["--direct_running_mode=in_memory"], "in_memory", 1),
        (64, ["--runner=DirectRunner"], "in_memory", 1),
    ],
)
def test_worker_processes_from_32_mb_of_input(
    tmp_path, real_data, bert_vocab, monkeypatch, input_mb, runner_flags, mode, workers
):
    monkeypatch.setattr(job, "available_cores", lambda: 4)
    argv = [
        f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}",
        f"--output={tmp_path / 'out'}",
        f"--tokenizer={bert_vocab}",
        *runner_flags,
    ]
    pipeline_options, plan = planning.plan_command(argv)
    plan = dataclasses.replace(plan, input_bytes=input_mb << 20)
    chosen = job.local_worker_flags(pipeline_options, plan, runner_flags)
    pipeline_options = PipelineOptions([*runner_flags, *chosen])
    runner = job.local_runner(pipeline_options)
    assert (runner is None) == ("--runner=DirectRunner" in runner_flags)
    assert runner is None or isinstance(runner, FnApiRunner)
    direct = pipeline_options.view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == (mode, workers)


def test_exit_freezes_the_heap_once_asked_and_importing_asks_nothing():
    # A collection at exit costs each worker process 0.3 s or more; frozen objects are skipped.
    script = (
        "import atexit, gc, sys\n"
        "import mlmprep.transforms.beam as glue, mlmprep.pipeline.job\n"
        "atexit.register(lambda: print('before', gc.get_freeze_count() > 0))\n"
        "if sys.argv[1] == 'asked': glue.exit_quickly(); glue.exit_quickly()\n"
        "atexit.register(lambda: print('last registered', gc.get_freeze_count() > 0))\n"
    )
    for asked, frozen in (("asked", True), ("not asked", False)):
        done = subprocess.run(
            [sys.executable, "-c", script, asked], capture_output=True, text=True, check=True
        )
        assert done.stdout.splitlines() == ["last registered False", f"before {frozen}"]


@pytest.mark.slow
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
    assert {"ReadDocuments", "Tokenize", "ConcatRows", "GroupForConcat", "PackConcat", "Mask"} <= top
    assert {"WriteShards", "SumCounts", "WriteManifest"} <= top
    reads = {"SplitFiles", "SpreadRanges", "ReadDigests", "GroupDigests", "RangesWithLosers", "ReadBatches"}
    assert {f"ReadDocuments/{name}" for name in reads} <= steps
    writes = {"GroupKeysByBucket", "ShardIndex", "GroupByShard", "WriteShard"}
    assert {f"WriteShards/{name}" for name in writes} <= steps
    # On a distributed runner, records reach their shards through the engine's shuffle.
    assert {"WriteShards/GroupByShard/ShuffleRows", "WriteShards/GroupByShard/GroupRows"} <= steps
    assert not any("WriteRuns" in s for s in steps)
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
