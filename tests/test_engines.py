"""The job on Apache Flink and Apache Spark: Beam's job servers fetched by deploy/fetch-engines.sh and found
by ``mlmprep run``; Flink embedded and Spark on local[2], each with parallelism 2, write every shard byte
for byte as the direct runner does, and the same manifest but for the output's path."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import clusters
import pytest
from test_deploy import _TEST_DAG, DAG_FILE, _airflow, needs_airflow

from mlmprep.pipeline import engines, verify

from conftest import REPO, run_job

CONFIGURATIONS = {
    "default": [],
    "best_fit_span_near_dedup": [
        "--packing=best_fit",
        "--masking=span",
        "--max_seq_length=256",
        "--near_dedup",
    ],
    "nsp_pairs": ["--sentence_pairs=nsp"],
}
ENGINES = {
    "flink": ["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2"],
    "spark": ["--runner=SparkRunner", "--spark_master_url=local[2]"],
}


def _run(argv, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *argv],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
    )  # fmt: skip


def test_an_engine_without_its_job_server_is_one_line_naming_the_fetch_command(tmp_path, bert_vocab):
    (tmp_path / "in.txt").write_text("one document\n")
    for runner, flag in (
        ("SparkRunner", "--spark_job_server_jar"),
        ("FlinkRunner", "--flink_job_server_jar"),
    ):
        done = _run(
            [f"--input={tmp_path / 'in.txt'}", f"--tokenizer={bert_vocab}", f"--output={tmp_path / 'out'}",
             f"--runner={runner}"],
            env={engines.HOME_VARIABLE: str(tmp_path / "no-engines")},
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr
        if shutil.which("java"):
            assert f"fetch it with {engines.FETCH_COMMAND}" in lines[0] and flag in lines[0]
        else:
            assert "needs Java" in lines[0]
        assert not (tmp_path / "out").exists()


def test_runs_on_an_engine_get_the_job_server_its_version_and_loopback_workers_where_embedded(tmp_path):
    launcher = tmp_path / engines.JOB_SERVERS["FlinkRunner"].folder / "launcher.jar"
    launcher.parent.mkdir()
    launcher.write_bytes(b"")
    os.environ[engines.HOME_VARIABLE] = str(tmp_path)
    try:
        if shutil.which("java") is None:
            pytest.skip("no Java here: the flags are only filled where a job server can start")
        assert engines.runner_flags(["--runner", "FlinkRunner"]) == [
            f"--flink_job_server_jar={launcher}", f"--flink_version={engines.FLINK_VERSION}",
            "--environment_type=LOOPBACK",
        ]  # fmt: skip
        remote = ["--runner=FlinkRunner", "--flink_master=jobmanager:8081", "--environment_type=EXTERNAL"]
        assert engines.runner_flags(remote) == [f"--flink_job_server_jar={launcher}", "--flink_version=1.19"]
        assert engines.runner_flags(["--runner=FlinkRunner", "--flink_job_server_jar=x.jar"]) == [
            "--environment_type=LOOPBACK"
        ]
        assert engines.runner_flags(["--runner=DataflowRunner"]) == []
    finally:
        del os.environ[engines.HOME_VARIABLE]


@pytest.fixture(scope="module")
def job_servers():
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("Java and Maven fetch and run the job servers")
    return engines.fetch(engines.home())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_data):
    """Real text of three sources, 700 KB: enough for several bundles and both splits."""
    path = tmp_path_factory.mktemp("engines") / "corpus.txt"
    sizes = {"kjv.txt": 400_000, "jargon.txt": 200_000, "devils_dictionary.txt": 100_000}
    parts = [(real_data / "corpora" / "small" / name).read_bytes()[:size].rsplit(b"\n\n", 1)[0]
             for name, size in sizes.items()]  # fmt: skip
    path.write_bytes(b"\n\n".join(parts))
    return path


def _digests(out) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {s["file"]: hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() for s in manifest["shards"]}


def _manifest(out) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["settings"]["output"]  # where it went: the one field that names the run, not the data
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_flink_and_spark_write_what_the_direct_runner_writes(
    job_servers, corpus, bert_vocab, tmp_path, configuration
):
    common = [f"--input={corpus}", f"--tokenizer={bert_vocab}", "--validation_fraction=0.05",
              "--num_shards=3", *CONFIGURATIONS[configuration]]  # fmt: skip
    done = _run([*common, f"--output={tmp_path / 'direct'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _digests(tmp_path / "direct")
    assert len(expected) == 8  # 3 train and 1 validation shard, two formats
    for engine, flags in ENGINES.items():
        done = _run([*common, f"--output={tmp_path / engine}", *flags])
        assert done.returncode == 0, done.stderr[-3000:]
        assert _digests(tmp_path / engine) == expected, engine
        assert _manifest(tmp_path / engine) == _manifest(tmp_path / "direct"), engine


@pytest.fixture(scope="module")
def homes(job_servers):
    return engines.fetch_distributions(engines.home())


@pytest.fixture(scope="module")
def pool():
    with clusters.worker_pool() as address:
        yield {"ENVIRONMENT_TYPE": "EXTERNAL", "ENVIRONMENT_CONFIG": address}


# Each standalone cluster is started once for the tests below, with two TaskManagers (workers) and the
# restart strategy in the cluster's own configuration; the fault test, last, kills one of them.
RESTARTS = {
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": "2 s",
}


@pytest.fixture(scope="module")
def flink_standalone(homes, tmp_path_factory):
    work = tmp_path_factory.mktemp("flink-cluster")
    with clusters.flink_cluster(homes["flink"], work, taskmanagers=2, slots=2, settings=RESTARTS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def spark_standalone(homes, tmp_path_factory):
    work = tmp_path_factory.mktemp("spark-cluster")
    with clusters.spark_cluster(homes["spark"], work, workers=2, cores=1) as (master, processes):
        yield master, processes, work


def _script(script, env, argv, wait=True):
    command = [str(REPO / "deploy" / script), *argv]
    env = {**os.environ, "PATH": f"{clusters.VENV_BIN}:{os.environ['PATH']}", **env}
    if not wait:
        return subprocess.Popen(
            command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)


@pytest.mark.slow
def test_the_deploy_scripts_submit_to_standalone_clusters_and_write_what_the_direct_runner_writes(
    flink_standalone, spark_standalone, pool, corpus, bert_vocab, tmp_path
):
    common = [
        f"--input={corpus}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.05",
        "--num_shards=3",
    ]
    done = _run([*common, f"--output={tmp_path / 'direct'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _digests(tmp_path / "direct")
    env = {"FLINK_MASTER": flink_standalone[0], "PARALLELISM": "2", **pool}
    done = _script("flink/run.sh", env, [*common, f"--output={tmp_path / 'flink'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    done = _script(
        "spark/run.sh",
        {"SPARK_MASTER": spark_standalone[0], **pool},
        [*common, f"--output={tmp_path / 'spark'}"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for engine in ("flink", "spark"):
        assert _digests(tmp_path / engine) == expected, engine
        assert _manifest(tmp_path / engine) == _manifest(tmp_path / "direct"), engine


@pytest.mark.slow
@needs_airflow
def test_the_airflow_dag_builds_on_a_flink_cluster(flink_standalone, pool, real_data, bert_vocab, tmp_path):
    home, corpus, builds = tmp_path / "airflow", tmp_path / "corpus", tmp_path / "builds"
    corpus.mkdir()
    (corpus / "kjv.txt").write_bytes((real_data / "corpora" / "tiny" / "kjv.txt").read_bytes())
    settings = {"max_seq_length": 64, "num_shards": 2, "validation_fraction": 0.1}
    direct = run_job(tmp_path / "direct", f"--input={corpus}/*.txt", f"--tokenizer={bert_vocab}",
                     *(f"--{k}={v}" for k, v in settings.items()))  # fmt: skip
    engine = {"flink_master": flink_standalone[0], "parallelism": 2, "environment_type": "EXTERNAL",
              "environment_config": pool["ENVIRONMENT_CONFIG"]}  # fmt: skip
    variables = {
        "mlmprep_inputs": f"{corpus}/*.txt",
        "mlmprep_tokenizer": str(bert_vocab),
        "mlmprep_output_base": str(builds),
        "mlmprep_runner": "FlinkRunner",
        "mlmprep_options": json.dumps({**settings, **engine}),
    }
    (tmp_path / "variables.json").write_text(json.dumps(variables))
    _airflow(home, "-m", "airflow", "db", "migrate")
    _airflow(home, "-m", "airflow", "variables", "import", str(tmp_path / "variables.json"))
    ran = json.loads(_airflow(home, "-c", _TEST_DAG, str(DAG_FILE), "2026-01-01"))
    assert ran == {"run": "success", "needs_rebuild": "success", "build_corpus": "success"}
    built = builds / "20260101"
    assert verify.verify(str(built)).problems == []
    assert _digests(built) == _digests(tmp_path / "direct") and direct["shards"]


def _kill_when(process: subprocess.Popen, running, victim: subprocess.Popen, after: float) -> bool:
    """Kills ``victim`` ``after`` seconds into the job (once ``running()`` says it runs); False if the job
    ended first."""
    while process.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if running():
                time.sleep(after)
                if process.poll() is None:
                    clusters.stop(victim, signal.SIGKILL)
                    return True
                return False
        time.sleep(0.5)
    return False


def _complete_or_nothing(out, direct, returncode) -> str:
    """The fault rule: a finished run's output is complete and verified, a failed one left no manifest."""
    if returncode == 0:
        assert verify.verify(str(out)).problems == []
        assert _digests(out) == _digests(direct)
        return "finished by the engine's retry"
    assert not (out / "manifest.json").exists()
    return "failed cleanly"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["flink", "spark"])
