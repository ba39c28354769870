"""A build of sources and phases end to end: every phase from one reading, each verified, sources recorded."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import job, verify
from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.transforms import decode

pytestmark = pytest.mark.slow

BUILD = """tokenizer: {tokenizer}
validation_fraction: 0.1
sources:
  - {{name: en, input: ["{tiny}/fortunes_en.txt", "{tiny}/jargon.txt", "{tiny}/kjv.txt"]}}
  - {{name: de, input: ["{tiny}/fortunes_de.txt"]}}
  - {{name: eo, input: ["{tiny}/fortunes_eo.txt"], max_repeats: 20}}
phases:
  - {{name: base, max_seq_length: 128, packing: best_fit, masking: none, tokens: 15000, temperature: 0.3}}
  - {{name: long, max_seq_length: 256, packing: concat, tokens: 12000, weights: {{en: 2, de: 1}},
     min_doc_tokens: 40}}
  - {{name: decay, max_seq_length: 64, tokens: 6000, masked_lm_prob: 0.05, masking: word}}
  - {{name: nsp, max_seq_length: 128, sentence_pairs: nsp, tokens: 8000, temperature: 0.7, dupe_factor: 2}}
"""
PHASES = ("base", "long", "decay", "nsp")


def _build(tmp_path, real_data, tokenizer, *beam_flags, body=BUILD):
    path = tmp_path / "build.yaml"
    path.write_text(body.format(tokenizer=tokenizer, tiny=real_data / "corpora" / "tiny"))
    output = tmp_path / "out"
    job.run(["--config", str(path), f"--output={output}", *beam_flags])
    return output


@pytest.fixture(scope="module")
def built(tmp_path_factory, real_data, bert_tokenizer_json):
    return _build(tmp_path_factory.mktemp("build"), real_data, bert_tokenizer_json)


def _manifest(folder: pathlib.Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_every_phase_is_an_output_that_verifies_and_the_build_lists_them(built):
    index = _manifest(built)
    assert index["kind"] == "build" and [p["name"] for p in index["phases"]] == list(PHASES)
    assert [s["name"] for s in index["sources"]] == ["en", "de", "eo"]
    for phase in index["phases"]:
        manifest = _manifest(built / phase["folder"])
        assert manifest["build"]["phase"] == phase["name"] and manifest["sources"] == index["sources"]
        report = verify.verify(str(built / phase["folder"]))
        assert report.problems == [], phase["name"]
    assert verify.main([str(built)]) == 0  # the build's folder: every phase verified
    settings = _manifest(built / "long")["settings"]
    assert settings["max_seq_length"] == 256 and settings["packing"] == "concat"


def test_each_source_takes_its_target_tokens_and_the_shares_follow_the_mixture(built):
    tables = {p: _manifest(built / p)["mixture"] for p in PHASES}
    for rows in tables.values():
        for row in rows:
            assert row["achieved_tokens"] == row["target_tokens"]
    train = {p: {r["source"]: r for r in rows if r["split"] == "train"} for p, rows in tables.items()}
    base = train["base"]
    assert sum(r["target_tokens"] for r in base.values()) == 15000
    natural = np.array([base[s]["natural_tokens"] for s in ("en", "de", "eo")], dtype=float)
    want = 15000 * natural**0.3 / (natural**0.3).sum()
    got = np.array([base[s]["target_tokens"] for s in ("en", "de", "eo")])
    assert np.all(np.abs(got - want) <= 1)
    assert base["eo"]["epochs"] > 1 > base["en"]["epochs"]  # the small language repeated, the large cut
    long = train["long"]
    assert set(long) == {"en", "de"} and long["en"]["target_tokens"] == 2 * long["de"]["target_tokens"]
    # The long phase uses documents of 40 tokens or more only: fewer of them than the base phase has.
    assert long["en"]["natural_tokens"] < base["en"]["natural_tokens"]


def _rows(folder: pathlib.Path, split: str, fmt: str):
    manifest = _manifest(folder)
    seq, preds = manifest["settings"]["max_seq_length"], manifest["settings"]["max_predictions_per_seq"]
    unmasked = manifest["settings"]["masking"] == "none"
    frame = None
    if manifest["settings"]["sentence_pairs"] != "none":
        tokenizer = (folder / manifest["tokenizer"]["file"]).read_text()
        frame = manifest_lib.vocabulary(manifest, tokenizer)[1].frame
    out = []
    for shard in manifest["shards"]:
        if shard["split"] != split or shard["format"] != fmt:
            continue
        with open(folder / shard["file"], "rb") as f:
            read = decode.parquet_slices if fmt == "parquet" else decode.tfrecord_slices
            out += [part for part in read(f, seq, preds, 10_000, frame, unmasked, True)]
    return out


def test_source_ids_say_each_pieces_source_alike_in_both_formats(built):
    import tensorflow as tf

    for phase in PHASES:
        for split in ("train", "validation"):
            parquet = [extra["source_ids"] for _, extra in _rows(built / phase, split, "parquet")]
            tfrecord = [extra["source_ids"] for _, extra in _rows(built / phase, split, "tfrecord")]
            assert len(parquet) == len(tfrecord)
            for (a, n), (b, m) in zip(parquet, tfrecord):
                assert np.array_equal(a, b) and np.array_equal(n, m)
    counts = np.concatenate([e["source_ids"][1] for _, e in _rows(built / "long", "train", "parquet")])
    assert np.all(counts == 1)  # concat packing joins one source's documents
    pairs = [e for _, e in _rows(built / "nsp", "train", "parquet")]
    assert np.all(np.concatenate([e["source_ids"][1] for e in pairs]) == 1)  # a pair is of one source
    labels = np.concatenate([e["next_sentence_labels"].ravel() for e in pairs])
    assert 0.3 < labels.mean() < 0.7
    base = np.concatenate([e["source_ids"][1] for _, e in _rows(built / "base", "train", "parquet")])
    assert base.max() > 1  # best fit: several pieces to a row, each with its source
    # TensorFlow reads the feature as a variable-length list, not padded.
    shard = next(
        s["file"] for s in _manifest(built / "base")["shards"] if s["format"] == "tfrecord" and s["records"]
    )
    record = next(iter(tf.data.TFRecordDataset(str(built / "base" / shard))))
    parsed = tf.io.parse_single_example(record, {"source_ids": tf.io.VarLenFeature(tf.int64)})
    first = _rows(built / "base", shard.split("-")[0], "tfrecord")[0][1]["source_ids"]
    assert parsed["source_ids"].values.numpy().tolist() == first[0][: first[1][0]].tolist()
    names = [s["name"] for s in _manifest(built / "base")["sources"]]
    assert set(pq.read_table(built / "base" / shard.replace(".tfrecord", ".parquet")).column("source_ids")
               .combine_chunks().flatten().to_pylist()) <= set(range(len(names)))  # fmt: skip


def test_no_validation_document_is_in_any_phases_train_split(built):
    """The split is drawn per document once: the unmasked phase's pieces (whole documents or parts of one,
    written as they are) in train and validation never share a document."""

    def pieces(split):
        out = set()
        for batch, extra in _rows(built / "base", split, "parquet"):
            for row, length, position in zip(batch.input_ids, batch.lengths, extra["position_ids"]):
                first = np.flatnonzero(position[:length] == 0)
                for a, b in zip(first, [*first[1:], length]):
                    out.add(tuple(row[a:b].tolist()))
        return out

    train, validation = pieces("train"), pieces("validation")
    assert validation and not (train & validation)


def test_a_repeated_documents_copies_are_packed_apart(built):
    """Each copy of a repeated document goes to its epoch's packer: two copies never share a row."""
    copies = {}
    for batch, extra in _rows(built / "base", "train", "parquet"):
        values, counts = extra["source_ids"]
        sources = np.split(values, np.cumsum(counts)[:-1])
        rows = zip(batch.input_ids, batch.lengths, extra["position_ids"], sources)
        for row, length, position, source in rows:
            first = np.flatnonzero(position[:length] == 0)
            pieces = [tuple(row[a:b].tolist()) for a, b in zip(first, [*first[1:], length])]
            assert len(set(pieces)) == len(pieces)  # no row holds two copies of a piece
            for piece, s in zip(pieces, source.tolist()):
                copies[(s, piece)] = copies.get((s, piece), 0) + 1
    assert max(n for (s, _), n in copies.items() if s == 2) >= 5  # the small source's documents, in 5+ rows


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *map(str, args)], capture_output=True, text=True
    )


