"""The layout keeps its promises: the core and the tools that read an output never import Beam."""

import subprocess
import sys

import pytest

from conftest import REPO

# Each in a fresh interpreter: what importing it (and running its entry point's imports) pulls in.
BEAM_FREE = [
    *(
        f"mlmprep.transforms.{p.stem}"
        for p in sorted((REPO / "transforms").glob("*.py"))
        if p.stem != "__init__"
    ),
    "mlmprep.pipeline.verify",
    "mlmprep.pipeline.inspect",
    "mlmprep.pipeline.manifest",
    "mlmprep.pipeline.errors",
    "mlmprep.trainer.data",
    "mlmprep.trainer.train",
    "mlmprep.trainer.fill_mask",
]


@pytest.mark.parametrize("module", BEAM_FREE)
def test_the_core_and_the_output_readers_never_import_beam(module):
    if module.startswith("mlmprep.trainer"):
        pytest.importorskip("tensorflow")
    code = f"import sys, {module}; print('apache_beam' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", f"{module} imports Beam"


def test_no_core_module_names_beam():
    for path in sorted((REPO / "transforms").glob("*.py")):
        assert "apache_beam" not in path.read_text() and "transforms.beam" not in path.read_text(), path.name
