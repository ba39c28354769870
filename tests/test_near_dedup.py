"""transforms/near_dedup.py: words and shingles, MinHash LSH against exact Jaccard and against datasketch,
the large-star/small-star components, and n-gram decontamination."""

import dataclasses
import re

import numpy as np
import pytest

from mlmprep.transforms import near_dedup
from mlmprep.transforms.near_dedup import EDGE, NearDedupConfig

from conftest import CORPORA

CONFIG = NearDedupConfig()
HIGH, LOW = CONFIG.threshold + 0.1, CONFIG.threshold - 0.1  # surely duplicates; surely not
EDITS = [("replace", 0.01), ("insert", 0.01), ("delete", 0.02), ("replace", 0.03), ("insert", 0.05),
         ("delete", 0.1), ("replace", 0.2)]  # fmt: skip


def _documents(count: int) -> list[str]:
    """Real documents of 50 to 1,500 words from the start of the kernel documentation."""
    with open(CORPORA / "bench" / "linux_docs_en.txt", encoding="utf-8") as f:
        text = f.read(3_000_000)
    docs = [d for d in re.split(r"\n\s*\n", text) if 50 <= len(d.split()) <= 1500]
    assert len(docs) >= count
    return docs[:count]


def _edit(words: list[str], kind: str, rate: float, rng) -> list[str]:
    """``words`` with rate * len of them (at least one) inserted, deleted or replaced at random places."""
    places = set(rng.choice(len(words), size=max(1, round(rate * len(words))), replace=False).tolist())
    out = []
    for i, word in enumerate(words):
        if i in places and kind != "delete":
            out.append(f"w{rng.integers(1 << 30)}")  # a word no document has
        if i not in places or kind == "insert":
            out.append(word)
    return out


@pytest.fixture(scope="module")
def planted(real_data):
    """(300 real documents and 140 edited copies of the first 140, every edit of EDITS in turn; the
    planted (original, copy) pairs; each document's shingle set)."""
    rng = np.random.default_rng(7)
    texts = _documents(300)
    pairs = []
    for i in range(140):
        kind, rate = EDITS[i % len(EDITS)]
        pairs.append((i, len(texts)))
        texts.append(" ".join(_edit(texts[i].split(), kind, rate, rng)))
    return texts, np.array(pairs), _shingle_sets(texts)


def _shingle_sets(texts: list[str]) -> list[set[int]]:
    """Each text's shingles as the job hashes them."""
    words, bounds = near_dedup.word_hashes(texts)
    shingles, first = near_dedup.shingle_hashes(words, bounds, CONFIG.shingle)
    return [set(shingles[a:b].tolist()) for a, b in zip(first[:-1], first[1:])]


def _jaccard(sets: list[set[int]], pairs) -> np.ndarray:
    return np.array([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs])


def _ours(texts: list[str], config: NearDedupConfig) -> set[tuple[int, int]]:
    """The pairs (a < b, by index) ``confirmed_pairs`` declares, keys being the documents' indices."""
    sigs, has = near_dedup.signatures(texts, config)
    entries = near_dedup.entries(np.arange(len(texts), dtype=np.uint64), sigs, has, config)
    pairs, _ = near_dedup.confirmed_pairs(entries, config)
    return set(zip(pairs["a"].tolist(), pairs["b"].tolist()))


