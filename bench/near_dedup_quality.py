"""How well ``transforms/near_dedup.py`` finds near-duplicates: its pairs against the exact Jaccard of the
documents' shingle sets, and against an independent MinHash LSH (datasketch's ``MinHashLSH``).

  python bench/near_dedup_quality.py [--planted linux_docs_en] [--docs 3000] [--copies 1000]
                                     [--natural fortunes_en linux_docs_en] [--seed 0]

Documents are a corpus's blank-line separated ones, exact repeats dropped
(the job's exact deduplication removes them before near-duplicates are
looked for). ``--planted``: a random ``--docs`` of them and ``--copies``
edited copies of some (those of 20 words or more), each copy one edit of a
known kind: whitespace-separated words inserted, deleted or replaced at a
rate of 1% to 30% (new words drawn from the corpus), or 40 words of another
document appended. ``--natural``: each corpus as it is, with the
near-duplicates it holds.

On each, with the job's defaults (5-word shingles, 112 hashes in 14 bands of
8 rows, threshold 0.75), both methods see the same shingles: the uint64
hashes of ``word_hashes`` and ``shingle_hashes``, given to datasketch as 8
little-endian bytes each. Ours are the candidate pairs (documents sharing a
band key, as ``confirmed_pairs`` compares them: a group of more than
``ALL_PAIRS`` against its first ones only) and the confirmed ones (b-bit
estimate >= threshold). Datasketch's are the pairs each document's query
returns; it confirms nothing, so a row also shows them filtered by its own
full-signature estimate. Exact Jaccard is computed for the pairs either
method reports, the planted ones and those in one of our clusters, not for
all pairs: "found" pairs of J >= 0.85 are those of the candidates of either
method and the planted ones.

Prints, per corpus: recall over pairs of exact J >= threshold + 0.1, the
share of reported pairs of exact J < threshold - 0.1, the same after
connected components (pairs in one of our clusters), the agreement of the
two candidate sets, per edit kind and per exact-J bin the share of planted
pairs each method finds (beside the banding's 1 - (1 - J^8)^14), and times.
"""

import argparse
import dataclasses
import time

import corpora  # this folder is on the path of a script run from it
import numpy as np

from mlmprep.transforms import near_dedup
from mlmprep.transforms.near_dedup import NearDedupConfig
from mlmprep.transforms.text_input import iter_documents

FILES = {
    "linux_docs_en": "bench/linux_docs_en.txt",
    "fortunes_en": "small/fortunes_en.txt",
    "foldoc": "bench/foldoc.txt",
    "jargon": "small/jargon.txt",
}
RATES = (0.01, 0.03, 0.05, 0.1, 0.2, 0.3)
EDITS = [(kind, rate) for kind in ("insert", "delete", "replace") for rate in RATES] + [("append", 0.0)]
APPEND_WORDS = 40  # the appended paragraph: this many words of another document
MIN_WORDS = 20  # an edited document has at least this many words, so 1% is an edit
MARGIN = 0.1  # "true" pairs: exact J >= threshold + MARGIN; "wrong" ones: exact J < threshold - MARGIN
BINS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)


def documents(name: str) -> list[str]:
    """The corpus's distinct documents: the job's exact deduplication runs before near-duplicates."""
    with open(corpora.CORPORA / FILES[name], encoding="utf-8") as f:
        return list(dict.fromkeys(iter_documents(f, "text")))


def word_counts(texts: list[str], batch: int = 256) -> np.ndarray:
    """Each text's words as the job splits them (ASCII art has none)."""
    parts = (near_dedup.word_hashes(texts[lo : lo + batch])[1] for lo in range(0, len(texts), batch))
    return np.concatenate([np.diff(bounds) for bounds in parts])


def edit(words: list[str], kind: str, rate: float, vocabulary: np.ndarray, rng) -> list[str]:
    """``words`` with max(1, rate * len) of them inserted, deleted or replaced at random places."""
    count = max(1, round(rate * len(words)))
    places = set(rng.choice(len(words), size=min(count, len(words)), replace=False).tolist())
    drawn = iter(rng.choice(vocabulary, size=count).tolist())
    out = []
    for i, word in enumerate(words):
        if i in places and kind != "delete":
            out.append(next(drawn))
        if not (i in places and kind in ("delete", "replace")):
            out.append(word)
    return out


