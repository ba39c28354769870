"""The layout keeps its promises: the core and the tools that read an output never import Beam."""

import ast
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
    "mlmprep.pipeline.report",
    "mlmprep.pipeline.summary",
    "mlmprep.pipeline.manifest",
    "mlmprep.pipeline.errors",
    "mlmprep.trainer.data",
    "mlmprep.trainer.train",
    "mlmprep.trainer.fill_mask",
    "mlmprep.trainer.export",
]


@pytest.mark.parametrize("module", BEAM_FREE)
def test_the_core_and_the_output_readers_never_import_beam(module):
    if module.startswith("mlmprep.trainer"):
        pytest.importorskip("tensorflow")
    code = f"import sys, {module}; print('apache_beam' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", f"{module} imports Beam"


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_core_module_imports_beam_even_inside_a_function():
    for path in sorted((REPO / "transforms").glob("*.py")):
        imported = _imports(path)
        assert not any(n.startswith(("apache_beam", "mlmprep.transforms.beam")) for n in imported), path.name
