"""Mixtures of sources with exact token budgets: how many tokens each source gives a phase, and which.

A phase's target for each source comes from the sources' natural token
counts (``targets``): by weights, or by temperature (share proportional to
weight * natural ** tau, as XLM-R samples languages). A source below its
target is repeated, whole epochs and then a share of the next; a source
above it is cut. The share taken is a prefix of one global order of the
source's documents, by their content keys (a hash of the text): the
documents with the smallest keys, the last one cut to the token, so the
tokens taken equal the target exactly, on any runner and any number of
workers.

No document list is ever held. Documents are grouped by key range
(``range_groups``: group g holds keys in its slice of [0, 2**63)), so the
global order is group after group, each group's documents in key order (as
``SortedGroups`` delivers them). A histogram of tokens per (phase, source,
split, group), summed over the job, says in which group each cut falls and
how many tokens are left to take there (``plan``); the packing step walks
that group's documents in key order and takes them until none are left
(``Selector``). What is held is the histogram: phases x sources x groups.
"""

import dataclasses
import math

import numpy as np

from mlmprep.transforms.tokenize import SPLITS

TRAIN = SPLITS.index("train")
TOKENS, DOCUMENTS = 0, 1


class MixtureError(ValueError):
    """A mixture the sources cannot give (the message names the phase and the source)."""


