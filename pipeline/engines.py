"""Beam's Flink and Spark job servers: fetching them, finding them, and what a run on those engines gets.

Beam's FlinkRunner and SparkRunner submit the job to a Java job server,
which Beam's Python SDK fetches from Maven Central as one shaded jar of its
own release. Maven Central as this project reaches it serves no shaded
job-server jar of any release; it serves the runner modules and their
dependencies of Beam 2.62.0, the newest release for which both runners
resolve (2.70.0 lacks ``beam-runners-java-job-service``; later releases
lack the runners). So ``fetch`` assembles each job server from those modules
with Maven (``dependency:copy-dependencies``) into a folder with a launcher:
a jar holding only a manifest that names the driver and its class path,
which the runners start as they would start their own jar. The job runs on
these job servers with the project's own Beam SDK; the engine tests
(``tests/test_engines.py``) hold its output byte for byte to the direct
runner's.

    python -m mlmprep.pipeline.engines [--home DIR]    # what deploy/fetch-engines.sh runs
"""

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from mlmprep.pipeline.errors import UsageError

JOB_SERVER_BEAM = "2.62.0"
FLINK_VERSION = "1.19"  # the Flink of beam-runners-flink-1.19, 2.62.0: 1.19.0
SPARK_VERSION = "3.5.0"  # the Spark that Beam 2.62's Spark 3 runner is built against; provided, so named here
# The standalone clusters' engines, from PyPI (Maven Central serves no flink-dist): the versions inside the
# job servers, never installed into the project's environment (their own pins conflict with it), only
# downloaded with pip download --no-deps and unpacked into a home each.
FLINK_DISTRIBUTION = ("apache-flink-libraries==1.19.3", "apache-flink==1.19.3")  # lib/ and opt/; bin/, conf/
SPARK_DISTRIBUTION = f"pyspark=={SPARK_VERSION}"  # its sdist holds a whole Spark: bin/, sbin/, jars/
HOME_VARIABLE = "MLMPREP_ENGINES"
FETCH_COMMAND = "deploy/fetch-engines.sh"


@dataclasses.dataclass(frozen=True)
class JobServer:
    runner: str  # Beam's --runner
    engine: str
    folder: str  # under the engines' home
    main: str  # the driver class
    artifacts: tuple[str, ...]  # Maven coordinates, group:artifact:version
    jar_flag: str  # the Beam option that names a job server jar

    def launcher(self, home: pathlib.Path) -> pathlib.Path:
        return home / self.folder / "launcher.jar"


JOB_SERVERS = {
    "FlinkRunner": JobServer(
        "FlinkRunner",
        "Flink",
        f"flink-{FLINK_VERSION}-job-server",
        "org.apache.beam.runners.flink.FlinkJobServerDriver",
        (f"org.apache.beam:beam-runners-flink-{FLINK_VERSION}:{JOB_SERVER_BEAM}",),
        "--flink_job_server_jar",
    ),
    "SparkRunner": JobServer(
        "SparkRunner",
        "Spark",
        "spark-3-job-server",
        "org.apache.beam.runners.spark.SparkJobServerDriver",
        (
            f"org.apache.beam:beam-runners-spark-3:{JOB_SERVER_BEAM}",
            f"org.apache.spark:spark-core_2.12:{SPARK_VERSION}",
            f"org.apache.spark:spark-streaming_2.12:{SPARK_VERSION}",
            f"org.apache.spark:spark-sql_2.12:{SPARK_VERSION}",
        ),
        "--spark_job_server_jar",
    ),
}


def home() -> pathlib.Path:
    """Where the engines are: $MLMPREP_ENGINES, else ``.engines`` in the repository (git-ignored)."""
    return pathlib.Path(
        os.environ.get(HOME_VARIABLE) or pathlib.Path(__file__).resolve().parents[1] / ".engines"
    )


def _value(argv, flag: str) -> str | None:
    """The last value given for ``flag`` in Beam's argv (``--flag=value`` or ``--flag value``)."""
    found = None
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def runner_flags(argv) -> list[str]:
    """Beam options a run on FlinkRunner or SparkRunner gets where the user gave none: the fetched job
    server (and, for Flink, its version), and LOOPBACK workers for an engine embedded in this process's
    machine. UsageError (one line, exit 2) where Java or the job server is missing."""
    argv = list(argv)
    server = JOB_SERVERS.get((_value(argv, "--runner") or "").split(".")[-1])
    if server is None:
        return []
    extra = []
    if _value(argv, server.jar_flag) is None:
        if shutil.which("java") is None:
            raise UsageError(
                f"--runner {server.runner} needs Java (17) to start Beam's {server.engine} job server"
            )
        launcher = server.launcher(home())
        if not launcher.is_file():
            raise UsageError(
                f"--runner {server.runner} needs Beam's {server.engine} job server: fetch it with "
                f"{FETCH_COMMAND} (or point {HOME_VARIABLE} at where it is, or pass {server.jar_flag})"
            )
        extra.append(f"{server.jar_flag}={launcher}")
        if server.runner == "FlinkRunner" and _value(argv, "--flink_version") is None:
            extra.append(f"--flink_version={FLINK_VERSION}")
    if _value(argv, "--environment_type") is None and _embedded(server, argv):
        extra.append("--environment_type=LOOPBACK")  # the SDK workers in this process, as the engine is
    return extra


def _embedded(server: JobServer, argv) -> bool:
    """Whether the engine runs inside its job server (Flink's [local] or [auto], Spark's local[N])."""
    if server.runner == "FlinkRunner":
        return (_value(argv, "--flink_master") or "[auto]") in ("[local]", "[auto]")
    return (_value(argv, "--spark_master_url") or "local[4]").startswith("local")


