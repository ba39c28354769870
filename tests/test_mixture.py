"""Mixtures of sources: shares, exact budgets, the cut in key order, and the build file's mistakes."""

import subprocess
import sys

import numpy as np
import pytest

from mlmprep.pipeline import flags
from mlmprep.pipeline.errors import UsageError
from mlmprep.transforms import mixture

GROUPS = 7


def _mix(tokens, *, temperature=1.0, weights=None, source_weights=(1.0, 1.0, 1.0), max_repeats=(None,) * 3):
    return mixture.Mix(tokens, temperature, weights, tuple(source_weights), tuple(max_repeats))


def test_temperature_shares_follow_natural_tokens_to_the_power_tau():
    natural = np.array([1_000_000, 10_000, 100])
    for tau in (1.0, 0.7, 0.3, 0.0):
        got = mixture.targets(natural, _mix(500_000, temperature=tau))
        assert got.sum() == 500_000  # the budget exactly, by largest remainders
        want = 500_000 * natural**tau / (natural**tau).sum()
        assert np.all(np.abs(got - want) < 1)
    flat = mixture.targets(natural, _mix(300, temperature=0.0))
    assert flat.tolist() == [100, 100, 100]  # tau 0: every source alike


def test_weights_decide_shares_and_a_source_weight_scales_its_temperature_share():
    natural = np.array([900, 90, 9])
    assert mixture.targets(natural, _mix(1000, weights=(1.0, 3.0, 0.0))).tolist() == [250, 750, 0]
    doubled = mixture.targets(natural, _mix(1000, source_weights=(1.0, 2.0, 1.0)))
    assert doubled.tolist() == [900 * 1000 // 1089 + 1, 180 * 1000 // 1089, 9 * 1000 // 1089]
    assert mixture.targets(natural, _mix(None)).tolist() == natural.tolist()  # no budget: every document once


def _corpus(rng, n=3000):
    keys = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    sources = rng.choice(3, size=n, p=[0.7, 0.25, 0.05])
    lengths = rng.integers(1, 400, size=n)
    splits = (rng.random(n) < 0.1).astype(np.int64)
    return keys, sources, lengths, splits


def _take(keys, sources, lengths, splits, plans, phase_filter, slice_docs):
    """Runs every group's documents through a Selector in key order, as the packing step does; returns the
    copies and the last copy's tokens of every document."""
    groups = mixture.range_groups(keys, GROUPS).astype(np.int64)
    copies, kept = np.zeros(len(keys), np.int64), lengths.copy()
    for split in (0, 1):
        for group in range(GROUPS):
            at = np.flatnonzero((groups == group) & (splits == split))
            at = at[np.argsort(keys[at])]
            selector = mixture.Selector(plans, phase_filter, group, split)
            for start in range(0, len(at), slice_docs):
                part = at[start : start + slice_docs]
                copies[part], kept[part] = selector.select(sources[part], lengths[part])
    return copies, kept


@pytest.mark.parametrize("budget", [60_000, 200_000, 1_500_000])
def test_each_source_takes_its_target_exactly_a_prefix_in_key_order(budget):
    rng = np.random.default_rng(budget)
    keys, sources, lengths, splits = _corpus(rng)
    phase_filter = mixture.PhaseFilter(sources=(True, True, True), min_tokens=5)
    groups = mixture.range_groups(keys, GROUPS).astype(np.int64)
    hist = mixture.histogram([phase_filter], sources, splits, groups, lengths, 3, GROUPS)[0]
    plans = mixture.plan(hist, _mix(budget, temperature=0.5), ["a", "b", "c"], "p")
    results = [_take(keys, sources, lengths, splits, plans, phase_filter, n) for n in (1, 97, 100_000)]
    for copies, kept in results[1:]:  # however the group is sliced, the same choice
        assert np.array_equal(copies, results[0][0]) and np.array_equal(kept, results[0][1])
    copies, kept = results[0]
    used = phase_filter.passes(sources, lengths)
    assert not copies[~used].any()
    for s, p in enumerate(plans):
        train = used & (sources == s) & (splits == 0)
        taken = ((copies - 1) * lengths + kept)[train & (copies > 0)].sum()
        assert taken == p.target  # exact: the document at the cut is cut to the token
        assert p.natural_tokens[0] == lengths[train].sum()
        # The partial epoch is the documents with the smallest keys: a prefix of the global order.
        order = np.lexsort((keys[train], groups[train]))
        extra = (copies[train] > p.epochs)[order]
        assert not np.any(extra[1:] & ~extra[:-1])
        assert np.all(copies[train] >= p.epochs) and np.all(copies[train] <= p.epochs + 1)
        validation = used & (sources == s) & (splits == 1)
        assert np.all(copies[validation] == 1) and np.array_equal(kept[validation], lengths[validation])
    assert sum(p.target for p in plans) == budget


def test_a_budget_beyond_max_repeats_or_a_source_with_nothing_names_the_source():
    hist = np.zeros((3, 2, GROUPS, 2), np.int64)
    hist[0, 0, 0] = (10_000, 10)
    hist[1, 0, 3] = (100, 1)
    with pytest.raises(mixture.MixtureError, match="source 'b' would be repeated .* above max_repeats 5"):
        mixture.plan(
            hist, _mix(20_000, weights=(1.0, 1.0, 0.0), max_repeats=(None, 5, None)), ["a", "b", "c"], "p"
        )
    with pytest.raises(mixture.MixtureError, match="phase 'p': source 'c' has no train documents"):
        mixture.plan(hist, _mix(20_000, weights=(1.0, 1.0, 1.0)), ["a", "b", "c"], "p")
    by_temperature = mixture.plan(hist, _mix(20_000, temperature=0.0), ["a", "b", "c"], "p")
    assert by_temperature[2].target == 0  # by temperature a source with nothing has no share
    plans = mixture.plan(hist, _mix(20_000, weights=(1.0, 1.0, 0.0)), ["a", "b", "c"], "p")
    assert plans[2] is None and plans[1].epochs == 100 and plans[1].cut_group == -1


def _build(tmp_path, text: str):
    path = tmp_path / "build.yaml"
    path.write_text(text)
    return ["--config", str(path), "--output", str(tmp_path / "out")]


SOURCES = """tokenizer: tok.json
sources:
  - {name: web, input: [web.txt]}
  - {name: books, input: [books.txt], weight: 2}
"""


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "  - {name: code, input: [c.txt], weight: -1}\n",
            r"sources\[code\].weight must be a non-negative number",
        ),
        ("  - {name: web, input: [c.txt]}\n", "two sources are named 'web'"),
        (
            "phases:\n  - {name: p, tokens: 100, weights: {web: 0, books: 0}}\n",
            r"phases\[p\].weights must give some source a weight above 0",
        ),
        (
            "phases:\n  - {name: p, tokens: 100, weights: {web: -2}}\n",
            r"phases\[p\].weights must not be negative",
        ),
        (
            "phases:\n  - {name: p, tokens: 100, weights: {web: 1}, temperature: 0.3}\n",
            r"phases\[p\].weights and phases\[p\].temperature each decide the mixture: give one",
        ),
        ("phases:\n  - {name: p, tokens: 100, weights: {news: 1}}\n", r"phases\[p\].weights names 'news'"),
        ("phases:\n  - {name: p, temperature: 0.3}\n", r"phases\[p\].tokens is required"),
        ("phases:\n  - {name: p}\n", r"phases\[p\].tokens is required: a mixture by source weights"),
        ("phases:\n  - {name: p, tokens: 10}\n  - {name: p, tokens: 10}\n", "two phases are named 'p'"),
        (
            "phases:\n  - {name: p, tokens: 10, tokenizer: x.json}\n",
            r"phases\[p\]: 'tokenizer' is the build's",
        ),
        ("input: [x.txt]\n", "input is given beside sources"),
        (
            "phases:\n  - {name: a, tokens: 9, sentence_pairs: nsp}\n"
            "  - {name: b, tokens: 9, sentence_pairs: sop, sentence_language: de}\n",
            "sentence_language differs between phases of sentence pairs",
        ),
        ("phases:\n  - {name: p, sources: [web, news]}\n", r"phases\[p\].sources names 'news'"),
        (
            "phases:\n  - {name: p, tokens: 9, sources: [web], weights: {web: 1}}\n",
            r"phases\[p\].weights and phases\[p\].sources each say the phase's sources",
        ),
    ],
)
def test_a_mistake_in_sources_or_phases_is_one_line_naming_the_key(tmp_path, body, message):
    with pytest.raises(UsageError, match=message) as caught:
        flags.parse(_build(tmp_path, SOURCES + body))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--config ")


