"""A scheduled corpus rebuild: mlmprep on Dataflow, into a dated output directory.

Each run first computes the build's fingerprint (options + tokenizer + every
input file with its size and modification time, as mlmprep records it in
manifest.json) and skips the rebuild when the newest finished build has the
same one; a changed or added input file triggers a new build. Needs Airflow 3
with the apache-beam and google providers (mlmprep's ``[airflow]`` extra), and
mlmprep[gcp] installed where the tasks run: the build runs in the same Python.

Settings are Airflow Variables, with the defaults below: ``mlmprep_inputs``
(comma-separated patterns), ``mlmprep_tokenizer``, ``mlmprep_output_base``,
``mlmprep_runner`` (DataflowRunner; FnApiRunner runs on the Airflow worker
itself) and ``mlmprep_options`` (a JSON object of ``mlmprep run`` settings and Beam options). A build
runs from one build file (``mlmprep run --config``), written into its output folder.
"""

import json
import os
import re
import sys

import pendulum
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Variable

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dataflow", "main.py")
SETUP = os.path.join(os.path.dirname(MAIN), "..", "..", "setup.py")
OPTIONS = {"max_seq_length": 128, "validation_fraction": 0.01, "target_shard_mb": 128}
DATED = re.compile(r"\d{8}")
BUILD_FILE = "build.yaml"


def _settings() -> dict:
    return {
        "inputs": Variable.get("mlmprep_inputs", "gs://my-bucket/corpus/*.txt.gz").split(","),
        "tokenizer": Variable.get("mlmprep_tokenizer", "gs://my-bucket/vocab.txt"),
        "output_base": Variable.get("mlmprep_output_base", "gs://my-bucket/mlm"),
        "runner": Variable.get("mlmprep_runner", "DataflowRunner"),
        "options": json.loads(Variable.get("mlmprep_options", json.dumps(OPTIONS))),
    }


def plan_build(ds_nodash: str, ti) -> bool:
    """Writes the build's build file into its output folder and hands its path to ``build_corpus`` (an
    XCom); False (skip it, writing nothing) when the newest finished build has this build's fingerprint."""
    import tempfile

    from apache_beam.io.filesystems import FileSystems

    from mlmprep.pipeline import build_file, fingerprint, flags, manifest, planning

    settings = _settings()
    output = FileSystems.join(settings["output_base"], ds_nodash)
    # mlmprep_options holds mlmprep's settings and Beam's options alike (temp_location, machine_type, ...),
    # flat or under pipeline_options; the build file keeps Beam's apart.
    options = dict(settings["options"])
    beam = dict(options.pop(build_file.PIPELINE_OPTIONS, None) or {})
    beam.update({k: options.pop(k) for k in list(options) if k in flags.beam_options()})
    if settings["runner"] == "DataflowRunner":
        beam["setup_file"] = SETUP  # Dataflow's workers install mlmprep from it
    values = {
        "input": settings["inputs"],
        "output": output,
        "tokenizer": settings["tokenizer"],
        **options,
        # A retried or re-triggered run replaces what an earlier attempt left in its folder; a
        # finished build there stays whole until the new one is complete.
        "overwrite": True,
    }
    text = build_file.to_yaml(values, beam)  # the operator adds the runner and the job's name
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as local:
        local.write(text)
        local.flush()
        current = planning.plan_command([f"--config={local.name}"], check_output=False)[1].input_fingerprint
    pattern = FileSystems.join(settings["output_base"], "*", manifest.MANIFEST)
    finished = sorted(
        folder
        for folder in (FileSystems.split(m.path)[0] for m in FileSystems.match([pattern])[0].metadata_list)
        if DATED.fullmatch(FileSystems.split(folder)[1])
    )
    previous = manifest.read(finished[-1]) if finished else None
    if not fingerprint.needs_rebuild(previous, current):
        return False
    path = FileSystems.join(output, BUILD_FILE)  # kept beside the build: what made it, in one file
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))
    ti.xcom_push(key="pipeline_options", value={"config": path})
    return True


# Settings are read when the tasks run (Variables at parse time would cost the
# scheduler a database read per parse); templates render as Python objects.
with DAG(
    dag_id="mlmprep_corpus_rebuild",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["mlmprep"],
) as dag:
    check = ShortCircuitOperator(task_id="needs_rebuild", python_callable=plan_build)
    build = BeamRunPythonPipelineOperator(
        task_id="build_corpus",
        py_file=MAIN,
        runner="{{ var.value.get('mlmprep_runner', 'DataflowRunner') }}",
        pipeline_options="{{ ti.xcom_pull(task_ids='needs_rebuild', key='pipeline_options') }}",
        py_interpreter=sys.executable,  # the Python that has mlmprep[gcp]
        # Used on Dataflow only (another runner logs that it is not).
        dataflow_config={"job_name": "mlmprep-{{ ds_nodash }}", "wait_until_finished": True},
    )
    check >> build
