"""deploy/ without a cluster: files parse, scripts use real flags, fingerprints decide rebuilds."""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import apache_beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from mlmprep.pipeline import errors, fingerprint, flags, pins, planning, settings, verify

from conftest import REPO, run_job

DEPLOY = REPO / "deploy"


def _run_options() -> set[str]:
    return {*settings.RUN_FLAGS, "config"}


def _beam_flags() -> set[str]:
    parser = argparse.ArgumentParser()
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return {s for a in parser._actions for s in a.option_strings}


def test_flex_template_parameters_are_run_options():
    spec = json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())
    names = [p["name"] for p in spec["parameters"]]
    assert {"input", "output", "tokenizer"} <= set(names)
    assert set(names) <= _run_options()
    assert all(p["helpText"] and p["label"] for p in spec["parameters"])
    required = {p["name"] for p in spec["parameters"] if not p["isOptional"]}
    assert required == {"input", "output", "tokenizer"}


@pytest.mark.parametrize("script", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.sh")))
def test_scripts_are_valid_bash_with_known_flags(script):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    flags = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", path.read_text()))
    known = _beam_flags() | {f"--{o}" for o in _run_options()}
    # gcloud's flags (dashed, or these) and Beam's worker_pool_main's.
    other_tools = {"--project", "--region", "--config", "--image", "--parameters", "--service_port"}
    unknown = {f for f in flags if f not in known and f not in other_tools and "-" not in f[2:]}
    assert not unknown, unknown


def _constraints() -> dict[str, str]:
    return pins.parse((REPO / "constraints.txt").read_text())


def test_the_workers_pins_and_the_container_are_the_tested_versions():
    constraints = _constraints()
    workers = pins.parse((DEPLOY / "requirements.txt").read_text())
    assert {"apache-beam", "tokenizers", "pyarrow", "numpy"} <= set(workers)
    assert {n: v for n, v in workers.items() if constraints.get(n) != v} == {}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ARG BEAM_VERSION={constraints['apache-beam']}" in dockerfile
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    assert "pip install --no-cache-dir -c constraints.txt -r deploy/requirements.txt" in dockerfile
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/mlmprep/deploy/dataflow/main.py" in dockerfile
    assert (DEPLOY / "dataflow" / "main.py").exists()


def test_every_install_reads_the_constraints():
    """The commands of the README and docs/ and CI install the tested versions, never whatever was released
    since."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "pip freeze" not in b]  # moving on
    commands = [line for block in blocks for line in block.splitlines()]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    installs = [line for line in commands + ci if re.search(r"pip install (?!(-q )?--upgrade pip)", line)]
    assert len(installs) >= 4
    assert [line for line in installs if "-c constraints.txt" not in line] == []


def test_this_environment_is_the_tested_one():
    """Installed with the README's command, every package the constraints name is at its tested version."""
    differ = pins.differences({n: v for n, v in _constraints().items() if _installed(n)})
    assert differ == [], "reinstall with: pip install -c constraints.txt -e '.[dev,airflow,report]'"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "differ from this environment" in line]