def test_the_command_line_says_a_mixture_mistake_in_one_line_with_status_2(tmp_path):
    args = _build(tmp_path, SOURCES + "phases:\n  - {name: p, temperature: 0.3}\n")
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *args], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "phases[p].tokens is required" in done.stderr


def test_a_phase_is_the_top_with_its_own_settings_laid_over(tmp_path):
    command = flags.parse(
        _build(
            tmp_path,
            SOURCES + "max_seq_length: 256\ntemperature: 0.7\ntokens: 1000\nphases:\n"
            "  - {name: one, masked_lm_prob: 0.3}\n"
            "  - {name: two, max_seq_length: 1024, weights: {web: 1}, min_doc_tokens: 64,\n"
            "     max_doc_tokens: 900}\n",
        )
    )
    one, two = command.build.phases
    assert one.settings.packing.max_seq_length == 256 and one.settings.masking.masked_lm_prob == 0.3
    assert one.settings.mixture.temperature == 0.7 and one.settings.output.output.endswith("/out/one")
    assert two.settings.mixture.weights == {"web": 1.0} and two.settings.mixture.temperature is None
    assert two.settings.input.min_doc_tokens == 64 and two.settings.mixture.max_doc_tokens == 900
    assert command.settings.input.input == ("web.txt", "books.txt")  # the build reads every source
    assert one.uses("books") and not two.uses("books")
    widened = flags.parse(_build(tmp_path, SOURCES + "phases:\n  - {name: a, tokens: 9, sources: [web]}\n"))
    assert [widened.build.phases[0].uses(s) for s in ("web", "books")] == [True, False]