def plant(docs: list[str], count: int, copies: int, rng) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(``count`` documents and ``copies`` edited copies of some of them, each copy's (original, copy)
    index pair, each copy's index in EDITS). Edits cycle through EDITS, so each gets its share."""
    picked = rng.choice(len(docs), size=min(count, len(docs)), replace=False)
    texts = [docs[i] for i in picked]
    split = [t.split() for t in texts]
    vocabulary = np.array([w for words in split[:500] for w in words])
    long_enough = np.flatnonzero((word_counts(texts) >= MIN_WORDS) & [len(w) > 0 for w in split])
    originals = rng.choice(long_enough, size=min(copies, len(long_enough)), replace=False)
    pairs, kinds = [], []
    for n, i in enumerate(originals.tolist()):
        kind, rate = EDITS[n % len(EDITS)]
        if kind == "append":
            other = split[int(rng.choice(long_enough))]
            copy = texts[i] + "\n" + " ".join(other[:APPEND_WORDS])
        else:
            copy = " ".join(edit(split[i], kind, rate, vocabulary, rng))
        pairs.append((i, len(texts)))
        kinds.append(n % len(EDITS))
        texts.append(copy)
    return texts, np.array(pairs, np.int64).reshape(-1, 2), np.array(kinds, np.int64)


def shingle_sets(texts: list[str], config: NearDedupConfig, batch: int = 256) -> list[np.ndarray]:
    """Each text's shingles as the job hashes them: a sorted array of distinct uint64."""
    out = []
    for lo in range(0, len(texts), batch):
        words, bounds = near_dedup.word_hashes(texts[lo : lo + batch])
        shingles, first = near_dedup.shingle_hashes(words, bounds, config.shingle)
        out += [np.unique(shingles[a:b]) for a, b in zip(first[:-1], first[1:])]
    return out


def exact_jaccard(sets: list[np.ndarray], pairs: np.ndarray) -> np.ndarray:
    out = np.empty(len(pairs))
    for n, (a, b) in enumerate(pairs.tolist()):
        both = len(np.intersect1d(sets[a], sets[b], assume_unique=True))
        union = len(sets[a]) + len(sets[b]) - both
        out[n] = both / union if union else 0.0
    return out


def codes(pairs: np.ndarray, n: int) -> np.ndarray:
    """Pairs (i, j) as sorted distinct int64 codes min * n + max, for set operations."""
    if len(pairs) == 0:
        return np.zeros(0, np.int64)
    return np.unique(pairs.min(axis=1) * n + pairs.max(axis=1))


@dataclasses.dataclass
class Found:
    candidates: np.ndarray  # pair codes
    confirmed: np.ndarray  # pair codes
    seconds: dict


def ours(texts: list[str], config: NearDedupConfig) -> tuple[Found, np.ndarray, np.ndarray]:
    """(our candidate and confirmed pairs, with times; the signatures; which documents have shingles)."""
    n, seconds = len(texts), {}
    start = time.perf_counter()
    sigs, has = near_dedup.signatures(texts, config)
    seconds["signatures"] = time.perf_counter() - start
    start = time.perf_counter()
    entries = near_dedup.entries(np.arange(n, dtype=np.uint64), sigs, has, config)
    seconds["band keys"] = time.perf_counter() - start
    start = time.perf_counter()
    confirmed, _ = near_dedup.confirmed_pairs(entries, config)
    seconds["confirm"] = time.perf_counter() - start
    candidates, _ = near_dedup.confirmed_pairs(entries, dataclasses.replace(config, threshold=0.0))
    as_pairs = [np.stack([p["a"], p["b"]], axis=1).astype(np.int64) for p in (candidates, confirmed)]
    return Found(codes(as_pairs[0], n), codes(as_pairs[1], n), seconds), sigs, has


def datasketch(sets: list[np.ndarray], has: np.ndarray, config: NearDedupConfig) -> Found:
    """datasketch's candidate pairs, and those its own (full-signature) estimate confirms, with times."""
    from datasketch import MinHash, MinHashLSH

    n, seconds, docs = len(sets), {}, np.flatnonzero(has).tolist()
    start = time.perf_counter()
    values = [sets[i].astype("<u8").tobytes() for i in docs]
    hashes = MinHash.bulk(
        ([v[k : k + 8] for k in range(0, len(v), 8)] for v in values), num_perm=config.hashes
    )
    seconds["MinHash"] = time.perf_counter() - start
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.hashes, params=(config.bands, config.rows))
    with lsh.insertion_session() as session:
        for i, m in zip(docs, hashes):
            session.insert(i, m)
    seconds["insert"] = time.perf_counter() - start
    start = time.perf_counter()
    pairs = [(i, j) for i, m in zip(docs, hashes) for j in lsh.query(m) if j > i]
    seconds["query"] = time.perf_counter() - start
    pairs = np.array(pairs, np.int64).reshape(-1, 2)
    by_doc = dict(zip(docs, hashes))
    confirmed = [by_doc[i].jaccard(by_doc[j]) >= config.threshold for i, j in pairs.tolist()]
    return Found(codes(pairs, n), codes(pairs[np.array(confirmed, bool)], n), seconds)


