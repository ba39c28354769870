"""Span masking (SpanBERT's): lengths, whole words, contiguity, the exact budget, one decision per span."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from mlmprep.transforms import keys
from mlmprep.transforms.mask import (
    MaskingConfig,
    mask_batch,
    prediction_counts,
    span_length_probabilities,
    span_lengths,
)
from mlmprep.transforms.pack import pack_documents
from mlmprep.transforms.text_input import iter_documents
from mlmprep.transforms.tokenize import encode_with_word_starts, load_tokenizer, vocabulary, word_source

from conftest import run_job, shard_files


def _geometric_mean(p: float, longest: int) -> float:
    """The truncated geometric's mean, from its definition: sum k p (1-p)^(k-1) / sum p (1-p)^(k-1)."""
    weights = [p * (1 - p) ** (k - 1) for k in range(1, longest + 1)]
    return sum(k * w for k, w in enumerate(weights, 1)) / sum(weights)


def test_drawn_span_lengths_follow_the_truncated_geometric():
    probabilities = span_length_probabilities(0.2, 10)
    assert probabilities.sum() == pytest.approx(1)
    assert np.all(np.diff(probabilities) < 0)  # geometric: each length rarer than the one before
    assert _geometric_mean(0.2, 10) == pytest.approx(3.80, abs=0.005)  # SpanBERT's figure
    rng_keys = keys.record_keys(np.arange(200_000, dtype=np.uint64), seed=3, dupe=0)
    drawn = span_lengths(rng_keys, np.zeros(rng_keys.size, np.int64), MaskingConfig(masking="span"))
    shares = np.bincount(drawn, minlength=11)[1:] / drawn.size
    np.testing.assert_allclose(shares, probabilities, atol=0.004)
    assert drawn.mean() == pytest.approx(_geometric_mean(0.2, 10), rel=0.01)
    short = span_lengths(
        rng_keys, np.zeros(rng_keys.size, np.int64), MaskingConfig(span_p=0.5, max_span_words=3)
    )
    assert set(np.unique(short)) == {1, 2, 3}
    assert short.mean() == pytest.approx(_geometric_mean(0.5, 3), rel=0.01)


def test_harmonic_span_lengths_are_albert_ngrams():
    """--span_lengths harmonic: p(n) proportional to 1/n, ALBERT's 6/11, 3/11, 2/11 with 3 words."""
    config = MaskingConfig(masking="span", span_lengths="harmonic", max_span_words=3)
    np.testing.assert_allclose(span_length_probabilities(0.2, 3, "harmonic"), [6 / 11, 3 / 11, 2 / 11])
    rng_keys = keys.record_keys(np.arange(200_000, dtype=np.uint64), seed=5, dupe=0)
    drawn = span_lengths(rng_keys, np.zeros(rng_keys.size, np.int64), config)
    np.testing.assert_allclose(
        np.bincount(drawn, minlength=4)[1:] / drawn.size, [6 / 11, 3 / 11, 2 / 11], atol=0.004
    )


@pytest.fixture(scope="module")
def packed(bert_tokenizer_json, real_data):
    """Real text (the Devil's Dictionary) packed into 128-token sequences, with word starts."""
    with open(bert_tokenizer_json, encoding="utf-8") as f:
        tokenizer = load_tokenizer(f.read())
    vocab = vocabulary(tokenizer)
    with open(real_data / "corpora" / "small" / "devils_dictionary.txt", encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))
    ids, starts = encode_with_word_starts(tokenizer, docs)
    input_ids, lengths, _, word_starts = pack_documents(
        ids, max_seq_length=128, frame=vocab.frame, pad_id=vocab.pad_id, word_starts=starts
    )
    return vocab, input_ids, lengths, word_starts


def _mask(packed, config):
    vocab, input_ids, lengths, word_starts = packed
    rng_keys = keys.record_keys(np.arange(len(lengths), dtype=np.uint64), seed=11, dupe=0)
    out = mask_batch(
        input_ids,
        lengths,
        rng_keys,
        config=config,
        is_special=vocab.unselectable_lookup(),
        mask_id=vocab.mask_id,
        random_ids=vocab.random_ids,
        word_starts=word_starts,
    )
    return vocab, input_ids, lengths, word_starts, out


