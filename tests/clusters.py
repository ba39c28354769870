"""Standalone Flink and Spark clusters of separate processes on this machine, as a user's cluster runs, and a
Beam worker pool for their SDK workers (--environment_type=EXTERNAL): for the engine tests."""

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

VENV_BIN = str(pathlib.Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv, log: pathlib.Path, env=None) -> subprocess.Popen:
    """A process in a session of its own, so that stopping it stops what it started."""
    return subprocess.Popen(
        argv,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(process: subprocess.Popen, sig=signal.SIGTERM):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if condition():
                return
        time.sleep(1)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def worker_pool():
    """Beam's SDK worker pool: it starts each worker as ``python``, so this environment's comes first."""
    port = free_port()
    log = pathlib.Path(tempfile.gettempdir(), f"mlmprep-worker-pool-{port}.log")
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    pool = _start(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        log,
        env,
    )
    try:
        _wait(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
            "the worker pool",
        )
        yield f"localhost:{port}"
    finally:
        stop(pool)


@contextlib.contextmanager
def flink_cluster(
    home: pathlib.Path, work: pathlib.Path, taskmanagers: int = 1, slots: int = 2, settings=None
):
    """A JobManager and ``taskmanagers`` TaskManagers from a Flink home; yields (master, processes)."""
    conf = work / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in (home / "conf").iterdir():
        if name.is_file():
            (conf / name.name).write_bytes(name.read_bytes())
    rest, rpc = free_port(), free_port()
    text = (home / "conf" / "config.yaml").read_text()
    text = re.sub(r"(?m)^(\s+)port: 6123$", rf"\g<1>port: {rpc}", text)
    text = re.sub(r"(?m)^(\s+size: )1600m$", r"\g<1>1024m", text)  # the JobManager's: two fit on 2 cores
    text = text.replace("numberOfTaskSlots: 1", f"numberOfTaskSlots: {slots}")
    extra = {"rest.port": rest, "taskmanager.memory.process.size": "1536m", **(settings or {})}
    text += "".join(f"\n{key}: {value}" for key, value in extra.items()) + "\n"
    (conf / "config.yaml").write_text(text)
    env = {"FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(work / "log")}
    processes = [
        _start([str(home / "bin" / "jobmanager.sh"), "start-foreground"], work / "jobmanager.out", env)
    ]
    try:
        for i in range(taskmanagers):
            processes.append(
                _start(
                    [str(home / "bin" / "taskmanager.sh"), "start-foreground"],
                    work / f"taskmanager-{i}.out",
                    env,
                )
            )
        overview = f"http://localhost:{rest}/overview"
        _wait(lambda: get_json(overview)["taskmanagers"] == taskmanagers, "the Flink cluster")
        yield f"localhost:{rest}", processes
    finally:
        for process in reversed(processes):
            stop(process)


@contextlib.contextmanager
def spark_cluster(home: pathlib.Path, work: pathlib.Path, workers: int = 1, cores: int = 2):
    """A Spark master and ``workers`` workers from a Spark home; yields (master URL, processes)."""
    port, ui = free_port(), free_port()
    env = {
        "SPARK_HOME": str(home),
        "SPARK_LOG_DIR": str(work / "log"),
        "SPARK_WORKER_DIR": str(work / "work"),
    }
    spark_class = str(home / "bin" / "spark-class")
    master = f"spark://localhost:{port}"
    work.mkdir(parents=True, exist_ok=True)
    processes = [
        _start(
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "localhost",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            work / "master.out",
            env,
        )
    ]
    try:
        _wait(lambda: get_json(f"http://localhost:{ui}/json/")["status"] == "ALIVE", "the Spark master")
        for i in range(workers):
            processes.append(
                _start(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--cores",
                        str(cores),
                        "--memory",
                        "3g",
                        "--webui-port",
                        str(free_port()),
                        master,
                    ],
                    work / f"worker-{i}.out",
                    env,
                )
            )
        _wait(
            lambda: len(get_json(f"http://localhost:{ui}/json/")["workers"]) == workers, "the Spark workers"
        )
        yield master, processes
    finally:
        for process in reversed(processes):
            stop(process)
