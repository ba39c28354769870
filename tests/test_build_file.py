"""mlmprep run --config build.yaml: every setting in one file; flags win over it, a recipe lies under both."""

import json
import subprocess
import sys

import pytest

from mlmprep.pipeline import flags
from mlmprep.pipeline.errors import UsageError

from conftest import run_job

BUILD = """\
input: ["corpus/*.txt", "more/*.jsonl"]
tokenizer: tok.json
output: out
max_seq_length: 256
packing: best_fit
masked_lm_prob: 2e-01
dedup: false
formats: [parquet]
pipeline_options:
  runner: FnApiRunner
  direct_num_workers: 2
"""
THE_SAME_AS_FLAGS = [
    "--input=corpus/*.txt", "--input=more/*.jsonl", "--tokenizer=tok.json", "--output=out",
    "--max_seq_length=256", "--packing=best_fit", "--masked_lm_prob=0.2", "--nodedup", "--formats=parquet",
    "--runner=FnApiRunner", "--direct_num_workers=2",
]  # fmt: skip


def _file(tmp_path, text: str, name: str = "build.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_build_file_is_its_settings_given_as_flags(tmp_path):
    by_file = flags.parse([f"--config={_file(tmp_path, BUILD)}"])
    by_flags = flags.parse(THE_SAME_AS_FLAGS)
    assert by_file.settings == by_flags.settings
    assert by_file.settings.masking.masked_lm_prob == 0.2  # YAML reads 2e-01 as text; the setting parses it
    assert by_file.beam_argv == ("--runner=FnApiRunner", "--direct_num_workers=2")


def test_flags_win_over_the_file_and_a_recipe_lies_under_both(tmp_path):
    path = _file(tmp_path, BUILD.replace("packing: best_fit\n", "recipe: roberta\n"))
    command = flags.parse([f"--config={path}", "--max_seq_length=64", "--direct_num_workers=1"])
    s = command.settings
    assert s.packing.max_seq_length == 64  # the flag's, over the file's 256 and the recipe's 512
    assert s.packing.mode == "concat" and s.masking.unmasked  # the recipe's, where neither says
    assert s.masking.masked_lm_prob == 0.2  # the file's, over the recipe's 0.15
    assert command.recipe.kept == {"max_seq_length": 64, "masked_lm_prob": 0.2}
    assert command.beam_argv[-1] == "--direct_num_workers=1"  # Beam's last flag is the one it takes


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_seq_lenght: 64\n", "unknown key 'max_seq_lenght'; did you mean max_seq_length?"),
        ("runner: FnApiRunner\n", "unknown key 'runner'; Beam's options go under pipeline_options:"),
        ("max_seq_length: 64.5\n", "max_seq_length must be an integer, got '64.5'"),
        ("random_seed: 0x80\n", "random_seed must be an integer, got '0x80'"),  # YAML 1.1 would say 128
        ("max_seq_length: true\n", "max_seq_length must be an integer, got True"),
        ("dedup: no\n", "dedup must be true or false, got 'no'"),
        ("input: [[a]]\n", "input must be a list, got [['a']]"),
        ("? [a, b]\n: 1\n", "a key must be a name"),
        ("pipeline_options: {direct_num_workers: two}\n", "pipeline_options: argument --direct_num_workers"),
        ("pipeline_options: {no_such_flag_either: false}\n", "unknown key 'no_such_flag_either'"),
        ("pipeline_options: {streaming: false}\n", "streaming: false has no flag of Beam's"),
        ("max_seq_length: 64\nmax_seq_length: 128\n", "line 2: the key 'max_seq_length' is given twice"),
        ("input: *.txt\n", "must be quoted: '*.txt'"),
        ("max_seq_length: [64\n", "line 2"),
        ("pipeline_options: {runer: FnApiRunner}\n", "unknown key 'runer'; did you mean runner?"),
        ("- a list\n", "must hold a mapping of settings"),
    ],
)
def test_a_mistake_in_the_build_file_names_the_key(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(UsageError, match=f"^--config {path}") as e:
        flags.parse([f"--config={path}", "--input=x", "--tokenizer=t", "--output=o"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_value_out_of_range_in_the_file_is_the_settings_check_and_says_the_file(tmp_path):
    path = _file(tmp_path, "input: [x]\ntokenizer: t\noutput: o\nmax_seq_length: 100000\n")
    message = rf"^--config {path}: --max_seq_length must be in \[3, 8192\], got 100000"
    with pytest.raises(UsageError, match=message):
        flags.parse([f"--config={path}"])
    # Given as a flag too, the value is the flag's: the error is the flag's own.
    with pytest.raises(UsageError, match=r"^--max_seq_length must be in \[3, 8192\], got 2"):
        flags.parse([f"--config={path}", "--max_seq_length=2"])


def test_a_value_is_its_text_parsed_by_the_setting_not_yaml_11s_guess(tmp_path):
    """``no`` is Norwegian, ``012345`` is 12345 (YAML 1.1: octal 5349), ``2020`` may be a text field's
    name: only true, false and null are read as YAML's own."""
    text = (
        "input: [x]\ntokenizer: t\noutput: o\nsentence_language: no\nrandom_seed: 012345\ntext_field: 2020\n"
    )
    s = flags.parse([f"--config={_file(tmp_path, text)}"]).settings
    assert (s.pairs.sentence_language, s.masking.random_seed, s.input.text_field) == ("no", 12345, "2020")


def test_null_is_not_given_and_false_is_beams_negative_flag(tmp_path):
    text = (
        "input: [x]\ntokenizer: t\noutput: o\nrecipe: bert-512\nmax_predictions_per_seq: null\n"
        "pipeline_options: {use_public_ips: false, save_main_session: true, region: null}\n"
    )
    command = flags.parse([f"--config={_file(tmp_path, text)}"])
    assert command.settings.masking.max_predictions_per_seq == 80  # the recipe's, as if the key were absent
    assert "max_predictions_per_seq" not in command.recipe.kept
    assert command.beam_argv == ("--no_use_public_ips", "--save_main_session")


def test_a_manifest_from_before_the_settings_were_typed_remakes_its_masking(tmp_path):
    """A format_version 1 manifest kept --whole_word_masking beside its options: given as the build file,
    it is word masking still; a manifest of a version this mlmprep does not read is refused."""
    config = {"input": ["x"], "tokenizer": "t", "output": "o", "whole_word_masking": True, "recipe": "bert"}
    path = _file(tmp_path, json.dumps({"format_version": 1, "config": config}), "manifest.json")
    command = flags.parse([f"--config={path}"])
    assert command.settings.masking.mode == "word" and command.recipe is None
    later = _file(tmp_path, json.dumps({"format_version": 99, "settings": config}), "later.json")
    with pytest.raises(UsageError, match="format_version 99; this mlmprep reads 1, 2"):
        flags.parse([f"--config={later}"])
    twice = _file(tmp_path, '{"max_seq_length": 128, "max_seq_length": 512}', "twice.json")
    with pytest.raises(UsageError, match="the key 'max_seq_length' is given twice"):
        flags.parse([f"--config={twice}"])


def test_a_mistake_in_the_build_file_is_one_line_and_exit_2_before_any_work(tmp_path):
    path = _file(tmp_path, "input: [x]\nmax_seq_lenght: 64\n")
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--config={path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "did you mean max_seq_length?" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_same_settings_as_a_file_or_as_flags_write_the_same_shards_and_a_manifest_remakes_them(
    tmp_path, real_data, bert_vocab
):
    corpus = real_data / "corpora" / "tiny" / "kjv.txt"
    flagged = [f"--input={corpus}", f"--tokenizer={bert_vocab}", "--recipe=albert", "--dupe_factor=2"]
    flagged += ["--max_seq_length=128", "--num_shards=2", "--validation_fraction=0.1"]
    by_flags = run_job(tmp_path / "flags", *flagged)
    build = (
        f"input: ['{corpus}']\ntokenizer: {bert_vocab}\nrecipe: albert\ndupe_factor: 2\nmax_seq_length: 128\n"
        "num_shards: 2\nvalidation_fraction: 0.1\npipeline_options: {direct_num_workers: 1}\n"
    )
    by_file = run_job(tmp_path / "file", f"--config={_file(tmp_path, build)}")
    remade = run_job(tmp_path / "remade", f"--config={tmp_path / 'flags' / 'manifest.json'}")

    def shards(manifest):
        return [(s["file"], s["sha256"]) for s in manifest["shards"]]

    assert shards(by_flags) == shards(by_file) == shards(remade) and by_flags["shards"][0]["records"]
    where = ("output", "recipe")  # where it went; a manifest remakes by its settings, not its recipe's name
    for manifest in (by_file, remade):
        assert {k: v for k, v in manifest["settings"].items() if k not in where} == {
            k: v for k, v in by_flags["settings"].items() if k not in where
        }
    assert by_file["input_fingerprint"] == by_flags["input_fingerprint"]
