"""--recipe: a published recipe's flags for mlmprep run and train; the user's flags win; recorded, shown."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from mlmprep.pipeline import cli, flags, recipes, report, settings, verify
from mlmprep.pipeline.errors import UsageError
from mlmprep.trainer import flags as train_flags

from conftest import REPO


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_the_table_in_docs_recipes_md_is_made_from_the_recipes():
    page = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    start = "<!-- recipes: python -m mlmprep.pipeline.recipes -->\n"
    table = page[page.index(start) + len(start) : page.index("<!-- /recipes -->")]
    assert table == recipes.markdown_table(), "regenerate it: python -m mlmprep.pipeline.recipes"
    for name in ("bert", "bert-512", "roberta", "albert", "spanbert", "electra", "modernbert"):
        assert f"| `{name}` (" in table


_WHERE = ["--input=corpus/*.txt", "--tokenizer=tok.json", "--output=out"]


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_setting_of_a_recipe_is_a_setting_its_command_takes(name):
    """The recipe's settings resolve as the commands' own, to the recipe's values (a renamed setting or a
    choice that no longer exists fails here, not in a user's job)."""
    recipe = recipes.RECIPES[name]
    command = flags.parse([f"--recipe={name}", *_WHERE])
    resolved = command.settings.flat()
    assert {k: resolved[k] for k in recipe.run} == recipe.run and command.recipe.set == recipe.run
    args, applied = train_flags.parse_train(["--recipe", name, "--data=d", "--output=o"])
    assert {k: getattr(args, k) for k in recipe.train} == recipe.train and applied.set == recipe.train


def test_settings_given_win_over_the_recipe_however_they_are_spelt():
    command = flags.parse(
        ["--recipe", "bert", "--dupe_factor", "2", "--whole_word_masking", "--max_seq_length=256", *_WHERE]
    )
    s = command.settings
    assert (s.masking.dupe_factor, s.masking.mode, s.packing.max_seq_length) == (2, "word", 256)
    assert command.recipe.kept == {"dupe_factor": 2, "masking": "word", "max_seq_length": 256}
    assert "masking" not in command.recipe.set and command.recipe.set["sentence_pairs"] == "nsp"
    # The trainer's parser takes abbreviations: one given so still wins.
    args, applied = train_flags.parse_train(
        ["--recipe=roberta", "--learning_r", "1e-3", "--data=d", "--output=o"]
    )
    assert args.learning_rate == 1e-3
    assert "learning_rate" not in applied.set and applied.kept == {"learning_rate": 1e-3}


def test_a_run_by_recipe_records_it_and_the_report_shows_it(tmp_path, real_data, bert_vocab):
    out = tmp_path / "out"
    status, stdout, _ = _cli(
        "run", "--recipe", "bert", f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}", f"--output={out}", "--dupe_factor=2", "--num_shards=1",
    )  # fmt: skip
    assert status == 0
    line = stdout.splitlines()[0]
    assert line.startswith("mlmprep run: --recipe bert (BERT, phase 1) set --max_seq_length=128 ")
    assert "--sentence_pairs=nsp" in line and line.endswith("yours kept: --dupe_factor=2")
    assert "recipe bert (BERT, phase 1); yours kept: --dupe_factor=2" in stdout  # the summary
    manifest = json.loads((out / "manifest.json").read_text())
    config = manifest["settings"]
    assert config["recipe"] == "bert" and config["dupe_factor"] == 2
    assert {k: config[k] for k in recipes.RECIPES["bert"].run if k != "dupe_factor"} == {
        k: v for k, v in recipes.RECIPES["bert"].run.items() if k != "dupe_factor"
    }
    entry = manifest["recipe"]
    assert (
        entry["name"] == "bert" and entry["kept"] == {"dupe_factor": 2} and "dupe_factor" not in entry["set"]
    )
    assert entry["train"] == recipes.RECIPES["bert"].train
    assert manifest["counts"]["splits"]["train"]["next_sentence_labels"][1] > 0  # NSP pairs, as BERT's
    assert verify.main([str(out)]) == 0
    pytest.importorskip("matplotlib")
    page = report.build(str(out))
    assert "<h2>Recipe</h2>" in page and "<td>--dupe_factor</td><td>2</td><td>your flag</td>" in page
    assert "<td>--sentence_pairs</td><td>nsp</td><td>the recipe</td>" in page