def _pom(artifacts) -> str:
    dependencies = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (coordinate.split(":") for coordinate in artifacts)
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>mlmprep</groupId><artifactId>job-server</artifactId><version>0</version>"
        f"<dependencies>{dependencies}</dependencies></project>"
    )


def _manifest_line(line: str) -> bytes:
    """A jar manifest line, folded at 72 bytes as the format requires (the class path is long)."""
    data, out = line.encode("utf-8"), []
    out.append(data[:72])
    data = data[72:]
    while data:
        out.append(b" " + data[:71])
        data = data[71:]
    return b"\r\n".join(out) + b"\r\n"


def write_launcher(server: JobServer, folder: pathlib.Path) -> pathlib.Path:
    """A jar of a manifest only: the driver, and the class path of every jar in ``folder/lib``."""
    classpath = " ".join(f"lib/{p.name}" for p in sorted((folder / "lib").glob("*.jar")))
    manifest = b"".join(
        _manifest_line(line)
        for line in ("Manifest-Version: 1.0", f"Main-Class: {server.main}", f"Class-Path: {classpath}")
    )
    launcher = folder / "launcher.jar"
    with zipfile.ZipFile(launcher, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest + b"\r\n")
    return launcher


def fetch(where: pathlib.Path, servers=None, out=sys.stdout) -> dict[str, pathlib.Path]:
    """Assembles each job server under ``where`` once; a second call finds them and downloads nothing."""
    servers = tuple(JOB_SERVERS.values()) if servers is None else servers
    if shutil.which("mvn") is None:
        raise UsageError("fetching the job servers needs Maven (mvn) and Java 17")
    found = {}
    for server in servers:
        folder = where / server.folder
        stamp = folder / "fetched.json"
        spec = {"artifacts": list(server.artifacts), "main": server.main}
        if not (stamp.is_file() and json.loads(stamp.read_text()) == spec):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            with tempfile.TemporaryDirectory(prefix="mlmprep-engines-") as tmp:
                pathlib.Path(tmp, "pom.xml").write_text(_pom(server.artifacts))
                command = [
                    "mvn",
                    "-B",
                    "-q",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={folder / 'lib'}",
                ]
                done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            if done.returncode:
                shutil.rmtree(folder, ignore_errors=True)
                lines = [line for line in done.stdout.splitlines() if "ERROR" in line][:1] or [
                    done.stderr[-300:]
                ]
                raise UsageError(f"Maven could not fetch {server.engine}'s job server: {lines[0]}")
            write_launcher(server, folder)
            stamp.write_text(json.dumps(spec))
        found[server.runner] = server.launcher(where)
        print(f"{server.runner}: {server.launcher(where)}", file=out)
    return found


def _pip_download(requirement: str, into: pathlib.Path, binary: bool) -> pathlib.Path:
    kind = ["--only-binary=:all:", "--python-version", "3.11"] if binary else ["--no-binary=:all:"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        *kind,
        requirement,
        "-d",
        str(into),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise UsageError(f"pip could not download {requirement}: {done.stderr.strip().splitlines()[-1:]}")
    stem = requirement.replace("==", "-").replace("-", "_").lower()  # name_version, as the file begins
    return next(p for p in into.iterdir() if p.name.replace("-", "_").lower().startswith(stem))


def _unpack(archive: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """Unpacks a wheel or an sdist; returns the folder it made (an sdist's top folder)."""
    into.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
        return into
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return next(into.iterdir())


def fetch_distributions(where: pathlib.Path, out=sys.stdout) -> dict[str, pathlib.Path]:
    """A Flink home and a Spark home under ``where``, for standalone clusters; once."""
    homes = {
        "flink": where / f"flink-{FLINK_DISTRIBUTION[0].split('==')[1]}",
        "spark": where / f"spark-{SPARK_VERSION}",
    }
    for engine, home_dir in homes.items():
        if not (home_dir / "fetched").is_file():
            shutil.rmtree(home_dir, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix="mlmprep-engines-") as tmp:
                tmp = pathlib.Path(tmp)
                if engine == "flink":
                    libraries = _unpack(_pip_download(FLINK_DISTRIBUTION[0], tmp, False), tmp / "libraries")
                    wheel = _unpack(_pip_download(FLINK_DISTRIBUTION[1], tmp, True), tmp / "wheel")
                    shutil.copytree(libraries / "deps", home_dir)  # lib/, opt/, plugins/, bin's jar
                    shutil.copytree(wheel / "pyflink" / "bin", home_dir / "bin", dirs_exist_ok=True)
                    shutil.copytree(wheel / "pyflink" / "conf", home_dir / "conf")
                else:
                    shutil.copytree(
                        _unpack(_pip_download(SPARK_DISTRIBUTION, tmp, False), tmp / "spark") / "deps",
                        home_dir,
                    )
            for script in [*home_dir.glob("bin/*"), *home_dir.glob("sbin/*")]:
                script.chmod(0o755)
            (home_dir / "fetched").write_text("")
        print(f"{engine} home: {home_dir}", file=out)
    return homes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/fetch-engines.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", default=None, help=f"Where to put them (default ${HOME_VARIABLE}, or .engines)."
    )
    parser.add_argument(
        "--job_servers_only",
        action="store_true",
        help="Not the Flink and Spark homes standalone clusters run from.",
    )
    args = parser.parse_args(argv)
    where = pathlib.Path(args.home) if args.home else home()
    try:
        fetch(where)
        if not args.job_servers_only:
            fetch_distributions(where)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
