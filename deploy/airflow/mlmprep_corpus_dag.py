"""A scheduled corpus rebuild: mlmprep on Dataflow, into a dated output directory.

Each run first computes the build's fingerprint (options + tokenizer + every
input file with its size and modification time, as mlmprep records it in manifest.json) and skips
the rebuild when the newest finished build has the same one; a changed or
added input file triggers a new build. Needs apache-airflow with the
apache-beam provider, and mlmprep[gcp] on the Airflow workers.

Settings come from Airflow Variables (``mlmprep_*``), with defaults below.
"""

import os
import re

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.operators.python import ShortCircuitOperator
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dataflow", "main.py")


def _settings() -> dict:
    return {
        "inputs": Variable.get("mlmprep_inputs", "gs://my-bucket/corpus/*.txt.gz").split(","),
        "tokenizer": Variable.get("mlmprep_tokenizer", "gs://my-bucket/vocab.txt"),
        "output_base": Variable.get("mlmprep_output_base", "gs://my-bucket/mlm"),
        "options": {"max_seq_length": 128, "validation_fraction": 0.01, "target_shard_mb": 128},
    }


def _argv(settings: dict, output: str) -> list[str]:
    argv = [f"--input={p}" for p in settings["inputs"]]
    argv += [f"--output={output}", f"--tokenizer={settings['tokenizer']}"]
    return argv + [f"--{k}={v}" for k, v in settings["options"].items()]


def needs_rebuild(ds_nodash: str, **_) -> bool:
    """False (skip) when the newest finished build has this build's fingerprint."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from mlmprep.pipeline import fingerprint, manifest, options

    settings = _settings()
    current = options.plan(PipelineOptions(_argv(settings, "unused")), check_output=False).input_fingerprint
    pattern = FileSystems.join(settings["output_base"], "*", manifest.MANIFEST)
    finished = sorted(
        m.path for m in FileSystems.match([pattern])[0].metadata_list if re.search(r"/\d{8}/", m.path)
    )
    previous = manifest.read(FileSystems.split(finished[-1])[0]) if finished else None
    return fingerprint.needs_rebuild(previous, current)


with DAG(
    dag_id="mlmprep_corpus_rebuild",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlmprep"],
) as dag:
    settings = _settings()
    check = ShortCircuitOperator(task_id="needs_rebuild", python_callable=needs_rebuild)
    output = f"{settings['output_base']}/{{{{ ds_nodash }}}}"
    build = BeamRunPythonPipelineOperator(
        task_id="build_corpus",
        py_file=MAIN,
        runner="DataflowRunner",
        pipeline_options={
            "input": settings["inputs"],
            "output": output,
            "tokenizer": settings["tokenizer"],
            **settings["options"],
            "setup_file": os.path.join(os.path.dirname(MAIN), "..", "..", "setup.py"),
        },
        py_system_site_packages=True,  # mlmprep[gcp] is installed on the Airflow workers
        dataflow_config={"job_name": "mlmprep-{{ ds_nodash }}", "wait_until_finished": True},
    )
    check >> build
