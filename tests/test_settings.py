"""Every setting defined once: the flags, the trainer's masking flags, the reference, the manifest."""

import dataclasses
import re

import pytest

from mlmprep.pipeline import flags, settings, settings_text
from mlmprep.pipeline.errors import UsageError
from mlmprep.trainer import flags as train_flags
from mlmprep.trainer import masking as masking_lib

from conftest import REPO

WHERE = ["--input=corpus/*.txt", "--tokenizer=tok.json", "--output=out"]


def _words(text: str) -> str:
    """Text without its white space: argparse wraps help at hyphens too."""
    return "".join(text.split())


def test_every_setting_has_help_and_a_default_that_passes_its_own_checks():
    defaults = settings.Settings()
    for name, (group, field) in settings.SETTINGS.items():
        spec = settings.spec(name)
        assert spec.help.strip(), name
        value = getattr(getattr(defaults, group), field.name)
        if spec.required:
            continue
        scalar, optional = settings.kind(name)
        assert value is None and optional or settings.coerce(name, value) == value, name
        settings.check_value(name, value)  # raises on a default the setting itself refuses


def test_the_run_flags_are_the_settings():
    """Each setting is a flag of ``mlmprep run`` with its help, and parses back to the typed value."""
    help_text = _words(flags.help_text())
    for name in settings.SETTINGS:
        assert f"--{name}" in help_text, name
        assert _words(settings.spec(name).help)[:60] in help_text, name
    command = flags.parse([*WHERE, "--max_seq_length", "512", "--formats=parquet", "--nodedup", "--input=b"])
    s = command.settings
    assert s.packing.max_seq_length == 512 and s.output.formats == ("parquet",) and s.input.dedup is False
    assert s.input.input == ("corpus/*.txt", "b") and s.masking.max_predictions_per_seq == 77
    assert command.beam_argv == ()


def test_the_trainers_masking_flags_are_the_jobs_settings():
    """``mlmprep train``'s masking options are the same definitions: the same names, help and checks."""
    help_text = _words(train_flags.train_parser().format_help())
    for name in settings.TRAIN_MASKING:
        assert f"--{name}" in help_text and _words(settings.spec(name).help)[:60] in help_text, name
    args, _ = train_flags.parse_train(["--data=d", "--output=o", "--masked_lm_prob=0.3", "--masking=span"])
    assert args.masked_lm_prob == 0.3 and args.masking == "span"  # typed and checked before TensorFlow loads
    with pytest.raises(UsageError, match=r"--masked_lm_prob must be a number, got 'abc'"):
        train_flags.parse_train(["--data=d", "--output=o", "--masked_lm_prob=abc"])
    with pytest.raises(UsageError, match="--masking must be one of token, word, span, got none"):
        train_flags.parse_train(["--data=d", "--output=o", "--masking=none"])
    with pytest.raises(UsageError, match="--masking must be one of token, word, span"):
        masking = settings.Masking(mode="none")
        settings.check_masking(masking, 128, masking_lib.MASKINGS)
    with pytest.raises(UsageError, match=r"--masked_lm_prob must be in \(0, 1\], got 1.5"):
        settings.check_masking(settings.Masking(masked_lm_prob=1.5), 128)


def test_the_reference_is_made_from_the_definitions():
    page = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    regenerate = "regenerate it: python -m mlmprep.pipeline.settings_text > docs/reference.md"
    assert page == settings_text.reference_markdown(), regenerate
    for name in settings.SETTINGS:
        assert f"| `{name}` |" in page, name


def test_a_value_no_run_can_take_names_its_setting():
    cases = {
        "--max_seq_length=2": "--max_seq_length must be in [3, 8192], got 2",
        "--masked_lm_prob=abc": "--masked_lm_prob must be a number, got 'abc'",
        "--packing=tight": "--packing must be one of document, concat, best_fit, got tight",
        "--formats=tfrecord,csv": "--formats must be one of tfrecord, parquet, arrayrecord, mds, got csv",
        "--max_predictions_per_seq=200": "--max_predictions_per_seq must be in [1, 126] at --max_seq_length",
        "--random_token_ratio=0.5": "--mask_token_ratio + --random_token_ratio must be at most 1",
    }
    for flag, message in cases.items():
        with pytest.raises(settings.SettingError, match=re.escape(message)):
            flags.parse([*WHERE, flag])
    with pytest.raises(settings.SettingError, match="--whole_word_masking is --masking word; it contradicts"):
        flags.parse([*WHERE, "--whole_word_masking", "--masking=span"])
    with pytest.raises(UsageError, match="--output is required"):
        flags.parse(WHERE[:2])


def test_a_recipe_lies_under_the_settings_given_and_a_contradiction_names_its_setting():
    command = flags.parse([*WHERE, "--recipe=roberta", "--max_seq_length=256"])
    assert command.settings.packing.mode == "concat" and command.settings.packing.max_seq_length == 256
    assert command.recipe.kept == {"max_seq_length": 256} and "max_seq_length" not in command.recipe.set
    with pytest.raises(
        UsageError, match="--recipe bert sets --sentence_pairs nsp, which this run cannot take"
    ):
        flags.parse([*WHERE, "--recipe=bert", "--packing=best_fit"])


def test_beam_flags_are_kept_apart_and_checked():
    command = flags.parse([*WHERE, "--runner=FnApiRunner", "--direct_num_workers=2"])
    assert command.beam_argv == ("--runner=FnApiRunner", "--direct_num_workers=2")
    with pytest.raises(UsageError, match="unrecognized arguments: --max_seq_lenght"):
        flags.parse([*WHERE, "--max_seq_lenght=64"])


def test_settings_flatten_and_read_back_to_the_same_value():
    s = flags.parse([*WHERE, "--recipe=albert"]).settings
    flat = s.flat()
    assert set(flat) == set(settings.SETTINGS) and flat["packing"] == "document" and flat["masking"] == "span"
    assert settings.Settings.from_flat(flat) == s
    assert dataclasses.replace(s.masking, mode="none").unmasked and s.masking.config().masking == "span"
