import subprocess
import sys

import pytest

# Every test here runs the job or trains a model: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow


def test_demo_runs_on_what_python_ships(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "demo", f"--output={tmp_path / 'demo'}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "first example of train-00000-of-00002.parquet" in done.stdout
    assert "[MASK→" in done.stdout
    assert (tmp_path / "demo" / "shards" / "manifest.json").exists()
    assert "Traceback" not in done.stderr
