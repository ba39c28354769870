"""Masked-LM selection and replacement, as the original BERT does it.

``mask_batch`` is pure numpy over a batch, so the trainer can call it for
dynamic (per-epoch) masking with the same rules. Its randomness comes from
``keys.uniform`` on each sequence's key: a given (seed, sequence, copy) is
masked the same way on any runner, worker or retry.

Selection works on units: single tokens, or with whole-word masking the
pieces of one word. Units are visited in a random order and taken while they
fit the sequence's budget of predictions, skipping a word that would
overflow it (BERT's ``create_masked_lm_predictions``); each unit gets one
80/10/10 decision.

Span masking (SpanBERT, Joshi et al. 2020) visits words in a random order
too, and from each one not yet taken masks a span of whole words whose
length is drawn from a geometric distribution truncated to
``1..max_span_words``. A span passes over words an earlier span took (they
are masked already, so the masked run stays contiguous), stops at the end of
its piece (a special token or a blank one), and the span that reaches the
budget is cut there, so the count of predictions is exact. Each span gets
one 80/10/10 decision.
"""

import dataclasses
import math

import numpy as np

from mlmprep.transforms import keys
from mlmprep.transforms.records import MaskedBatch

_SELECT, _DECIDE, _REPLACE = 0, 1, 2  # independent random streams per sequence
_SPAN = 4  # span lengths (stream 3 is sentence pairs')
MASK_COUNTS = ("exact", "bernoulli")
# Span lengths in words: SpanBERT's truncated geometric, or ALBERT's n-grams with p(n) proportional to 1/n.
SPAN_LENGTHS = ("geometric", "harmonic")
# token: BERT's; word: whole words; span: SpanBERT's spans of whole words; none: no masks written (the
# trainer masks each batch itself).
MASKINGS = ("token", "word", "span", "none")
MASK_POSITIONS = 1 << 18  # token positions masked at once (2,048 rows at 128 tokens, 32 at 8,192)


