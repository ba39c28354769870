"""The data's profile: [UNK] tokens, padding and length histograms in the manifest, checked by verify, and the
warnings the run's summary gives."""

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import verify
from mlmprep.transforms import profile
from mlmprep.transforms.tokenize import encode_batch, load_tokenizer, tokenizer_json

from conftest import run_job

UNK = 100  # bert-base-uncased's [UNK]


def test_length_buckets_cover_every_length_once():
    for length in (6, 20, 64, 128, 512):
        edges = profile.length_bucket_edges(length)
        assert edges[0][0] == 1 and edges[-1][1] == length
        assert all(a[1] + 1 == b[0] for a, b in zip(edges, edges[1:]))  # contiguous, no gaps
        for first, last in edges:
            if first <= last:
                counts = profile.length_buckets(np.arange(first, last + 1), length)
                assert counts.sum() == last - first + 1 and np.count_nonzero(counts) == 1


def test_the_manifest_counts_unk_padding_and_lengths_as_the_shards_hold_them(tmp_path, real_data, bert_vocab):
    corpus = real_data / "corpora" / "tiny"
    out = tmp_path / "out"
    manifest = run_job(
        out,
        f"--input={corpus / 'fortunes_zh.txt'}",
        f"--input={corpus / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.2",
        "--max_seq_length=64",
        "--max_predictions_per_seq=10",
    )
    splits = manifest["counts"]["splits"]
    for split, counts in splits.items():
        table = pq.read_table(sorted(out.glob(f"{split}-*.parquet")))
        ids, labels = np.array(table["input_ids"].to_pylist()), np.array(table["labels"].to_pylist())
        real = np.array(table["attention_mask"].to_pylist()) == 1
        original = np.where(labels >= 0, labels, ids)  # before masking
        assert counts["unk_tokens"] == np.sum((original == UNK) & real) > 0
        assert counts["padding"] == np.sum(~real) == np.sum(ids == 0)
        lengths = real.sum(axis=1)
        assert counts["sequence_lengths"] == np.bincount((lengths - 1) * 16 // 64, minlength=16).tolist()
        assert sum(counts["document_tokens"]) == counts["documents"]
    # Documents by tokens, against the documents tokenized here (no document of these is dropped).
    tokenizer = load_tokenizer(tokenizer_json(open(bert_vocab, "rb").read()))
    docs = []
    for name in ("fortunes_zh.txt", "kjv.txt"):
        docs += [d for d in re.split(r"\n\s*\n", (corpus / name).read_text(encoding="utf-8")) if d.strip()]
    sizes = np.array([ids.size for ids in encode_batch(tokenizer, docs)])
    assert sum(splits[s]["documents"] for s in splits) == len(docs)
    expected = np.bincount(np.log2(sizes).astype(int), minlength=16)
    assert np.array_equal(np.sum([splits[s]["document_tokens"] for s in splits], axis=0), expected)
    assert verify.verify(str(out)).problems == []


@pytest.mark.parametrize("field", ["unk_tokens", "padding", "sequence_lengths"])
def test_verify_recounts_the_profile(tmp_path, real_data, bert_vocab, field):
    out = tmp_path / "out"
    run_job(out, f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_zh.txt'}", f"--tokenizer={bert_vocab}")
    manifest = json.loads((out / "manifest.json").read_text())
    split = manifest["counts"]["splits"]["train"]
    split[field] = [n + 1 for n in split[field]] if isinstance(split[field], list) else split[field] + 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify.verify(str(out)).problems
    assert any(p.startswith("train (tfrecord)") and field in p for p in problems), problems


def _run(tmp_path, *args):
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--output={tmp_path / 'out'}", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_summary_warns_of_unk_padding_and_empty_shards(tmp_path, real_data, bert_vocab):
    tiny = real_data / "corpora" / "tiny"
    # Chinese fortunes with an English vocabulary: half [UNK], short documents: half padding.
    printed = _run(
        tmp_path, f"--input={tiny / 'fortunes_zh.txt'}", f"--tokenizer={bert_vocab}", "--num_shards=64"
    )
    assert re.search(r"\[UNK\] \d+\.\d\d% of the tokens, sequences \d+\.\d% full", printed)
    assert "WARNING: [UNK] is 49.9% of the train tokens (over 1%)" in printed
    assert "--packing best_fit fills them" in printed
    assert "WARNING: train has 56 sequences for 64 shards: some shards are empty" in printed
    # Concatenated: full sequences; a vocabulary that fits: no [UNK] warning.
    printed = _run(
        tmp_path,
        f"--input={tiny / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--packing=concat",
        "--overwrite",
    )
    assert "WARNING" not in printed


def test_verify_reads_an_output_from_before_the_profile(tmp_path, real_data, bert_vocab):
    out = tmp_path / "out"
    run_job(out, f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={bert_vocab}")
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in [*manifest["shards"], *manifest["counts"]["splits"].values()]:
        for field in ("unk_tokens", "padding", "sequence_lengths", "document_tokens"):
            entry.pop(field, None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert verify.verify(str(out)).problems == []