def range_groups(doc_keys: np.ndarray, groups: int) -> np.ndarray:
    """uint32 group of each 63-bit key: contiguous key ranges, so that group order is key order."""
    high = np.asarray(doc_keys, dtype=np.uint64) >> np.uint64(32)  # < 2**31
    return ((high * np.uint64(groups)) >> np.uint64(31)).astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class PhaseFilter:
    """Which of the build's documents a phase uses: its sources, and its length bounds in tokens."""

    sources: tuple[bool, ...]  # by source index
    min_tokens: int = 0
    max_tokens: int | None = None

    def passes(self, sources: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        ok = np.asarray(self.sources, dtype=bool)[sources] & (lengths >= self.min_tokens)
        return ok if self.max_tokens is None else ok & (lengths <= self.max_tokens)


def histogram(filters, sources, splits, groups, lengths, num_sources: int, num_groups: int) -> np.ndarray:
    """int64 [phases, sources, splits, groups, (tokens, documents)] of documents each phase uses."""
    out = np.zeros((len(filters), num_sources, len(SPLITS), num_groups, 2), dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    for p, f in enumerate(filters):
        ok = f.passes(sources, lengths)
        at = (sources[ok], splits[ok], groups[ok])
        np.add.at(out[p, ..., TOKENS], at, lengths[ok])
        np.add.at(out[p, ..., DOCUMENTS], at, 1)
    return out


@dataclasses.dataclass(frozen=True)
class Mix:
    """A phase's mixture, as the planning step resolved it."""

    tokens: int | None  # the budget; None: every document once
    temperature: float  # 1: the natural mix
    weights: tuple[float, ...] | None  # by source index, the phase's own weights; None: by temperature
    source_weights: tuple[float, ...]  # each source's own weight (0 for a source the phase does not use)
    max_repeats: tuple[float | None, ...]  # by source index
    uses: tuple[bool, ...] | None = None  # the sources the phase uses (None: every one)


def targets(natural: np.ndarray, mix: Mix) -> np.ndarray:
    """int64 target tokens per source: the budget split by shares (largest remainders, so that they sum to
    the budget exactly), or each source's natural tokens where there is no budget."""
    natural = np.asarray(natural, dtype=np.int64)
    if mix.tokens is None:
        return natural.copy()
    if mix.weights is not None:
        shares = np.asarray(mix.weights, dtype=np.float64)
    else:
        base = natural.astype(np.float64)
        shares = np.asarray(mix.source_weights) * np.where(base > 0, base**mix.temperature, 0.0)
    if shares.sum() <= 0:
        return np.zeros_like(natural)
    exact = mix.tokens * shares / shares.sum()
    out = np.floor(exact).astype(np.int64)
    short = mix.tokens - int(out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:short]] += 1  # remainders largest first, ties by index
    return out


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What a phase takes of one source's train split: ``epochs`` whole, then ``remainder`` tokens of the
    next; the remainder's cut lies in group ``cut_group``, ``cut_tokens`` tokens into it (-1: no cut)."""

    natural_tokens: tuple[int, ...]  # by split
    natural_documents: tuple[int, ...]  # by split
    target: int
    epochs: int
    remainder: int
    cut_group: int
    cut_tokens: int

    def copies_below(self, group: int) -> int:
        """Copies of each train document of a group other than the cut's."""
        return self.epochs + (1 if 0 <= group < self.cut_group else 0)


def plan(hist: np.ndarray, mix: Mix, names: list[str], phase: str) -> tuple[SourcePlan | None, ...]:
    """Each source's plan in one phase from its histogram [sources, splits, groups, 2] (None: a source the
    phase does not use). A target the source cannot give within its repeats is a MixtureError."""
    natural = hist[:, TRAIN, :, TOKENS].sum(axis=1)
    goal = targets(natural, mix)
    out = []
    where = f"phase {phase!r}: " if phase else ""
    for s, name in enumerate(names):
        in_phase = mix.weights[s] > 0 if mix.weights is not None else mix.uses is None or mix.uses[s]
        if not in_phase:
            out.append(None)
            continue
        target, have = int(goal[s]), int(natural[s])
        if target and not have:
            raise MixtureError(
                f"{where}source {name!r} has no train documents the phase can use, and its share is "
                f"{target:,} tokens"
            )
        limit = mix.max_repeats[s]
        if limit is not None and have and target > limit * have:
            raise MixtureError(
                f"{where}source {name!r} would be repeated {target / have:.2f} times ({target:,} tokens of "
                f"its {have:,}), above max_repeats {limit:g}: lower the budget or its share, or raise "
                "max_repeats"
            )
        epochs, remainder = divmod(target, have) if have else (0, 0)
        cut_group, cut_tokens = -1, 0
        if remainder:
            cumulative = np.cumsum(hist[s, TRAIN, :, TOKENS])
            cut_group = int(np.searchsorted(cumulative, remainder, side="right"))
            cut_tokens = remainder - (int(cumulative[cut_group - 1]) if cut_group else 0)
        out.append(
            SourcePlan(
                natural_tokens=tuple(int(t) for t in hist[s, :, :, TOKENS].sum(axis=1)),
                natural_documents=tuple(int(d) for d in hist[s, :, :, DOCUMENTS].sum(axis=1)),
                target=target,
                epochs=epochs,
                remainder=remainder,
                cut_group=cut_group,
                cut_tokens=cut_tokens,
            )
        )
    return tuple(out)


class Selector:
    """Copies of each document of one group for one phase, in key order, slice after slice: train documents
    by the phase's plan (the cut group's taken until its tokens are spent, the last one cut), validation
    documents once. ``copies`` int [n] and ``kept`` int [n], the tokens of the last copy (a cut document's
    fewer)."""

    def __init__(self, plans, phase_filter: PhaseFilter, group: int, split: int):
        self._plans, self._filter, self._group, self._split = plans, phase_filter, group, split
        self._left = {s: p.cut_tokens for s, p in enumerate(plans) if p is not None and p.cut_group == group}

    def select(self, sources: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.asarray(lengths, dtype=np.int64)
        used = self._filter.passes(sources, lengths)
        copies = np.zeros(len(lengths), dtype=np.int64)
        kept = lengths.copy()
        if self._split != TRAIN:
            copies[used] = 1
            return copies, kept
        for s, p in enumerate(self._plans):
            if p is None:
                continue
            mine = used & (sources == s)
            copies[mine] = p.copies_below(self._group)
            if s not in self._left or not mine.any():
                continue
            at = np.flatnonzero(mine)
            before = np.cumsum(lengths[at]) - lengths[at]  # tokens of this source's earlier documents here
            left = self._left[s]
            taken = np.clip(left - before, 0, lengths[at])
            copies[at[taken > 0]] += 1
            kept[at] = np.where(taken > 0, taken, kept[at])
            self._left[s] = max(0, left - int(lengths[at].sum()))
        return copies, kept


def achieved_counts(prefix: str, split: int, sources: np.ndarray, tokens: np.ndarray) -> dict[str, int]:
    """Counts of tokens and documents taken, per source: ``{prefix}{split}.{source}.tokens`` and
    ``.documents`` (a copy is a document)."""
    counts = {}
    for s in np.unique(sources).tolist():
        mine = sources == s
        counts[f"{prefix}{SPLITS[split]}.{s}.tokens"] = int(tokens[mine].sum())
        counts[f"{prefix}{SPLITS[split]}.{s}.documents"] = int(mine.sum())
    return counts


def table(plans, names: list[str], counts: dict, prefix: str) -> list[dict]:
    """The manifest's sources table of one phase: per source and split, natural tokens and documents,
    target and achieved tokens, and epochs (achieved over natural)."""
    rows = []
    for s, (name, p) in enumerate(zip(names, plans)):
        if p is None:
            continue
        for split, split_name in enumerate(SPLITS):
            natural = p.natural_tokens[split]
            achieved = counts.get(f"{prefix}{split_name}.{s}.tokens", 0)
            if not natural and not achieved and split != TRAIN:
                continue
            rows.append(
                {
                    "source": name,
                    "split": split_name,
                    "natural_tokens": natural,
                    "natural_documents": p.natural_documents[split],
                    "target_tokens": p.target if split == TRAIN else natural,
                    "achieved_tokens": achieved,
                    "documents": counts.get(f"{prefix}{split_name}.{s}.documents", 0),
                    "epochs": round(achieved / natural, 4) if natural else 0.0,
                }
            )
    return rows


def share_error(row: dict) -> float:
    """|achieved - target| / target of a table row (0 where the target is 0)."""
    return (
        abs(row["achieved_tokens"] - row["target_tokens"]) / row["target_tokens"]
        if row["target_tokens"]
        else 0.0
    )


def within_tolerance(achieved: int, target: int, largest_document: int) -> bool:
    """The rule a source's achieved tokens keep: within max(1% of the target, the document at the cut)."""
    return abs(achieved - target) <= max(math.ceil(0.01 * target), largest_document)
