"""User mistakes: one clear line on stderr, exit status 2, no traceback, no output."""

import json
import subprocess
import sys

import pytest


def mlmprep(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("In the beginning was the word.\n\nAnd the word was good.\n")
    return path


@pytest.fixture
def good(corpus, tmp_path, bert_vocab):
    return [f"--input={corpus}", f"--tokenizer={bert_vocab}", f"--output={tmp_path / 'out'}"]


def _one_line_error(done, *words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"--masked_lm_prob": "1.5"}, ["--masked_lm_prob", "1.5"]),
        ({"--masked_lm_prob": "abc"}, ["--masked_lm_prob", "abc"]),
        ({"--max_seq_length": "2"}, ["--max_seq_length"]),
        ({"--max_predictions_per_seq": "200"}, ["--max_predictions_per_seq", "200"]),
        ({"--dupe_factor": "0"}, ["--dupe_factor"]),
        ({"--num_shards": "0"}, ["--num_shards"]),
        ({"--split_input_mb": "0"}, ["--split_input_mb", "positive"]),
        ({"--validation_fraction": "1"}, ["--validation_fraction"]),
        ({"--formats": "csv"}, ["--formats", "csv"]),
        ({"--packing": "greedy"}, ["--packing", "greedy"]),
        ({"--max_seq_lenght": "64"}, ["unrecognized", "--max_seq_lenght"]),
        ({"--input": "/nonexistent/dir/*.txt"}, ["matches no file"]),
        ({"--tokenizer": "/nonexistent/vocab.txt"}, ["--tokenizer"]),
    ],
)
@pytest.mark.slow
def test_bad_flag_values(good, change, words, tmp_path):
    args = [a for a in good if a.split("=")[0] not in change]
    args += [f"{k}={v}" for k, v in change.items()]
    done = mlmprep("run", *args)
    _one_line_error(done, *words)
    assert not (tmp_path / "out").exists()