def components(pairs: np.ndarray, n: int) -> np.ndarray:
    """Each document's cluster (its least member) under ``pairs``, by the job's large/small-star rounds."""
    root = np.arange(n, dtype=np.uint64)
    if len(pairs) == 0:
        return root
    edges = np.empty(len(pairs), near_dedup.EDGE)
    edges["a"], edges["b"] = pairs[:, 0], pairs[:, 1]
    edges, moved = near_dedup.both_ways(edges), 1
    while moved:
        edges, large = near_dedup.large_star(edges)
        edges, small = near_dedup.small_star(edges)
        edges, moved = near_dedup.both_ways(edges), large + small
    down = edges[edges["a"] > edges["b"]]
    root[down["a"].astype(np.int64)] = down["b"]
    return root


def cluster_pairs(root: np.ndarray, limit: int = 200_000, seed: int = 0) -> np.ndarray:
    """Every pair of documents in one cluster, as codes (a sample of ``limit`` of them where more)."""
    n, order = len(root), np.argsort(root, kind="stable")
    starts = np.flatnonzero(np.concatenate([[True], root[order][1:] != root[order][:-1]]))
    out = []
    for members in np.split(order, starts[1:]):
        if len(members) > 1:
            i, j = np.triu_indices(len(members), 1)
            out.append(codes(np.stack([members[i], members[j]], axis=1), n))
    found = np.concatenate(out) if out else np.zeros(0, np.int64)
    if len(found) > limit:
        found = np.sort(np.random.default_rng(seed).choice(found, limit, replace=False))
    return found


def rate(found: np.ndarray, among: np.ndarray) -> str:
    return f"{np.isin(among, found).mean():.4f}" if len(among) else "-"


def share(found: np.ndarray, wrong: np.ndarray) -> str:
    return f"{np.isin(found, wrong).mean():.4f}" if len(found) else "-"