@pytest.mark.slow
def test_a_remote_job_whose_workers_pins_differ_says_so_in_one_line(tmp_path, bert_vocab):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")
    text = (DEPLOY / "requirements.txt").read_text()
    other = re.sub(r"tokenizers==[\w.]+", "tokenizers==0.20.0", text)
    (tmp_path / "other.txt").write_text(other)
    dataflow = [
        "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
        "--project=my-project", "--region=us-central1", "--temp_location=gs://my-bucket/tmp",
        "--input=gs://my-bucket/corpus/*.txt", "--output=gs://my-bucket/out", f"--tokenizer={bert_vocab}",
    ]  # fmt: skip
    runs = {}
    for name, extra in {
        "same": [f"--requirements_file={DEPLOY / 'requirements.txt'}"],
        "other": [f"--requirements_file={tmp_path / 'other.txt'}"],
        "container": ["--sdk_container_image=apache/beam_python3.11_sdk:2.60.0"],
    }.items():
        runs[name] = subprocess.run(
            [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *dataflow, *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert runs[name].returncode == 0, runs[name].stderr
    assert "differ" not in runs["same"].stderr
    warned = _warnings(runs["other"].stderr)
    assert len(warned) == 1
    assert f"tokenizers 0.20.0 there, {importlib.metadata.version('tokenizers')} here" in warned[0]
    assert "apache-beam" not in warned[0]
    warned = _warnings(runs["container"].stderr)
    assert len(warned) == 1 and f"apache-beam 2.60.0 there, {apache_beam.__version__} here" in warned[0]


def _dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not from another stage)."""
    copies = []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copies.append((words[1:-1], words[-1]))
    return copies


@pytest.mark.slow
def test_the_image_installs_from_exactly_what_the_dockerfile_copies(tmp_path):
    context = tmp_path / "workdir"
    context.mkdir()
    for sources, destination in _dockerfile_copies():
        for source in sources:
            into_dir = destination.endswith("/") or len(sources) > 1
            target = context / destination / pathlib.Path(source).name if into_dir else context / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                skip = shutil.ignore_patterns("__pycache__")
                shutil.copytree(REPO / source, target, ignore=skip, dirs_exist_ok=True)
            else:
                shutil.copy(REPO / source, target)
    site = tmp_path / "site"
    # The Dockerfile's own install command, into a folder of its own.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), "."],
        cwd=context,
        check=True,
    )
    # -I -S: no PYTHONPATH and no .pth files, so this checkout cannot stand in for the image's install.
    imported = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         "import sys; sys.path[:0] = sys.argv[1:]; import mlmprep.pipeline.job as job; "
         "print(job.__file__)",
         str(site), sysconfig.get_paths()["purelib"]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stdout.strip().startswith(str(site))


DAG_FILE = DEPLOY / "airflow" / "mlmprep_corpus_dag.py"
needs_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None, reason="Airflow is not installed (the [airflow] extra)"
)
# Airflow runs in processes of its own, configured by the environment (and never imported by
# the tests themselves, so that none of its settings leak into them).
_LOAD_DAGS = """
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("mlmprep_corpus_rebuild")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": list(bag.dag_ids),
                  "tasks": sorted(t.task_id for t in dag.tasks) if dag else []}))