def test_a_phases_folder_is_an_output_for_inspect_and_train_phase_after_phase(built, tmp_path):
    shown = _cli("inspect", built / "base", "-n", "2")
    assert shown.returncode == 0 and "(sources: " in shown.stdout
    first = _cli(
        "train", f"--data={built / 'base'}", f"--output={tmp_path / 'base'}", "--steps=2", "--batch_size=4"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    # The next phase, at twice the length, from the first's model (its position table grown).
    second = _cli(
        "train", f"--data={built / 'long'}", f"--output={tmp_path / 'long'}",
        f"--init_from={tmp_path / 'base'}", "--steps=2", "--batch_size=4",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    assert (tmp_path / "long" / "model.keras").exists()


def test_a_build_is_byte_identical_with_one_and_two_workers(built, tmp_path, real_data, bert_tokenizer_json):
    two = _build(tmp_path, real_data, bert_tokenizer_json, "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2")  # fmt: skip
    for phase in PHASES:
        one_shards = {s["file"]: s["sha256"] for s in _manifest(built / phase)["shards"]}
        two_shards = {s["file"]: s["sha256"] for s in _manifest(two / phase)["shards"]}
        assert one_shards == two_shards
        assert _manifest(built / phase)["mixture"] == _manifest(two / phase)["mixture"]


def _shards(folder: pathlib.Path) -> dict:
    return {s["file"]: s["sha256"] for s in _manifest(folder)["shards"]}


def test_the_builds_manifest_remakes_every_phase_and_a_phases_remakes_it_alone(built, tmp_path):
    job.run(["--config", str(built / "manifest.json"), f"--output={tmp_path / 'again'}"])
    for phase in PHASES:
        assert _shards(tmp_path / "again" / phase) == _shards(built / phase)
    job.run(["--config", str(built / "long" / "manifest.json"), f"--output={tmp_path / 'alone'}"])
    assert [p["name"] for p in _manifest(tmp_path / "alone")["phases"]] == ["long"]
    assert _shards(tmp_path / "alone" / "long") == _shards(built / "long")


def test_a_share_beyond_max_repeats_stops_the_build_naming_the_source(
    tmp_path, real_data, bert_tokenizer_json
):
    body = BUILD.replace("tokens: 15000, temperature: 0.3", "tokens: 300000, temperature: 0.3")
    with pytest.raises(
        UsageError, match=r"phase 'base': source 'eo' would be repeated .* above max_repeats 20"
    ):
        _build(tmp_path, real_data, bert_tokenizer_json, body=body)
    assert not (tmp_path / "out" / "manifest.json").exists()
