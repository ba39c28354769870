"""Whole-word masking with a tokenizer trained by mlmprep's own train-tokenizer."""

import subprocess
import sys

import numpy as np
import pytest

from mlmprep.transforms import keys
from mlmprep.transforms.mask import MaskingConfig, mask_batch
from mlmprep.transforms.pack import pack_documents
from mlmprep.transforms.text_input import iter_documents
from mlmprep.transforms.tokenize import encode_with_word_starts, load_tokenizer, vocabulary

from conftest import run_job

# Every test here runs the job or trains a model: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    """A 2,000-token WordPiece tokenizer trained on tiny/ through the CLI."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "train-tokenizer",
            f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}",
            f"--output={path}",
            "--vocab_size=2000",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def packed(trained, real_data):
    tokenizer = load_tokenizer(trained.read_text())
    vocab = vocabulary(tokenizer)
    with open(real_data / "corpora" / "tiny" / "devils_dictionary.txt", encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))
    ids, starts = encode_with_word_starts(tokenizer, docs)
    input_ids, lengths, _, word_starts = pack_documents(
        ids,
        max_seq_length=64,
        frame=vocab.frame,
        pad_id=vocab.pad_id,
        word_starts=starts,
    )
    return vocab, input_ids, lengths, word_starts


def _words(word_starts, lengths):
    """Per row, the (start, end) column spans of words, [CLS]/[SEP] excluded."""
    out = []
    for row, n in zip(word_starts, lengths):
        cuts = [c for c in range(1, n - 1) if row[c]] + [n - 1]
        if not row[1]:
            cuts = [1] + cuts
        out.append(list(zip(cuts[:-1], cuts[1:])))
    return out


@pytest.mark.parametrize("mask_count", ["exact", "bernoulli"])
def test_pieces_of_a_word_selected_together_with_one_decision(packed, mask_count):
    vocab, input_ids, lengths, word_starts = packed
    assert (~word_starts[:, 1:] & (input_ids[:, 1:] > 4)).sum() > 100, "the corpus has multi-piece words"
    many = np.tile(input_ids, (4, 1))
    config = MaskingConfig(max_predictions_per_seq=10, masking="word", mask_count=mask_count)
    out = mask_batch(
        many,
        np.tile(lengths, 4),
        keys.record_keys(np.arange(len(many), dtype=np.uint64), seed=3, dupe=0),
        config=config,
        is_special=vocab.special_lookup(),
        mask_id=vocab.mask_id,
        random_ids=vocab.random_ids,
        word_starts=np.tile(word_starts, (4, 1)),
    )
    multi_piece_selected = decisions = 0
    for row, spans in enumerate(_words(np.tile(word_starts, (4, 1)), np.tile(lengths, 4))):
        k = out.num_predictions[row]
        selected = set(out.masked_lm_positions[row, :k].tolist())
        assert k <= 10
        for start, end in spans:
            chosen = [c in selected for c in range(start, end)]
            assert all(chosen) or not any(chosen), "part of a word was selected"
            if all(chosen):
                after = out.input_ids[row, start:end]
                is_mask = after == vocab.mask_id
                assert is_mask.all() or not is_mask.any(), "one [MASK] decision per word"
                decisions += 1
                multi_piece_selected += end - start > 1
    assert multi_piece_selected > 50 and decisions > 500


def test_budget_never_splits_a_word(packed):
    vocab, input_ids, lengths, word_starts = packed
    config = MaskingConfig(max_predictions_per_seq=3, masking="word")
    out = mask_batch(
        input_ids,
        lengths,
        keys.record_keys(np.arange(len(lengths), dtype=np.uint64), seed=5, dupe=0),
        config=config,
        is_special=vocab.special_lookup(),
        mask_id=vocab.mask_id,
        random_ids=vocab.random_ids,
        word_starts=word_starts,
    )
    assert out.num_predictions.max() <= 3
    # Most rows still fill the budget: words that overflow are skipped, not cut.
    assert np.mean(out.num_predictions == 3) > 0.8


def test_whole_word_masking_job_verifies(tmp_path, trained, real_data):
    out = tmp_path / "out"
    manifest = run_job(
        out,
        f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_en.txt'}",
        f"--tokenizer={trained}",
        "--whole_word_masking",
        "--packing=concat",
        num_shards=2,
    )
    assert manifest["settings"]["masking"] == "word"
    assert manifest["tokenizer"]["vocab_size"] == 2000
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "verify", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
