"""The layout keeps its promises: the core and the tools that read an output never import Beam."""

import ast
import json
import subprocess
import sys

import pytest

from conftest import REPO, run_job

# Each in a fresh interpreter: what importing it (and running its entry point's imports) pulls in.
BEAM_FREE = [
    *(
        f"mlmprep.transforms.{p.stem}"
        for p in sorted((REPO / "transforms").glob("*.py"))
        if p.stem != "__init__"
    ),
    "mlmprep.pipeline.verify",
    "mlmprep.pipeline.record_checks",
    "mlmprep.pipeline.inspect",
    "mlmprep.pipeline.report",
    "mlmprep.pipeline.summary",
    "mlmprep.pipeline.manifest",
    "mlmprep.pipeline.errors",
    "mlmprep.pipeline.recipes",
    "mlmprep.pipeline.settings",
    "mlmprep.pipeline.setting_spec",
    "mlmprep.pipeline.settings_text",
    "mlmprep.pipeline.build_file",
    "mlmprep.trainer.data",
    "mlmprep.trainer.train",
    "mlmprep.trainer.checkpoints",
    "mlmprep.trainer.fill_mask",
    "mlmprep.trainer.export",
]


@pytest.mark.slow
def test_the_core_and_the_output_readers_never_import_beam():
    """One fresh interpreter imports them one by one (TensorFlow loads once): the first to bring Beam in
    is named."""
    modules = BEAM_FREE
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        modules = [m for m in BEAM_FREE if not m.startswith("mlmprep.trainer")]
    code = (
        "import importlib, sys\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "    if 'apache_beam' in sys.modules:\n"
        "        print(module)\n"
        "        break\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not done.stdout.strip(), f"{done.stdout.strip()} imports Beam"


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


def _loaded(argv: list[str]) -> dict:
    """Runs ``mlmprep ARGV`` in a fresh interpreter; what it returned and whether it loaded Beam."""
    code = (
        "import contextlib, io, json, sys\n"
        "from mlmprep.pipeline import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = cli.main({argv!r})\n"
        "print(json.dumps({'status': status, 'beam': 'apache_beam' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_commands_that_read_an_output_or_train_never_load_beam(tmp_path, real_data, bert_vocab):
    """Only run, demo and train-tokenizer need Apache Beam; the rest run without it, for real."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("matplotlib")
    out, model, hf = tmp_path / "out", tmp_path / "model", tmp_path / "hf"
    run_job(
        out, f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={bert_vocab}",
        "--max_seq_length=64", "--validation_fraction=0.2", "--num_shards=1",
    )  # fmt: skip
    for argv in (
        ["verify", str(out)],
        ["inspect", str(out), "-n", "1"],
        ["report", str(out), "--output", str(tmp_path / "report.html")],
        ["train", "--data", str(out), "--output", str(model), "--steps", "2", "--checkpoint_every", "2",
         "--batch_size", "8", "--eval_batches", "1"],
        ["fill-mask", "--model", str(model), "in the beginning god created the [MASK]"],
        ["export", "--model", str(model), "--output", str(hf)],
    ):  # fmt: skip
        assert _loaded(argv) == {"status": 0, "beam": False}, argv[0]
    assert (hf / "model.safetensors").exists() and (tmp_path / "report.html").exists()