@pytest.mark.slow
def test_modernbert_writes_unmasked_best_fit_rows_with_its_rate_for_training(tmp_path, real_data, bert_vocab):
    """ModernBERT's data: 1,024-token best-fit rows, no masks, and its 30% (Bernoulli) for the trainer."""
    out = tmp_path / "mb"
    status, _, _ = _cli(
        "run", "--recipe=modernbert", f"--input={real_data / 'corpora' / 'tiny' / 'jargon.txt'}",
        f"--tokenizer={bert_vocab}", f"--output={out}", "--num_shards=1",
    )  # fmt: skip
    assert status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["settings"]
    assert (c["max_seq_length"], c["packing"], c["masking"], c["masked_lm_prob"], c["mask_count"]) == (
        1024, "best_fit", "none", 0.3, "bernoulli",
    )  # fmt: skip
    train = manifest["counts"]["splits"]["train"]
    # Best fit fills the rows: 7 on this text, the last one a remainder.
    assert train["predictions"] == 0 and train["tokens"] > 0.9 * 1024 * train["sequences"]
    # The trainer's masking of these shards, with the recipe's flags: 30%, each token drawn alone.
    masking_lib = pytest.importorskip("mlmprep.trainer.masking")
    args = train_flags.parse("train", ["--recipe=modernbert", f"--data={out}", "--output=m"])
    resolved = masking_lib.resolve(
        manifest, {n: getattr(args, n) for n in masking_lib.FIELDS}, args.dynamic_masking
    )
    assert (resolved.masked_lm_prob, resolved.mask_count, resolved.masking) == (0.3, "bernoulli", "token")
    # Every command takes it: verify, inspect, and mlmprep train --recipe for real (a few steps).
    assert verify.main([str(out)]) == 0
    status, shown, _ = _cli("inspect", str(out), "-n", "1")
    assert status == 0 and shown.strip()
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "train", "--recipe=modernbert", f"--data={out}",
         f"--output={tmp_path / 'model'}", "--steps=2", "--checkpoint_every=2", "--batch_size=4",
         "--eval_batches=1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        done.stdout.startswith("mlmprep train: --recipe modernbert (") and "step 2: val_loss" in done.stdout
    )


def test_training_by_a_recipe_refuses_data_of_another_length_or_pairs(tmp_path, real_data, bert_vocab):
    pytest.importorskip("tensorflow")
    out = tmp_path / "out"
    status, _, _ = _cli(
        "run", "--recipe=bert", f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}", f"--output={out}", "--num_shards=1", "--dupe_factor=1",
    )  # fmt: skip
    assert status == 0
    for recipe, expected in (
        ("bert-512", "--recipe bert-512 trains on 512-token sequences; --data "),
        ("electra", "--recipe electra trains on --sentence_pairs none data; --data "),
    ):  # the data: 128 tokens (bert-512's length differs) of NSP pairs (electra's pairs differ)
        done = subprocess.run(
            [sys.executable, "-m", "mlmprep.pipeline.cli", "train", "--recipe", recipe, "--data", str(out),
             "--output", str(tmp_path / "model"), "--steps=1"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stdout.splitlines()[0].startswith(f"mlmprep train: --recipe {recipe} (")
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("mlmprep train: error:")]
        assert len(errors) == 1 and expected in errors[0], done.stderr
        if recipe == "bert-512":
            assert errors[0].endswith("holds 128-token ones (--recipe bert or electra trains on those)")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--recipe=bart"],
            "--recipe 'bart' is not a known recipe; the recipes: bert, bert-512, roberta, albert",
        ),
        (
            ["--recipe=bert", "--packing=best_fit"],
            "--recipe bert sets --sentence_pairs nsp, which this run cannot take: --packing best_fit",
        ),
        (
            ["--recipe=roberta", "--dupe_factor=2"],
            "--recipe roberta sets --masking none, which this run cannot take: --dupe_factor 2 with "
            "--masking none",
        ),
        (
            ["--recipe=bert", "--masking=none"],
            "--recipe bert sets --dupe_factor 10, which this run cannot take: --dupe_factor 10 with "
            "--masking none",
        ),
    ],
)
def test_a_bad_recipe_or_a_contradiction_is_one_line_and_exit_2(
    tmp_path, real_data, bert_vocab, argv, expected
):
    status, _, err = _cli(
        "run", *argv, f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={bert_vocab}",
        f"--output={tmp_path / 'out'}",
    )  # fmt: skip
    assert status == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_a_recipe_is_only_its_flags_the_shards_are_those_of_the_flags_typed(tmp_path, real_data, bert_vocab):
    common = [
        f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--num_shards=1",
    ]
    by_recipe = tmp_path / "recipe"
    assert _cli("run", "--recipe=spanbert", f"--output={by_recipe}", *common)[0] == 0
    typed = [f"--{k}={v}" for k, v in recipes.RECIPES["spanbert"].run.items()]
    assert _cli("run", *typed, f"--output={tmp_path / 'typed'}", *common)[0] == 0
    shards = [json.loads((tmp_path / d / "manifest.json").read_text())["shards"] for d in ("recipe", "typed")]
    assert [s["sha256"] for s in shards[0]] == [s["sha256"] for s in shards[1]] and shards[0][0][
        "records"
    ] > 0