def mask_rows(max_seq_length: int) -> int:
    """Rows masked at once: masking holds several arrays per position, so their size is bounded in
    positions, whatever the sequence length."""
    return max(16, MASK_POSITIONS // max_seq_length)


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1
    masking: str = "token"  # MASKINGS
    mask_count: str = "exact"  # or "bernoulli": each unit selected with probability p
    span_p: float = 0.2  # span masking: the geometric distribution's p (SpanBERT's 0.2)
    max_span_words: int = 10  # span masking: the longest span, in words
    span_lengths: str = "geometric"  # SPAN_LENGTHS

    @property
    def by_words(self) -> bool:
        """Whether selection needs word starts: whole words and spans are made of them."""
        return self.masking in ("word", "span")


def span_length_probabilities(
    span_p: float, max_span_words: int, span_lengths: str = "geometric"
) -> np.ndarray:
    """P(a span has k words), k = 1..max_span_words: Geometric(span_p) truncated and renormalised
    (SpanBERT's mean of 3.8 words at p 0.2 and 10 words), or ``harmonic``, proportional to 1/k (ALBERT's
    n-grams: 6/11, 3/11, 2/11 up to 3 words)."""
    k = np.arange(max_span_words)
    weights = 1 / (k + 1) if span_lengths == "harmonic" else span_p * (1 - span_p) ** k
    return weights / weights.sum()


def span_lengths(rng_keys, columns, config: MaskingConfig) -> np.ndarray:
    """The span length, in words, drawn for a span starting at ``columns`` of the sequences ``rng_keys``."""
    cdf = np.cumsum(span_length_probabilities(config.span_p, config.max_span_words, config.span_lengths))
    drawn = keys.to_unit(keys.uniform_bits(rng_keys, stream=_SPAN, columns=columns))
    return np.minimum(np.searchsorted(cdf, drawn, side="right"), config.max_span_words - 1) + 1


def default_predictions(max_seq_length: int, masked_lm_prob: float) -> int:
    """The cap that keeps the asked rate at any length: BERT's 20 at 128 tokens, ceil(L * p) beyond."""
    return min(max(20, math.ceil(max_seq_length * masked_lm_prob)), max_seq_length - 2)


def prediction_counts(lengths, num_candidates, config: MaskingConfig) -> np.ndarray:
    """``min(max_predictions, max(1, round(n * p)))``, n counting [CLS] and [SEP].

    ``np.rint`` rounds half to even, as Python 3's ``round`` in BERT's script.
    """
    wanted = np.maximum(1, np.rint(lengths * config.masked_lm_prob)).astype(np.int64)
    return np.minimum(np.minimum(wanted, config.max_predictions_per_seq), num_candidates)


_UNUSABLE = np.uint64(1 << keys.UNIFORM_BITS)  # above every score: never taken


def _select_tokens(candidate, score, budget, cap: int) -> np.ndarray:
    """The ``budget`` candidates of lowest score in each row (``budget`` at most ``cap``).

    The ``cap`` lowest scores of a row are found by a partition, not a sort
    of the whole row; the row's ``budget``-th lowest is then its threshold.
    """
    n, width = candidate.shape
    budget = np.minimum(budget, candidate.sum(axis=1))
    ranked = np.where(candidate, score, _UNUSABLE)
    lowest = (
        np.sort(np.partition(ranked, cap - 1, axis=1)[:, :cap], axis=1) if cap < width else np.sort(ranked)
    )
    threshold = np.where(budget > 0, lowest[np.arange(n), np.maximum(budget - 1, 0)], 0)
    selected = candidate & (ranked <= threshold[:, None]) & (budget > 0)[:, None]
    tied = selected.sum(axis=1) != budget  # two equal 53-bit scores at the threshold: practically never
    if tied.any():
        order = np.argsort(ranked[tied], axis=1, kind="stable")
        taken = np.arange(width)[None, :] < budget[tied][:, None]
        exact = np.zeros((int(tied.sum()), width), dtype=bool)
        np.put_along_axis(exact, order, taken, axis=1)
        selected[tied] = exact
    return selected


def _word_units(candidate, word_starts) -> tuple[np.ndarray, np.ndarray]:
    """Unit index of each position (-1 for non-candidates) and each unit's first position.

    A unit starts at a word start, or at a candidate that follows a
    non-candidate (a word cut by a sequence boundary keeps its pieces together).
    """
    n, width = candidate.shape
    previous = np.zeros_like(candidate)
    previous[:, 1:] = candidate[:, :-1]
    starts = candidate & (word_starts | ~previous)
    unit = np.where(candidate, np.cumsum(starts, axis=1) - 1, -1)
    first = np.full((n, width), width - 1, dtype=np.int64)
    rows, cols = np.nonzero(starts)
    first[rows, unit[rows, cols]] = cols
    return unit, first


def _select_words(unit, first, score, eligible, budget) -> np.ndarray:
    """Words in score order, each taken whole if it fits the budget, else skipped (as BERT)."""
    n, width = unit.shape
    num_units = unit.max(axis=1, initial=-1) + 1
    has_unit = np.arange(width)[None, :] < num_units[:, None]
    size = np.zeros((n, width), dtype=np.int64)
    rows, cols = np.nonzero(unit >= 0)
    np.add.at(size, (rows, unit[rows, cols]), 1)
    usable = has_unit & np.take_along_axis(eligible, first, axis=1)
    order = np.argsort(
        np.where(usable, np.take_along_axis(score, first, axis=1), _UNUSABLE), axis=1, kind="stable"
    )
    ordered_size = np.where(np.take_along_axis(usable, order, axis=1), np.take_along_axis(size, order, 1), 0)
    total = np.zeros(n, dtype=np.int64)
    taken_ordered = np.zeros((n, width), dtype=bool)
    for j in range(int(num_units.max(initial=0))):  # a loop over word ranks, vectorized over rows
        fits = (ordered_size[:, j] > 0) & (total + ordered_size[:, j] <= budget)
        taken_ordered[:, j] = fits
        total += np.where(fits, ordered_size[:, j], 0)
    taken = np.zeros((n, width), dtype=bool)
    np.put_along_axis(taken, order, taken_ordered, axis=1)
    return np.take_along_axis(taken, np.maximum(unit, 0), axis=1) & (unit >= 0)


def _select_spans(unit, first, candidate, score, budget, rng_keys, config: MaskingConfig):
    """Spans of whole words from start words in score order, until each row's budget is reached exactly.

    Returns (selected [N, L], the column each selected position's span starts at [N, L], and each
    span's words and tokens [S, 2]).
    """
    n, width = unit.shape
    num_units = unit.max(axis=1, initial=-1) + 1
    has_unit = np.arange(width)[None, :] < num_units[:, None]
    r, c = np.nonzero(unit >= 0)
    size = np.bincount(r * width + unit[r, c], minlength=n * width).reshape(n, width)  # tokens per unit
    # A span stays inside its run of candidates: a piece's body between specials or blank tokens.
    before = np.take_along_axis(candidate, np.maximum(first - 1, 0), axis=1) & (first > 0)
    run = np.cumsum(~before, axis=1)
    order = np.argsort(
        np.where(has_unit, np.take_along_axis(score, first, axis=1), _UNUSABLE), axis=1, kind="stable"
    )
    taken = np.zeros((n, width), dtype=np.int64)  # tokens taken of each unit (all of it, or a cut)
    span_start = np.zeros((n, width), dtype=np.int64)  # per unit: the column its span starts at
    total = np.zeros(n, dtype=np.int64)
    spans = []
    for j in range(int(num_units.max(initial=0))):  # a loop over start ranks, over the rows still short
        rows = np.nonzero((total < budget) & (j < num_units))[0]
        if not rows.size:
            if (total >= budget).all():
                break
            continue
        start = order[rows, j]
        free = taken[rows, start] == 0
        rows, start = rows[free], start[free]
        if not rows.size:
            continue
        length = span_lengths(rng_keys[rows], first[rows, start], config)
        words, tokens = np.zeros(rows.size, np.int64), np.zeros(rows.size, np.int64)
        live, current, span_run, start_col = np.arange(rows.size), start, run[rows, start], first[rows, start]
        while (
            live.size
        ):  # one word a step; a word an earlier span took is passed over, as SpanBERT's spans do
            r = rows[live]
            free = taken[r, current] == 0
            take = np.where(free, np.minimum(size[r, current], budget[r] - total[r]), 0)
            taken[r, current] += take
            span_start[r[free], current[free]] = start_col[live[free]]
            total[r] += take
            words[live] += free
            tokens[live] += take
            # The span that reaches the budget ends there; the others at their length or their run's end.
            following = current + 1
            go_on = (words[live] < length[live]) & (total[r] < budget[r]) & (following < num_units[r])
            go_on[go_on] = run[r[go_on], following[go_on]] == span_run[live[go_on]]
            live, current = live[go_on], following[go_on]
        started = tokens > 0
        spans.append(np.stack([words[started], tokens[started]], axis=1))
    safe = np.maximum(unit, 0)
    offset = np.arange(width)[None, :] - np.take_along_axis(first, safe, axis=1)
    selected = (unit >= 0) & (offset < np.take_along_axis(taken, safe, axis=1))
    starts = np.take_along_axis(span_start, safe, axis=1)
    return selected, starts, np.concatenate(spans) if spans else np.zeros((0, 2), np.int64)


def mask_batch(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    rng_keys: np.ndarray,
    *,
    config: MaskingConfig,
    is_special: np.ndarray,
    mask_id: int,
    random_ids: np.ndarray,
    word_starts: np.ndarray | None = None,
) -> MaskedBatch:
    """Selects and replaces tokens of each sequence.

    Args:
      input_ids: int [N, L] unmasked sequences.
      lengths: int [N] real tokens per sequence.
      rng_keys: uint64 [N], one per sequence and copy (``keys.record_keys``).
      config: the probabilities, the count rule and the prediction cap.
      is_special: bool [vocab_size], True for ids never selected.
      mask_id: the [MASK] id.
      random_ids: ids a "random token" replacement draws from, uniformly.
      word_starts: bool [N, L], True where a word begins; required for
        whole-word and span masking.
    """
    n, width = input_ids.shape
    cap = config.max_predictions_per_seq
    candidate = ~is_special[input_ids] & (np.arange(width)[None, :] < lengths[:, None])
    if config.masking not in MASKINGS[:3]:
        raise ValueError(f"masking {config.masking!r} selects nothing to mask")
    if config.by_words and word_starts is None:
        raise ValueError(f"{config.masking} masking needs word_starts")
    rng_keys = np.asarray(rng_keys, dtype=np.uint64)
    # Scores as 53-bit integers: they rank as the floats keys.uniform gives. Drawn at the candidates
    # only (the rest are never ranked): long sequences' padding costs no hashing.
    score = np.full((n, width), _UNUSABLE, dtype=np.uint64)
    rows, cols = np.nonzero(candidate)
    score[rows, cols] = keys.uniform_bits(rng_keys[rows], stream=_SELECT, columns=cols)
    if config.mask_count == "bernoulli":
        eligible = score < np.float64(config.masked_lm_prob) * (1 << keys.UNIFORM_BITS)
        budget = np.full(n, cap)
        if config.masking == "span":  # a count drawn token by token, which spans then fill
            budget = np.minimum(cap, (candidate & eligible).sum(axis=1))
    else:
        eligible = np.ones((n, width), dtype=bool)
        budget = prediction_counts(lengths, candidate.sum(axis=1), config)
    spans = None
    if config.masking == "span":
        unit, first = _word_units(candidate, word_starts)
        selected, span_starts, spans = _select_spans(unit, first, candidate, score, budget, rng_keys, config)
    elif config.masking == "word":
        unit, first = _word_units(candidate, word_starts)
        selected = _select_words(unit, first, score, eligible, budget)
    else:
        selected = _select_tokens(candidate & eligible, score, budget, cap)

    # The selected positions, ascending (row-major order), and where each goes among its row's predictions.
    rows, cols = np.nonzero(selected)
    count = np.bincount(rows, minlength=n)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
    row_keys = rng_keys[rows]
    # One 80/10/10 decision per unit (a span), drawn at its first position: only where something was
    # selected.
    if config.masking == "span":
        decide_at = span_starts[rows, cols]
    elif config.masking == "word":
        decide_at = first[rows, unit[rows, cols]]
    else:
        decide_at = cols
    decide = keys.to_unit(keys.uniform_bits(row_keys, stream=_DECIDE, columns=decide_at))
    pick = keys.to_unit(keys.uniform_bits(row_keys, stream=_REPLACE, columns=cols))
    random_token = random_ids[np.minimum((pick * random_ids.size).astype(np.int64), random_ids.size - 1)]
    original = input_ids[rows, cols]
    replacement = np.where(
        decide < config.mask_token_ratio,
        mask_id,
        np.where(decide < config.mask_token_ratio + config.random_token_ratio, random_token, original),
    )
    masked = input_ids.astype(np.int32, copy=True)
    masked[rows, cols] = replacement
    positions = np.zeros((n, cap), dtype=np.int32)
    originals = np.zeros((n, cap), dtype=np.int32)
    positions[rows, slot] = cols
    originals[rows, slot] = original
    return MaskedBatch(
        input_ids=masked,
        lengths=np.asarray(lengths, dtype=np.int32),
        masked_lm_positions=positions,
        masked_lm_ids=originals,
        num_predictions=count.astype(np.int32),
        spans=spans,
    )