def _pair_array(found: np.ndarray, n: int) -> np.ndarray:
    return np.stack([found // n, found % n], axis=1)


def report(name: str, texts: list[str], planted: np.ndarray, kinds: np.ndarray, config: NearDedupConfig):
    n, start = len(texts), time.perf_counter()
    sets = shingle_sets(texts, config)
    set_seconds = time.perf_counter() - start
    mine, sigs, has = ours(texts, config)
    theirs = datasketch(sets, has, config)
    clustered = cluster_pairs(components(_pair_array(mine.confirmed, n), n))
    planted_codes = planted.min(axis=1) * n + planted.max(axis=1)
    reported = np.union1d(np.union1d(mine.candidates, theirs.candidates), planted_codes)
    pairs = np.union1d(reported, clustered)
    start = time.perf_counter()
    jaccard = exact_jaccard(sets, _pair_array(pairs, n))
    exact_seconds = time.perf_counter() - start
    high, low = config.threshold + MARGIN, config.threshold - MARGIN
    true_found = np.intersect1d(pairs[jaccard >= high], reported)
    wrong = pairs[jaccard < low]
    true_planted = np.intersect1d(planted_codes, true_found)

    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"\n== {name}: {n:,} documents ({megabytes:.1f} MB), {sum(map(len, sets)):,} distinct shingles")
    print(
        f"   exact J of {len(pairs):,} pairs: the candidates of either method, the {len(planted):,} "
        "planted ones, those in one of our clusters"
    )
    head = ("", "pairs", f"J>={high:.2f} planted", f"J>={high:.2f} found", f"J<{low:.2f} share")
    print("   {:33s} {:>8s} {:>17s} {:>15s} {:>13s}".format(*head))
    print(
        "   {:33s} {:>8s} {:>17,d} {:>15,d}".format(
            "(pairs of that exact J)", "", len(true_planted), len(true_found)
        )
    )
    rows = [
        ("ours: candidates", mine.candidates),
        ("ours: confirmed", mine.confirmed),
        ("ours: in one cluster", clustered),
        ("datasketch: candidates", theirs.candidates),
        ("datasketch: its estimate >= thr.", theirs.confirmed),
    ]
    for label, found in rows:
        cells = (len(found), rate(found, true_planted), rate(found, true_found), share(found, wrong))
        print("   {:33s} {:>8,d} {:>17s} {:>15s} {:>13s}".format(label, *cells))
    _agreement(mine, theirs, pairs, jaccard, config)
    if len(planted):
        _by_edit(planted_codes, kinds, pairs, jaccard, sigs, mine, theirs, n, config)
        _by_bin(planted_codes, pairs, jaccard, mine, theirs, config)
    times = {**{f"ours {k}": v for k, v in mine.seconds.items()}}
    times.update({f"datasketch {k}": v for k, v in theirs.seconds.items()})
    times.update({"shingle sets": set_seconds, "exact J": exact_seconds})
    print("   seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))


def _agreement(mine: Found, theirs: Found, pairs, jaccard, config: NearDedupConfig):
    both = len(np.intersect1d(mine.candidates, theirs.candidates))
    either = len(np.union1d(mine.candidates, theirs.candidates))
    print(
        f"   candidates: ours {len(mine.candidates):,}, datasketch's {len(theirs.candidates):,}, "
        f"both {both:,}, either {either:,}: Jaccard of the two sets {both / max(either, 1):.4f}"
    )
    good = np.intersect1d(np.union1d(mine.candidates, theirs.candidates), pairs[jaccard >= config.threshold])
    print(
        f"   of the {len(good):,} candidates of either with exact J >= {config.threshold}: ours has "
        f"{rate(mine.candidates, good)}, datasketch's {rate(theirs.candidates, good)}; "
        f"confirmed: ours {rate(mine.confirmed, good)}, datasketch's estimate {rate(theirs.confirmed, good)}"
    )


def _by_edit(planted_codes, kinds, pairs, jaccard, sigs, mine, theirs, n, config: NearDedupConfig):
    """Per edit: the exact J of the planted pairs, our b-bit and full-signature estimates, what each finds."""
    exact = jaccard[np.searchsorted(pairs, planted_codes)]
    a, b = planted_codes // n, planted_codes % n
    packed = near_dedup.compact(sigs)
    bbit = near_dedup.estimate(packed[a], packed[b], config.hashes)
    full = (sigs[a] == sigs[b]).mean(axis=1)
    head = ("edit", "rate", "pairs", "exact J", "b-bit est", "full est", "ours cand", "ours conf", "ds cand")
    print("   {:8s} {:>5s} {:>6s} {:>8s} {:>9s} {:>9s} {:>9s} {:>9s} {:>9s}".format(*head))
    for k, (kind, edit_rate) in enumerate(EDITS):
        at = kinds == k
        if not at.any():
            continue
        cells = [exact[at].mean(), bbit[at].mean(), full[at].mean()]
        found = [
            np.isin(planted_codes[at], f).mean() for f in (mine.candidates, mine.confirmed, theirs.candidates)
        ]
        print(
            f"   {kind:8s} {edit_rate:5.2f} {int(at.sum()):6d} "
            + " ".join(f"{v:>8.3f}" if i == 0 else f"{v:>9.3f}" for i, v in enumerate(cells + found))
        )
    error = np.abs(bbit - exact)
    print(
        f"   b-bit estimate - exact J, planted pairs: mean |error| {error.mean():.4f}, max {error.max():.4f}"
    )


def _by_bin(planted_codes, pairs, jaccard, mine, theirs, config: NearDedupConfig):
    """The banding's S-curve on the planted pairs (an unbiased sample, unlike the pairs either one finds)."""
    exact = jaccard[np.searchsorted(pairs, planted_codes)]
    head = ("exact J", "pairs", "theory", "ours cand", "ours conf", "ds cand")
    print("   {:>11s} {:>6s} {:>7s} {:>9s} {:>9s} {:>9s}".format(*head))
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        at = (exact >= lo) & (exact < hi)
        if not at.any():
            continue
        s = exact[at]
        theory = np.mean(1 - (1 - s**config.rows) ** config.bands)
        found = [
            np.isin(planted_codes[at], f).mean() for f in (mine.candidates, mine.confirmed, theirs.candidates)
        ]
        print(
            f"   {lo:4.2f}-{min(hi, 1):4.2f} {int(at.sum()):6d} {theory:7.3f} "
            + " ".join(f"{v:9.3f}" for v in found)
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planted", nargs="*", default=["linux_docs_en"], choices=FILES)
    parser.add_argument("--docs", type=int, default=3000, help="documents of each --planted corpus")
    parser.add_argument("--copies", type=int, default=1000, help="edited copies planted among them")
    parser.add_argument("--natural", nargs="*", default=["fortunes_en", "linux_docs_en"], choices=FILES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = NearDedupConfig()
    print(f"config: {config}; ALL_PAIRS {near_dedup.ALL_PAIRS}, SIGNATURE_BITS {near_dedup.SIGNATURE_BITS}")
    for name in args.planted:
        rng = np.random.default_rng(args.seed)
        texts, planted, kinds = plant(documents(name), args.docs, args.copies, rng)
        label = f"{name}, {len(texts) - len(planted):,} documents + {len(planted):,} edited copies"
        report(label, texts, planted, kinds, config)
    for name in args.natural:
        texts = documents(name)
        report(f"{name} as is", texts, np.zeros((0, 2), np.int64), np.zeros(0, np.int64), config)


if __name__ == "__main__":
    main()