def test_killing_a_task_manager_or_worker_mid_run_leaves_a_complete_output_or_none(
    flink_standalone, spark_standalone, pool, real_data, bert_vocab, tmp_path, engine
):
    corpus = tmp_path / "kjv.txt"  # 2 MB: a run of about half a minute on a cluster here
    corpus.write_bytes((real_data / "corpora" / "small" / "kjv.txt").read_bytes()[:2_000_000])
    common = [f"--input={corpus}", f"--tokenizer={bert_vocab}", "--num_shards=4"]
    assert _run([*common, f"--output={tmp_path / 'direct'}"]).returncode == 0
    out = tmp_path / engine
    if engine == "flink":
        master, processes = flink_standalone
        url = f"http://{master}/jobs/overview"

        def running():
            return any(j["state"] == "RUNNING" for j in clusters.get_json(url)["jobs"])

        job = _script("flink/run.sh", {"FLINK_MASTER": master, "PARALLELISM": "2", **pool},
                      [*common, f"--output={out}"], wait=False)  # fmt: skip
    else:
        master, processes, work = spark_standalone

        def running():  # an executor of this run's application has started
            return any(work.glob("work/app-*/*/stderr")) and job_started[0] < max(
                p.stat().st_mtime for p in work.glob("work/app-*")
            )

        job_started = [time.time()]
        job = _script(
            "spark/run.sh", {"SPARK_MASTER": master, **pool}, [*common, f"--output={out}"], wait=False
        )
    killed = _kill_when(job, running, processes[-1], after=8)
    _, stderr = job.communicate(timeout=600)
    outcome = _complete_or_nothing(out, tmp_path / "direct", job.returncode)
    print(
        f"{engine}: one of two {'TaskManagers' if engine == 'flink' else 'workers'} killed mid-run: {outcome}"
    )
    assert killed, "the job ended before the kill: make the input larger"
    if job.returncode:
        print(stderr[-2000:])