def test_what_a_recipe_leaves_to_the_user_follows_their_flags(tmp_path, real_data, bert_vocab):
    """A length or rate given makes the cap the default for them (ELECTRA-Base's 512 tokens: 77, not 19),
    and training by the recipe takes the length the user chose when making the data with it."""
    command = flags.parse(["--recipe=electra", "--max_seq_length=512", *_WHERE])
    assert "max_predictions_per_seq" not in command.recipe.set
    assert command.settings.masking.max_predictions_per_seq == 77  # the default at 512
    data = settings.Settings.from_flat({"max_seq_length": 512, "sentence_pairs": "none"})
    made = {"name": "electra", "kept": {"max_seq_length": 512}}
    recipes.check_data(recipes.RECIPES["electra"], data, made, "d")  # the user's 512, with this recipe
    with pytest.raises(UsageError, match="--recipe bert trains on 128-token sequences"):
        pairs = settings.Settings.from_flat({"max_seq_length": 512, "sentence_pairs": "nsp"})
        recipes.check_data(recipes.RECIPES["bert"], pairs, made, "d")
    # A recipe's --dynamic_masking can be turned off.
    args, _ = train_flags.parse_train(["--recipe=roberta", "--nodynamic_masking", "--data=d", "--output=o"])
    assert args.dynamic_masking is False


def test_a_recipes_name_leaves_the_fingerprint_as_its_flags_typed():
    from mlmprep.pipeline import fingerprint

    config = {"max_seq_length": 128, "masking": "span", "span_p": 0.2}
    plain = fingerprint.fingerprint(config, [], "t")
    assert (
        fingerprint.fingerprint({**config, "recipe": "spanbert", "span_lengths": "geometric"}, [], "t")
        == plain
    )
    assert fingerprint.fingerprint({**config, "span_lengths": "harmonic"}, [], "t") != plain


@pytest.mark.slow
def test_albert_is_the_same_with_one_and_two_workers_and_verifies(tmp_path, real_data, bert_vocab):
    """ALBERT's recipe (SOP pairs, harmonic n-grams of up to 3 words): byte-identical shards with one and
    two workers, verify passes, and the n-grams are 1 to 3 words, the shorter the more."""
    common = [
        "--recipe=albert", f"--input={real_data / 'corpora' / 'small' / 'devils_dictionary.txt'}",
        f"--tokenizer={bert_vocab}", "--dupe_factor=2", "--num_shards=2",
    ]  # fmt: skip
    assert _cli("run", *common, f"--output={tmp_path / 'one'}")[0] == 0
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert _cli("run", *common, *workers, f"--output={tmp_path / 'two'}")[0] == 0
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two")]
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]
    assert verify.main([str(tmp_path / "one")]) == 0
    words = manifests[0]["counts"]["spans"]["words"]
    assert len(words) == 3 and words[0] > words[1] > words[2] > 0