def test_tokenizer_without_special_tokens(good, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[UNK]\nthe\nword\n")
    done = mlmprep("run", *[a for a in good if not a.startswith("--tokenizer")], f"--tokenizer={vocab}")
    _one_line_error(done, "[PAD]", "[CLS]")
    garbage = tmp_path / "tokenizer.json"
    garbage.write_text('{"not": "a tokenizer"}')
    done = mlmprep("run", *[a for a in good if not a.startswith("--tokenizer")], f"--tokenizer={garbage}")
    _one_line_error(done, "--tokenizer")


def test_missing_required_flag(good):
    _one_line_error(mlmprep("run", *[a for a in good if not a.startswith("--output")]), "--output")


@pytest.mark.slow
def test_existing_output_refused_then_replaced_with_overwrite(good, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train-00000-of-00001.tfrecord").write_text("stale")
    done = mlmprep("run", *good)
    _one_line_error(done, "exists", "--overwrite")
    assert (tmp_path / "out" / "train-00000-of-00001.tfrecord").read_text() == "stale"
    done = mlmprep("run", *good, "--overwrite", "--num_shards=2")
    assert done.returncode == 0, done.stderr
    assert "documents read" in done.stdout
    # The stale file, with no finished build beside it, was a failed attempt's: the new build replaced it.
    assert not (tmp_path / "out" / "train-00000-of-00001.tfrecord").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["generation"] == 1  # named above what was there
    assert (tmp_path / "out" / "train-00001-of-00002.g1.parquet").exists()


def test_unknown_command():
    done = mlmprep("frobnicate")
    _one_line_error(done, "frobnicate")


@pytest.mark.slow
def test_worker_processes_run_without_warnings(good):
    """The DirectRunner's worker processes start with two harmless warnings each; users see none."""
    done = mlmprep("run", *good, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr


COMMANDS = ["run", "demo", "train-tokenizer", "verify", "inspect", "report", "train", "fill-mask", "export"]
BEAM_COMMANDS = {"run", "demo", "train-tokenizer"}  # the job, and train-tokenizer's Beam file systems


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.slow
def test_every_commands_help_prints_only_its_help(command):
    from mlmprep.pipeline import cli

    assert set(COMMANDS) == set(cli.COMMANDS)
    done = mlmprep(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: mlmprep {command}") and "--" in done.stdout
    assert done.stderr == ""  # no traceback, no TensorFlow start-up log
    # What the help loaded: TensorFlow never, Beam only for the commands that run Beam.
    code = (
        "import contextlib, io, sys\n"
        "from mlmprep.pipeline import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        cli.main([{command!r}, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('tensorflow' in sys.modules, 'apache_beam' in sys.modules)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["False", str(command in BEAM_COMMANDS)]


@pytest.mark.parametrize("command", ["train", "fill-mask", "export"])
def test_a_trainer_usage_mistake_is_one_line_before_tensorflow_loads(command):
    done = mlmprep(command, "--no_such_flag")
    _one_line_error(done, "required" if command != "train" else "--data")
    assert "tensorflow" not in done.stderr.lower() and "cuda" not in done.stderr.lower()


@pytest.mark.slow
def test_train_tokenizer_writes_a_folder_for_a_name_without_json(corpus, tmp_path):
    from mlmprep.pipeline.train_tokenizer import tokenizer_path

    done = mlmprep("train-tokenizer", f"--input={corpus}", "--output=tok", "--vocab_size=120", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "tok"]  # nothing beside the folder
    names = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == names
    assert "tok/tokenizer.json" in done.stdout and "--tokenizer tok" in done.stdout
    inside = str(tmp_path / "tok" / "tokenizer.json")
    assert tokenizer_path(str(tmp_path / "tok")) == tokenizer_path(inside) == inside
    # A name ending in .json is the tokenizer file, its two config files beside it, as before.
    done = mlmprep("train-tokenizer", f"--input={corpus}", "--output=t/b.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["b.json", *names[::2]]
    # A file in the way of the folder is one line, before any training.
    (tmp_path / "plain").write_text("")
    _one_line_error(
        mlmprep("train-tokenizer", f"--input={corpus}", "--output=plain", cwd=tmp_path), "--output", "plain"
    )


@pytest.mark.slow
def test_run_takes_the_folder_train_tokenizer_wrote(corpus, tmp_path):
    done = mlmprep("train-tokenizer", f"--input={corpus}", "--output=tok", "--vocab_size=120", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = mlmprep("run", f"--input={corpus}", "--tokenizer=tok", "--output=out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "manifest.json").exists()


def test_train_on_a_folder_that_is_not_an_output_is_one_line(tmp_path):
    done = mlmprep("train", f"--data={tmp_path}", f"--output={tmp_path / 'model'}")
    _one_line_error(done, "--data", "manifest.json")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("command", ["fill-mask", "export"])
def test_a_model_folder_without_a_model_is_one_line(command, tmp_path):
    from mlmprep.pipeline import manifest

    rest = ["the [MASK]"] if command == "fill-mask" else [f"--output={tmp_path / 'hf'}"]
    _one_line_error(mlmprep(command, f"--model={tmp_path / 'nothing'}", *rest), "no such folder")
    _one_line_error(mlmprep(command, f"--model={tmp_path}", *rest), "not a model folder")
    # An output of mlmprep run (a manifest, no model) given for the model.
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": manifest.FORMAT_VERSION}))
    _one_line_error(mlmprep(command, f"--model={tmp_path}", *rest), "holds no trained model")


@pytest.mark.slow
def test_training_and_exporting_print_no_library_warnings(kjv_data, tmp_path):
    """A normal run's stderr is empty: no Keras UserWarning, no TensorFlow C++ start-up log."""
    pytest.importorskip("keras_hub")
    model = tmp_path / "model"
    done = mlmprep(
        "train", f"--data={kjv_data}", f"--output={model}", "--steps=2", "--checkpoint_every=2",
        "--batch_size=8", "--eval_batches=1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "training on" in done.stdout
    done = mlmprep("export", f"--model={model}", f"--output={tmp_path / 'hf'}")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
