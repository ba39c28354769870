import pathlib

import numpy as np
import pytest

from mlmprep.transforms import keys
from mlmprep.transforms.mask import MaskingConfig, mask_batch, prediction_counts
from mlmprep.transforms.pack import pack_documents
from mlmprep.transforms.tokenize import encode_batch, load_tokenizer, tokenizer_json, vocabulary


@pytest.fixture(scope="module")
def vocab(bert_vocab):
    return vocabulary(load_tokenizer(tokenizer_json(pathlib.Path(bert_vocab).read_bytes())))


@pytest.fixture(scope="module")
def sequences(vocab, bert_vocab, real_data):
    """Real KJV chapters, tokenized and packed at length 128."""
    text = (real_data / "corpora" / "small" / "kjv.txt").read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()][:300]
    tokenizer = load_tokenizer(tokenizer_json(pathlib.Path(bert_vocab).read_bytes()))
    input_ids, lengths, _, _ = pack_documents(
        encode_batch(tokenizer, docs), max_seq_length=128, frame=vocab.frame, pad_id=0
    )
    return input_ids, lengths


def _mask(vocab, input_ids, lengths, rng_keys, config=None):
    return mask_batch(
        input_ids,
        lengths,
        rng_keys,
        config=config or MaskingConfig(),
        is_special=vocab.special_lookup(),
        mask_id=vocab.mask_id,
        random_ids=vocab.random_ids,
    )


def _keys(n, seed=1):
    return keys.record_keys(np.arange(n, dtype=np.uint64) * 7919, seed=seed, dupe=0)


def test_prediction_count_rule():
    config = MaskingConfig(masked_lm_prob=0.15, max_predictions_per_seq=20)
    lengths = np.array([2, 3, 10, 17, 30, 128, 512])
    candidates = lengths - 2
    # max(1, round(n * p)) rounding half to even, capped at 20 and at the candidates.
    assert prediction_counts(lengths, candidates, config).tolist() == [0, 1, 2, 3, 4, 19, 20]


def test_exact_counts_and_positions(vocab, sequences):
    input_ids, lengths = sequences
    out = _mask(vocab, input_ids, lengths, _keys(len(lengths)))
    expected = np.minimum(20, np.maximum(1, np.rint(lengths * 0.15))).astype(int)
    np.testing.assert_array_equal(out.num_predictions, expected)
    for row in range(len(lengths)):
        k = out.num_predictions[row]
        positions = out.masked_lm_positions[row]
        assert np.all(np.diff(positions[:k]) > 0), "ascending, no repeats"
        assert np.all(positions[k:] == 0) and np.all(out.masked_lm_ids[row, k:] == 0)
        np.testing.assert_array_equal(out.masked_lm_ids[row, :k], input_ids[row, positions[:k]])
        untouched = np.ones(128, bool)
        untouched[positions[:k]] = False
        np.testing.assert_array_equal(out.input_ids[row, untouched], input_ids[row, untouched])
    np.testing.assert_array_equal(out.masked_lm_weights.sum(axis=1), out.num_predictions)


def test_specials_never_selected_and_random_ids_never_special(vocab, sequences):
    input_ids, lengths = sequences
    # Sprinkle [UNK] into the sequences: it is special and must not be predicted.
    input_ids = input_ids.copy()
    input_ids[:, 5] = np.where(lengths > 6, vocab.unk_id, input_ids[:, 5])
    out = _mask(vocab, input_ids, lengths, _keys(len(lengths)), MaskingConfig(random_token_ratio=0.2))
    special = vocab.special_lookup()
    weights = out.masked_lm_weights > 0
    assert not special[out.masked_lm_ids[weights]].any()
    rows = np.repeat(np.arange(len(lengths)), out.num_predictions)
    replaced = out.input_ids[rows, out.masked_lm_positions[weights]]
    random = replaced[(replaced != vocab.mask_id) & (replaced != out.masked_lm_ids[weights])]
    assert random.size > 100
    assert not special[random].any()
    assert set(random.tolist()) <= set(vocab.random_ids.tolist())
    assert not any(vocab.random_ids == 1)  # "[unused0]": a bracketed placeholder


def test_replacement_split_80_10_10(vocab, sequences):
    input_ids, lengths = sequences
    many = np.tile(input_ids, (8, 1))
    out = _mask(vocab, many, np.tile(lengths, 8), _keys(len(many)))
    weights = out.masked_lm_weights > 0
    rows = np.repeat(np.arange(len(many)), out.num_predictions)
    after = out.input_ids[rows, out.masked_lm_positions[weights]]
    before = out.masked_lm_ids[weights]
    total = before.size
    masked = np.mean(after == vocab.mask_id)
    same = np.mean(after == before)
    random = 1 - masked - same
    # Binomial standard error at n > 20k is under 0.003; allow 5 of them.
    tolerance = 5 * np.sqrt(0.1 * 0.9 / total)
    assert total > 20000
    assert abs(masked - 0.8) < tolerance * 1.5
    # A random draw can hit the original token (about 1 in 30k): counted as "same".
    assert abs(same - 0.1) < tolerance
    assert abs(random - 0.1) < tolerance


def test_selection_is_uniform_over_positions(vocab, sequences):
    input_ids, lengths = sequences
    full = lengths == 128
    many = np.tile(input_ids[full], (20, 1))
    out = _mask(vocab, many, np.full(len(many), 128), _keys(len(many)))
    hits = np.bincount(out.masked_lm_positions[out.masked_lm_weights > 0], minlength=128)[1:127]
    expected = out.num_predictions.sum() / 126
    assert np.all(np.abs(hits - expected) < 6 * np.sqrt(expected))


def test_same_key_same_masking_different_key_different(vocab, sequences):
    input_ids, lengths = sequences
    rng = _keys(len(lengths))
    a = _mask(vocab, input_ids, lengths, rng)
    b = _mask(vocab, input_ids[::-1], lengths[::-1], rng[::-1])  # order in the batch is irrelevant
    np.testing.assert_array_equal(a.input_ids, b.input_ids[::-1])
    np.testing.assert_array_equal(a.masked_lm_positions, b.masked_lm_positions[::-1])
    c = _mask(vocab, input_ids, lengths, _keys(len(lengths), seed=2))
    differs = np.any(a.masked_lm_positions != c.masked_lm_positions, axis=1)
    assert differs.mean() > 0.95
    dupes = (
        keys.record_keys(np.zeros(2, np.uint64), seed=1, dupe=0),
        keys.record_keys(np.zeros(2, np.uint64), seed=1, dupe=1),
    )
    assert dupes[0][0] != dupes[1][0]


def test_bernoulli_count_selects_each_token_with_probability_p(vocab, sequences):
    input_ids, lengths = sequences
    config = MaskingConfig(mask_count="bernoulli", max_predictions_per_seq=126)  # the cap never binds
    out = _mask(vocab, input_ids, lengths, _keys(len(lengths)), config)
    candidates = int((lengths - 2).sum())
    rate = out.num_predictions.sum() / candidates
    assert abs(rate - 0.15) < 5 * np.sqrt(0.15 * 0.85 / candidates)
    assert out.num_predictions.std() > 1  # a count that varies per sequence, unlike the exact rule
    capped = _mask(vocab, input_ids, lengths, _keys(len(lengths)), MaskingConfig(mask_count="bernoulli"))
    assert capped.num_predictions.max() <= 20