"""
_TEST_DAG = """
import importlib.util, json, sys
import pendulum
spec = importlib.util.spec_from_file_location("dag_file", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = module.dag.test(logical_date=pendulum.parse(sys.argv[2]))
print(json.dumps({"run": str(run.state), **{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))
"""


def _airflow(home, *args) -> str:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@needs_airflow
@pytest.mark.slow
def test_airflow_loads_the_dag_without_import_errors(tmp_path):
    loaded = json.loads(_airflow(tmp_path, "-c", _LOAD_DAGS, str(DAG_FILE.parent)))
    assert loaded == {
        "errors": {},
        "dags": ["mlmprep_corpus_rebuild"],
        "tasks": ["build_corpus", "needs_rebuild"],
    }


@needs_airflow
@pytest.mark.slow
def test_airflow_builds_then_skips_an_unchanged_corpus_then_rebuilds_an_edited_one(
    tmp_path, real_data, bert_vocab
):
    home, corpus, builds = tmp_path / "airflow", tmp_path / "corpus", tmp_path / "builds"
    corpus.mkdir()
    text = corpus / "kjv.txt"
    text.write_bytes((real_data / "corpora" / "tiny" / "kjv.txt").read_bytes())
    variables = {
        "mlmprep_inputs": f"{corpus}/*.txt",
        "mlmprep_tokenizer": str(bert_vocab),
        "mlmprep_output_base": str(builds),
        "mlmprep_runner": "FnApiRunner",  # the local runner, on the Airflow worker
        "mlmprep_options": json.dumps(
            {"max_seq_length": 64, "num_shards": 2, "validation_fraction": 0.1, "whole_word_masking": True}
        ),
    }
    (tmp_path / "variables.json").write_text(json.dumps(variables))
    _airflow(home, "-m", "airflow", "db", "migrate")
    _airflow(home, "-m", "airflow", "variables", "import", str(tmp_path / "variables.json"))

    def daily_run(day: str) -> dict:
        return json.loads(_airflow(home, "-c", _TEST_DAG, str(DAG_FILE), day))

    built = {"run": "success", "needs_rebuild": "success", "build_corpus": "success"}
    assert daily_run("2026-01-01") == built
    first = json.loads((builds / "20260101" / "manifest.json").read_text())
    assert verify.verify(str(builds / "20260101")).problems == []
    assert first["settings"]["max_seq_length"] == 64 and first["settings"]["masking"] == "word"
    # The build ran from the build file beside it, which holds the DAG's settings.
    assert "whole_word_masking: true" in (builds / "20260101" / "build.yaml").read_text()
    assert first["counts"]["splits"]["validation"]["sequences"]

    assert daily_run("2026-01-02") == {**built, "build_corpus": "skipped"}  # nothing changed
    assert sorted(os.listdir(builds)) == ["20260101"]

    data = bytearray(text.read_bytes())
    at = data.index(b" the ")
    data[at : at + 5] = b" thy "  # an edit that keeps the size
    text.write_bytes(bytes(data))
    assert daily_run("2026-01-03") == built
    rebuilt = json.loads((builds / "20260103" / "manifest.json").read_text())
    assert rebuilt["input_fingerprint"] != first["input_fingerprint"]
    assert verify.verify(str(builds / "20260103")).problems == []


def test_airflow_dag_is_valid_python():
    compile((DEPLOY / "airflow" / "mlmprep_corpus_dag.py").read_text(), "dag.py", "exec")


def test_fingerprint_changes_with_a_files_content_or_time_and_not_otherwise(tmp_path, bert_vocab):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = corpus / "a.txt"
    text.write_text("first document\n\nsecond document\n")

    def current():
        argv = [f"--input={corpus}/*.txt", f"--tokenizer={bert_vocab}", f"--output={tmp_path}/out"]
        return planning.plan_command(argv, check_output=False)[1].input_fingerprint

    first = current()
    assert current() == first  # read again, nothing changed
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns))  # times set to what they were
    assert current() == first
    size = text.stat().st_size
    text.write_text("first document\n\nsecond Document\n")  # an edit of the same size
    assert text.stat().st_size == size
    edited = current()
    assert edited != first
    modified = text.stat().st_mtime_ns
    os.utime(text, ns=(modified, modified + 1_000_000_000))  # only touched
    assert current() not in (first, edited)
    os.utime(text, ns=(modified, modified))
    assert current() == edited  # the same content and time: the same build


@pytest.mark.slow
def test_fingerprint_skips_unchanged_builds_and_rebuilds_changed_ones(tmp_path, bert_vocab):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("first document\n\nsecond document\n")
    args = [f"--input={corpus}/*.txt", f"--tokenizer={bert_vocab}"]
    first = run_job(tmp_path / "20260101", *args)
    same = run_job(tmp_path / "20260102", *args)
    assert first["input_files"] == 1 and len(first["input_fingerprint"]) == 64
    assert same["input_fingerprint"] == first["input_fingerprint"]  # the output directory is not part of it
    assert not fingerprint.needs_rebuild(first, same["input_fingerprint"])
    (corpus / "b.txt").write_text("a new file\n")
    added = run_job(tmp_path / "20260103", *args)
    assert fingerprint.needs_rebuild(same, added["input_fingerprint"])
    (corpus / "b.txt").write_text("a new file, edited\n")
    edited = run_job(tmp_path / "20260104", *args)
    assert edited["input_fingerprint"] != added["input_fingerprint"]
    other_options = run_job(tmp_path / "20260105", *args, "--max_seq_length=64")
    assert other_options["input_fingerprint"] != edited["input_fingerprint"]
    assert fingerprint.needs_rebuild(None, edited["input_fingerprint"])


def _run_deploy_script(script, env, tmp_path):
    """Runs a deploy script as a user would, with the real mlmprep on PATH, on an input that matches nothing:
    every flag passes the flag check, and planning then stops the run before any runner starts. The job
    server is named (never started) so that the check does not depend on whether this machine fetched one."""
    jar = tmp_path / "job-server.jar"
    jar.touch()
    env = {"FLINK_JOB_SERVER_JAR": str(jar), "SPARK_JOB_SERVER_JAR": str(jar), **env}
    args = [
        f"--input={tmp_path}/nothing-*.txt",
        f"--output={tmp_path}/out",
        f"--tokenizer={tmp_path}/vocab.txt",
    ]
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(DEPLOY / script), *args],
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "script, env",
    [
        ("flink/run.sh", {"FLINK_MASTER": "flink-jobmanager:8081", "IMAGE": "registry/mlmprep:0.1.0"}),
        ("flink/run.sh", {"FLINK_MASTER": "localhost:8081", "ENVIRONMENT_TYPE": "EXTERNAL",
                          "ENVIRONMENT_CONFIG": "localhost:50000", "PARALLELISM": "64"}),
        ("spark/run.sh", {"SPARK_MASTER": "spark://spark-master:7077", "IMAGE": "registry/mlmprep:0.1.0"}),
    ],
)  # fmt: skip
def test_the_flag_check_accepts_the_flink_and_spark_scripts_flags(script, env, tmp_path):
    done = _run_deploy_script(script, env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "unrecognized" not in done.stderr and "matches no file" in done.stderr, done.stderr


@pytest.mark.parametrize("flag", ["--spark_master=spark://m:7077", "--flink_mastr=m:8081", "--num_worker=3"])
def test_the_flag_check_refuses_a_misspelt_runner_flag(flag):
    with pytest.raises(errors.UsageError, match=f"unrecognized arguments: {flag.split('=')[0]}"):
        flags.parse(["--input=x", "--tokenizer=t", "--output=o", flag])


def _dataflow_argv(tmp_path) -> list[str]:
    """What the Flex Template launcher passes to mlmprep on Dataflow, with the README's flags."""
    spec = json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())
    values = {
        "input": f"{tmp_path}/nothing-*.txt",
        "output": f"{tmp_path}/out",
        "tokenizer": f"{tmp_path}/v.txt",
    }
    template = [f"--{p['name']}={values[p['name']]}" for p in spec["parameters"] if p["name"] in values]
    launcher = [
        "--runner=DataflowRunner",
        "--project=my-project",
        "--region=us-central1",
        "--temp_location=gs://b/tmp",
        "--staging_location=gs://b/staging",
        "--job_name=mlmprep-20260101",
        "--sdk_container_image=us-docker.pkg.dev/p/mlmprep/mlmprep:0.1.0",
        "--labels=owner=ml",
        "--max_num_workers=100",
        "--worker_machine_type=n2-standard-8",
        "--experiments=use_runner_v2",
    ]
    readme = ["--setup_file=./setup.py", "--requirements_file=deploy/requirements.txt"]
    return template + launcher + readme + ["--max_seq_length=128", "--validation_fraction=0.01"]  # fmt: skip


def test_the_flag_check_accepts_dataflows_flags_as_the_template_passes_them(tmp_path):
    argv = _dataflow_argv(tmp_path)
    flags.parse(argv)  # raises UsageError on any flag it does not know
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "dataflow" / "main.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "matches no file" in done.stderr, done.stderr