def _runs(selected_row):
    """(start, end) of each run of consecutive selected positions."""
    cols = np.nonzero(selected_row)[0]
    if not cols.size:
        return []
    breaks = np.nonzero(np.diff(cols) != 1)[0]
    starts = np.concatenate([[cols[0]], cols[breaks + 1]])
    ends = np.concatenate([cols[breaks], [cols[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def test_spans_are_whole_words_inside_pieces_with_the_exact_budget(packed):
    config = MaskingConfig(masking="span", max_predictions_per_seq=40)
    vocab, input_ids, lengths, word_starts, out = _mask(packed, config)
    n, width = input_ids.shape
    unselectable = vocab.unselectable_lookup()
    candidates = (~unselectable[input_ids] & (np.arange(width)[None, :] < lengths[:, None])).sum(axis=1)
    np.testing.assert_array_equal(out.num_predictions, prediction_counts(lengths, candidates, config))
    selected = np.zeros((n, width), bool)
    rows = np.repeat(np.arange(n), out.num_predictions)
    valid = out.masked_lm_weights > 0
    selected[rows, out.masked_lm_positions[valid]] = True
    assert not np.any(selected & unselectable[input_ids]), "a special or blank token inside a span"
    np.testing.assert_array_equal(out.masked_lm_ids[valid], input_ids[rows, out.masked_lm_positions[valid]])
    runs = cut = 0
    for r in range(n):
        row_runs = _runs(selected[r])
        runs += len(row_runs)
        ends_mid_word = 0
        for start, end in row_runs:
            # A span starts at a word start (or where the piece's text starts in this sequence).
            assert word_starts[r, start] or unselectable[input_ids[r, start - 1]], (r, start)
            # ...and ends at a word's end, except the one cut to reach the budget.
            ends_mid_word += end < lengths[r] and not (word_starts[r, end] or unselectable[input_ids[r, end]])
        assert ends_mid_word <= 1, f"row {r}: {ends_mid_word} spans end inside a word"
        cut += ends_mid_word
    assert runs <= len(out.spans)  # abutting spans make one run; no span is broken in two
    assert out.spans[:, 1].sum() == out.num_predictions.sum()
    assert 0 < cut < n / 2


def test_each_span_gets_one_replacement_decision(packed):
    """Whole runs share one outcome (80/10/10 per span); token masking mixes outcomes within runs."""

    def mixed_share(masking):
        vocab, input_ids, lengths, _, out = _mask(
            packed, MaskingConfig(masking=masking, max_predictions_per_seq=40)
        )
        mixed = total = 0
        outcomes = {"mask": 0, "random": 0, "same": 0}
        for r in range(len(lengths)):
            k = out.num_predictions[r]
            positions, originals = out.masked_lm_positions[r, :k], out.masked_lm_ids[r, :k]
            after = out.input_ids[r, positions]
            kind = np.where(after == vocab.mask_id, 0, np.where(after == originals, 2, 1))
            for key, value in zip(outcomes, np.bincount(kind, minlength=3)):
                outcomes[key] += int(value)
            selected = np.zeros(input_ids.shape[1], bool)
            selected[positions] = True
            by_position = dict(zip(positions.tolist(), kind.tolist()))
            for start, end in _runs(selected):
                if end - start >= 3:
                    total += 1
                    mixed += len({by_position[c] for c in range(start, end)}) > 1
        return mixed / total, {k: v / sum(outcomes.values()) for k, v in outcomes.items()}

    span_mixed, span_shares = mixed_share("span")
    token_mixed, _ = mixed_share("token")
    assert token_mixed > 0.3  # independent decisions per token disagree within most runs
    assert span_mixed < 0.1  # only where two spans abut
    # Per span, not per token: the token shares wander further from 80/10/10 than per-token ones would.
    assert abs(span_shares["mask"] - 0.8) < 0.05 and abs(span_shares["random"] - 0.1) < 0.04


@pytest.fixture(scope="module")
def span_output(tmp_path_factory, real_data, bert_vocab):
    out = tmp_path_factory.mktemp("span") / "out"
    manifest = run_job(
        out,
        f"--input={real_data / 'corpora' / 'small' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--masking=span",
        "--max_seq_length=512",
        "--packing=best_fit",
        "--validation_fraction=0.02",
    )
    return out, manifest


@pytest.mark.slow
def test_a_span_masked_output_verifies_and_its_histogram_has_the_geometric_shape(span_output):
    out, manifest = span_output
    assert manifest["settings"]["masking"] == "span" and "whole_word_masking" not in manifest["settings"]
    spans = manifest["counts"]["spans"]
    words, tokens = np.array(spans["words"]), np.array(spans["tokens"])
    assert len(words) == 10  # 1..max_span_words
    predictions = sum(s["predictions"] for s in manifest["counts"]["splits"].values())
    assert (tokens * np.arange(1, tokens.size + 1)).sum() == predictions
    assert words.sum() == tokens.sum()
    mean_words = (words * np.arange(1, 11)).sum() / words.sum()
    # Spans end early only at a piece's end or at the budget: the realized mean stays near the drawn one.
    assert mean_words == pytest.approx(_geometric_mean(0.2, 10), rel=0.10)
    shares = words / words.sum()
    assert np.all(np.diff(shares) < 0)  # the geometric's shape: each length rarer than the one before
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "verify", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runs of consecutive predictions" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "report", str(out), f"--output={out}.html"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    page = open(f"{out}.html", encoding="utf-8").read()
    assert '<img alt="span lengths"' in page and f"{words.sum():,} spans" in page


def test_verify_catches_scattered_predictions_posing_as_spans(tmp_path, real_data, bert_vocab):
    """A token-masked output whose manifest claims spans: far more runs than spans, so verify fails."""
    import json

    out = tmp_path / "out"
    manifest = run_job(
        out, f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_en.txt'}", f"--tokenizer={bert_vocab}"
    )
    predictions = sum(s["predictions"] for s in manifest["counts"]["splits"].values())
    manifest["settings"]["masking"] = "span"
    manifest["counts"]["spans"] = {"words": [predictions // 4], "tokens": [0, 0, 0, predictions // 4]}
    manifest["counts"]["spans"]["tokens"][0] = predictions - 4 * (predictions // 4)
    (out / "manifest.json").write_text(json.dumps(manifest))
    from mlmprep.pipeline import verify

    problems = "\n".join(verify.verify(str(out)).problems)
    assert "runs of consecutive predictions" in problems and "not contiguous" in problems


@pytest.mark.slow
def test_span_masking_is_the_same_with_one_and_two_workers(tmp_path, real_data, bert_vocab):
    common = [
        f"--input={real_data / 'corpora' / 'small' / 'jargon.txt'}",
        f"--tokenizer={bert_vocab}",
        "--masking=span",
        "--num_shards=2",
    ]
    run_job(tmp_path / "one", *common)
    run_job(tmp_path / "two", *common, "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    for fmt in ("tfrecord", "parquet"):
        files = shard_files(tmp_path / "one", fmt)
        assert files == shard_files(tmp_path / "two", fmt)
        for name in files:
            digest = [hashlib.sha256((tmp_path / d / name).read_bytes()).hexdigest() for d in ("one", "two")]
            assert digest[0] == digest[1], name


def test_words_come_from_continuation_marks_where_no_pre_tokenizer_splits_them(bert_vocab, tmp_path):
    wordpiece = Tokenizer(models.WordPiece.from_file(str(bert_vocab), unk_token="[UNK]"))
    assert word_source(wordpiece) == "continuation"  # the ## pieces say where words go on
    # A SentencePiece model converted with no pre-tokenizer: its normalizer turns spaces into "▁", which
    # its tokens then carry at word starts (the text is one "word" to the tokenizer).
    pieces = [("[UNK]", 0.0), *((f"▁{w}", -1.0) for w in "the quick brown fox jumps over lazy dog".split())]
    marked = Tokenizer(models.Unigram(pieces + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz▁"], 0))
    marked.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    assert word_source(marked) == "prefix"
    marked.pre_tokenizer = pre_tokenizers.Metaspace()
    assert word_source(marked) == "words"
    bare = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, " ": 2, "[MASK]": 3}, merges=[]))
    assert word_source(bare) is None


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *args], capture_output=True, text=True
    )


@pytest.mark.slow
def test_bad_span_flags_are_one_line_each(tmp_path, real_data, bert_vocab):
    corpus = real_data / "corpora" / "tiny" / "fortunes_en.txt"
    common = [f"--input={corpus}", f"--tokenizer={bert_vocab}"]
    # A byte-pair model with nothing to split words by: no pre-tokenizer, no ## or ▁ marks.
    bare = Tokenizer(
        models.BPE(vocab={c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz .,")}, merges=[])
    )
    bare.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    bare.save(str(tmp_path / "bare.json"))
    cases = {
        ("--masking=span", "--span_p=0"): "--span_p must be in (0, 1]",
        ("--masking=span", "--span_p=1.5"): "--span_p must be in (0, 1]",
        ("--masking=span", "--max_span_words=0"): "--max_span_words must be at least 1",
        ("--masking=span", "--whole_word_masking"): "contradicts --masking span",
        ("--masking=none", "--dupe_factor=2"): "writes identical copies",
        ("--masking=chunks",): "--masking must be one of token, word, span, none, got chunks",
    }
    for i, (flags, message) in enumerate(cases.items()):
        done = _cli("run", *common, f"--output={tmp_path / str(i)}", *flags)
        assert done.returncode == 2, (flags, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) <= 2 and message in lines[-1], (flags, done.stderr)  # usage line + the error
        assert "Traceback" not in done.stderr
    done = _cli(
        "run",
        f"--input={corpus}",
        f"--tokenizer={tmp_path / 'bare.json'}",
        f"--output={tmp_path / 'b'}",
        "--masking=span",
    )
    assert done.returncode == 2 and "marks none" in done.stderr.strip().splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr
