"""The build files of published curricula in examples/, each run as written on the repository's corpora."""

import json
import os
import pathlib

import numpy as np
import pytest

from mlmprep.pipeline import job, verify
from mlmprep.transforms import mixture

pytestmark = pytest.mark.slow

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _run(name, tmp_path, real_data, bert_tokenizer_json) -> pathlib.Path:
    """Runs examples/NAME.yaml as written, from a folder where its corpora/ and tokenizer.json are."""
    (tmp_path / "corpora").symlink_to(real_data / "corpora")
    (tmp_path / "tokenizer.json").symlink_to(bert_tokenizer_json)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        job.run(["--config", str(EXAMPLES / f"{name}.yaml"), "--output=out"])
    finally:
        os.chdir(here)
    return tmp_path / "out"


def _phases(output: pathlib.Path) -> dict[str, pathlib.Path]:
    index = json.loads((output / "manifest.json").read_text())
    if index.get("kind") != "build":
        return {"": output}
    return {p["name"]: output / p["folder"] for p in index["phases"]}


def _check(output: pathlib.Path) -> dict[str, dict]:
    """Every phase verifies and each source's achieved tokens keep the budget's rule; the manifests."""
    manifests = {}
    for name, folder in _phases(output).items():
        assert verify.verify(str(folder)).problems == [], name
        manifest = json.loads((folder / "manifest.json").read_text())
        longest = 2 ** len(manifest["counts"]["splits"]["train"]["document_tokens"])  # no document is longer
        for row in manifest["mixture"]:
            assert mixture.within_tolerance(row["achieved_tokens"], row["target_tokens"], longest)
            assert row["achieved_tokens"] == row["target_tokens"]  # exact: the document at the cut is cut
        manifests[name] = manifest
    return manifests


def _train(manifest) -> dict[str, dict]:
    return {row["source"]: row for row in manifest["mixture"] if row["split"] == "train"}


def test_modernbert_three_phases_grow_the_context_on_long_documents(tmp_path, real_data, bert_tokenizer_json):
    manifests = _check(_run("modernbert", tmp_path, real_data, bert_tokenizer_json))
    assert list(manifests) == ["pretrain", "context_extension", "decay"]
    # TFRecord for the bundled trainer, MDS for ModernBERT's own: each phase's splits with an index.json.
    assert all({s["format"] for s in m["shards"]} == {"tfrecord", "mds"} for m in manifests.values())
    assert all(sorted(m["mds"]["indexes"]) == ["train", "validation"] for m in manifests.values())
    lengths = [m["settings"]["max_seq_length"] for m in manifests.values()]
    assert lengths == [1024, 8192, 8192]
    long = manifests["context_extension"]
    assert long["settings"]["min_doc_tokens"] == 256
    # No document under 256 tokens but those cut at a source's budget (one a source, cut to the token).
    assert sum(long["counts"]["splits"]["train"]["document_tokens"][:8]) <= len(_train(long))
    shares = {s: r["target_tokens"] for s, r in _train(long).items()}
    assert shares == {"web": 4000, "docs": 8000, "books": 8000}


def test_mmbert_anneals_temperature_and_masking_while_languages_widen(
    tmp_path, real_data, bert_tokenizer_json
):
    manifests = _check(_run("mmbert", tmp_path, real_data, bert_tokenizer_json))
    languages = [sorted(_train(m)) for m in manifests.values()]
    assert languages == [["de", "en", "ru"], ["de", "en", "ru", "zh"], ["de", "en", "eo", "ru", "zh"]]
    rates = [m["settings"]["masked_lm_prob"] for m in manifests.values()]
    assert rates == [0.3, 0.15, 0.05]
    for manifest, tau in zip(manifests.values(), (0.7, 0.5, 0.3)):
        rows = _train(manifest).values()
        natural = np.array([r["natural_tokens"] for r in rows], dtype=float)
        want = manifest["settings"]["tokens"] * natural**tau / (natural**tau).sum()
        assert np.all(np.abs(np.array([r["target_tokens"] for r in rows]) - want) <= 1)


def test_xlmr_samples_languages_at_temperature_0_3(tmp_path, real_data, bert_tokenizer_json):
    manifests = _check(_run("xlmr", tmp_path, real_data, bert_tokenizer_json))
    (manifest,) = manifests.values()
    train = _train(manifest)
    assert train["eo"]["epochs"] > 1 > train["en"]["epochs"]  # the smallest language up, the largest down
    natural = {s: r["natural_tokens"] for s, r in train.items()}
    share = {s: r["target_tokens"] / 20000 for s, r in train.items()}
    assert share["eo"] > 3 * natural["eo"] / sum(natural.values())


def test_bert_two_phases_of_next_sentence_pairs(tmp_path, real_data, bert_tokenizer_json):
    manifests = _check(_run("bert", tmp_path, real_data, bert_tokenizer_json))
    assert list(manifests) == ["seq128", "seq512"]
    for manifest, (length, predictions) in zip(manifests.values(), ((128, 20), (512, 80))):
        settings = manifest["settings"]
        assert (settings["max_seq_length"], settings["max_predictions_per_seq"]) == (length, predictions)
        assert settings["sentence_pairs"] == "nsp" and settings["dupe_factor"] == 10
        labels = manifest["counts"]["splits"]["train"]["next_sentence_labels"]
        assert 0.35 < labels[1] / sum(labels) < 0.65