def _datasketch(sets: list[set[int]], config: NearDedupConfig) -> set[tuple[int, int]]:
    """datasketch's MinHashLSH candidates over the same shingles, each as 8 little-endian bytes."""
    datasketch = pytest.importorskip("datasketch")
    hashes = datasketch.MinHash.bulk(
        [[s.to_bytes(8, "little") for s in shingles] for shingles in sets], num_perm=config.hashes
    )
    lsh = datasketch.MinHashLSH(
        threshold=config.threshold, num_perm=config.hashes, params=(config.bands, config.rows)
    )
    for i, m in enumerate(hashes):
        lsh.insert(i, m)
    return {(i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if i < j}


def test_planted_near_duplicates_are_found_and_distinct_documents_are_not(planted):
    texts, pairs, sets = planted
    found = _ours(texts, CONFIG)
    exact = _jaccard(sets, pairs)
    duplicates = [tuple(p) for p in pairs[exact >= HIGH].tolist()]
    assert len(duplicates) >= 40  # the 1% and 2% edits
    assert sum(p in found for p in duplicates) / len(duplicates) >= 0.9
    assert found, "no pair confirmed"
    wrong = _jaccard(sets, sorted(found)) < LOW
    assert wrong.mean() <= 0.05
    # The 20% replacements (exact J about 0.2) are never confirmed.
    far = [tuple(p) for p in pairs[exact < 0.3].tolist()]
    assert far and not any(p in found for p in far)


def test_candidates_agree_with_datasketch(planted):
    """Both band the same shingles into 14 bands of 8 with independent hash functions, so each finds a
    pair of Jaccard s with probability 1 - (1 - s^8)^14: 0.77 at 0.75 and 0.99 at 0.85."""
    texts, _, sets = planted
    ours = _ours(texts, dataclasses.replace(CONFIG, threshold=0.0))  # every candidate pair compared
    theirs = _datasketch(sets, CONFIG)
    union = sorted(ours | theirs)
    exact = dict(zip(union, _jaccard(sets, union)))
    for least, level in ((CONFIG.threshold, 0.8), (HIGH, 0.95)):
        for a, b in ((ours, theirs), (theirs, ours)):
            good = [p for p in b if exact[p] >= least]
            assert good
            assert sum(p in a for p in good) / len(good) >= level, (least, len(good))


def test_a_band_group_beyond_all_pairs_still_makes_one_cluster(planted):
    """A document in 80 near-copies: its band groups exceed ALL_PAIRS, so each copy is compared with the
    group's first few only, and the pairs must still join every copy in one cluster."""
    texts, _, _ = planted
    rng = np.random.default_rng(3)
    copies = [" ".join(_edit(texts[0].split(), "replace", 0.01, rng)) for _ in range(80)]
    found = _ours([texts[0]] + copies, CONFIG)
    assert len(found) < 81 * 80 // 2  # not every pair was compared
    assert _union_find_losers(sorted(found)) == list(range(1, 81))


def test_b_bit_estimate_is_close_to_exact_jaccard(planted):
    """With 112 hashes the estimate's standard deviation is at most about 0.05 (at J = 0.5)."""
    texts, pairs, sets = planted
    sigs, _ = near_dedup.signatures(texts, CONFIG)
    packed = near_dedup.compact(sigs)
    estimate = near_dedup.estimate(packed[pairs[:, 0]], packed[pairs[:, 1]], CONFIG.hashes)
    error = estimate - _jaccard(sets, pairs)
    assert np.abs(error).mean() < 0.06
    assert abs(error.mean()) < 0.02  # unbiased
    assert np.all(near_dedup.estimate(packed, packed, CONFIG.hashes) == 1.0)


def test_words_ignore_case_and_punctuation():
    words, bounds = near_dedup.word_hashes(["Hello, World!", "hello world", "hello  worlds"])
    assert bounds.tolist() == [0, 2, 4, 6]
    assert words[0:2].tolist() == words[2:4].tolist()
    assert words[4] == words[0] and words[5] != words[1]


def test_text_without_spaces_has_a_word_per_character():
    words, bounds = near_dedup.word_hashes(["今天天气很好。", "天"])
    assert bounds.tolist() == [0, 6, 7]
    assert words[1] == words[2] == words[6]  # 天 each time
    assert len(set(words[:6].tolist())) == 5


def test_a_document_shorter_than_a_shingle_has_one_shingle():
    texts = ["one two three", "one two three four", "a b c d e", "a b c d e f g", ""]
    words, bounds = near_dedup.word_hashes(texts)
    shingles, first = near_dedup.shingle_hashes(words, bounds, 5)
    assert np.diff(first).tolist() == [1, 1, 1, 3, 0]
    assert shingles[0] != shingles[1]  # "one two three" is not a shingle of the longer text
    assert shingles[2] == shingles[3]  # "a b c d e" is
    _, has = near_dedup.signatures(texts, CONFIG)
    assert has.tolist() == [True, True, True, True, False]


def _union_find_losers(pairs: list[tuple[int, int]]) -> list[int]:
    """Every node but each component's least, by a plain union-find."""
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return sorted(x for x in parent if find(x) != x)


def _graph(rng) -> list[tuple[int, int]]:
    """A chain of 50 nodes and cliques of 2 to 7 (each edge kept with p 0.6, the chain through it always),
    a few random edges between them, on shuffled 63-bit keys."""
    keys = rng.choice(1 << 62, size=300, replace=False) + (1 << 62)
    pairs = [(keys[i], keys[i + 1]) for i in range(49)]
    at = 50
    while at < 290:
        size = int(rng.integers(2, 8))
        pairs += [(keys[at + i], keys[at + j]) for i in range(size) for j in range(i + 1, size)
                  if j == i + 1 or rng.random() < 0.6]  # fmt: skip
        at += size
    for _ in range(8):
        a, b = rng.choice(keys[:at], size=2, replace=False)
        pairs.append((a, b))
    return [(int(min(a, b)), int(max(a, b))) for a, b in pairs]


def _round(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """One large-star and small-star round as the job runs it: (edges both ways, edges moved)."""
    edges, large = near_dedup.large_star(edges)
    edges, small = near_dedup.small_star(edges)
    return near_dedup.both_ways(edges), large + small


@pytest.mark.parametrize("seed", range(20))
def test_star_rounds_find_the_connected_components(seed):
    from mlmprep.transforms.beam.near_dedup import MAX_ROUNDS

    pairs = _graph(np.random.default_rng(seed))
    edges = near_dedup.both_ways(np.array(pairs, dtype=EDGE))
    for _ in range(MAX_ROUNDS):
        edges, moved = _round(edges)
        if moved == 0:
            break
    assert moved == 0, f"not settled in {MAX_ROUNDS} rounds"
    down = edges[edges["a"] > edges["b"]]
    assert near_dedup.losers(down).tolist() == _union_find_losers(pairs)
    # Settled: a star per component, each member's one edge to its least; another round changes nothing.
    assert len(np.unique(down["a"])) == len(near_dedup.unique_pairs(down.astype(EDGE)))
    again, moved = _round(edges)
    assert moved == 0
    assert set(again.tolist()) == set(edges.tolist())


def test_contamination_needs_a_whole_ngram():
    item = "The quick brown fox jumps over the lazy dog while seven wizards quietly juggle boxes of ice"
    ngrams, _ = near_dedup.ngram_hashes([item], near_dedup.DECONTAMINATION_NGRAM)
    ngrams = np.sort(ngrams)
    words = item.split()
    texts = [
        "Intro text. " + " ".join(words[2:15]).upper().replace(" ", ", ") + " and more.",  # 13 words
        "Intro text. " + " ".join(words[2:14]) + " and more.",  # 12 of them
        "Nothing alike here.",
    ]
    found, at = near_dedup.contaminated(texts, ngrams, near_dedup.DECONTAMINATION_NGRAM)
    assert found.tolist() == [True, False, False]
    assert at[0] >= 0 and at[1:].tolist() == [-1, -1]
    shared, _ = near_dedup.ngram_hashes([" ".join(words[2:15])], near_dedup.DECONTAMINATION_NGRAM)
    assert ngrams[at[0]] == shared[0]
