"""Near-duplicate documents by MinHash LSH, and documents that share an n-gram with evaluation text.

Pure NumPy over a batch of documents, no Python loop per word or shingle:
the text becomes one array of code points, words are the runs between
separators (whitespace and punctuation, lower-cased first), each word a
polynomial hash over its code points taken from prefix sums, and each
shingle (``shingle`` consecutive words) a polynomial hash over its words.
Text in scripts written without spaces (Chinese, Japanese, Thai, ...) takes
each character as a word, so its shingles are character n-grams.

A document's signature is the minimum, over its shingles, of each of
``hashes`` multiply-shift hashes; ``bands`` of ``rows`` signature values
each make its band keys (Broder 1997; Leskovec et al., Mining of Massive
Datasets, ch. 3). Documents sharing a band key are candidates, confirmed
when their signatures' Jaccard estimate reaches the threshold. What crosses
the shuffle is each band key with the document's key and its signature cut
to ``SIGNATURE_BITS`` bits a value: b-bit minwise hashing (Li & König,
2010), whose estimate at the high similarities that matter here is as close
to the exact Jaccard as the full signature's (a mean error of 0.033 both,
``bench/near_dedup_quality.py``), at an eighth of its bytes.

The clusters are the connected components of the confirmed pairs, found by
alternating large-star and small-star rounds (Kiveris et al., "Connected
Components in MapReduce and Beyond", 2014) over edges grouped by node: no
worker holds more than its nodes' edges. Each cluster keeps its smallest
document key.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from mlmprep.transforms.keys import mix64

SIGNATURE_BITS = 4  # bits kept of each signature value for the confirmation of candidates
DECONTAMINATION_NGRAM = 13  # words: GPT-3's overlap test (Brown et al., 2020, appendix C)
ALL_PAIRS = 32  # a band key's documents compared pairwise; beyond, each with the first this many
_PART_CHARS = 1 << 16  # text hashed at a time
_CHUNK = 4096  # shingles hashed at a time: a (chunk, hashes) uint64 block of a few MB
_POLY = np.uint64(0x100000001B3)  # odd: invertible modulo 2**64, so a substring's hash needs no division
_POLY_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_SHINGLE_MULTIPLIERS = mix64(np.arange(1, 65, dtype=np.uint64)) | np.uint64(1)


@dataclasses.dataclass(frozen=True)
class NearDedupConfig:
    shingle: int = 5  # words (characters in scripts without spaces) per shingle
    hashes: int = 112
    bands: int = 14
    rows: int = 8
    threshold: float = 0.75  # the least Jaccard estimate of a confirmed pair
    seed: int = 1

    @property
    def signature_bytes(self) -> int:
        return self.hashes * SIGNATURE_BITS // 8

    def entry_dtype(self) -> np.dtype:
        """One band key of one document, as the band grouping receives it."""
        return np.dtype([("band", "<u8"), ("key", "<u8"), ("sig", "u1", (self.signature_bytes,))])

    def multipliers(self) -> np.ndarray:
        """The odd multiplier of each of the signature's multiply-shift hashes."""
        return mix64(np.arange(self.hashes, dtype=np.uint64) + np.uint64(self.seed << 20)) | np.uint64(1)


def _ranges(spans) -> np.ndarray:
    table = np.zeros(0x110000, dtype=bool)
    for lo, hi in spans:
        table[lo : hi + 1] = True
    return table


# What separates words: whitespace, ASCII punctuation and the common Unicode punctuation and symbols.
_SEPARATOR = _ranges(
    [(0x00, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0xBF), (0x2000, 0x206F), (0x2E00, 0x2E7F),
     (0x3000, 0x303F), (0xFE30, 0xFE4F), (0xFF00, 0xFF0F), (0xFF1A, 0xFF20), (0xFF3B, 0xFF40),
     (0xFF5B, 0xFF65), (0x0589, 0x058A), (0x05BE, 0x05BE), (0x060C, 0x060D), (0x061B, 0x061F),
     (0x06D4, 0x06D4), (0x0964, 0x0965), (0x0E2F, 0x0E2F), (0x0E5A, 0x0E5B), (0x1680, 0x1680)]
)  # fmt: skip
# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer, CJK (Han, kana).
_NO_SPACES = _ranges(
    [(0x0E00, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF),
     (0x3040, 0x30FF), (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
     (0xFF66, 0xFF9F), (0x20000, 0x2FFFF)]
)  # fmt: skip


_powers = [np.ones(1, np.uint64), np.ones(1, np.uint64)]  # P^i and P^-i, grown as texts need


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i for i < n: kept for up to a few parts' text, made anew for a longer document."""
    if len(_powers[0]) >= n:
        return _powers[0][:n], _powers[1][:n]
    one = np.ones(1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        size = max(n, 2 * len(_powers[0]))
        tables = [np.concatenate([one, np.cumprod(np.full(size - 1, p, dtype=np.uint64))])
                  for p in (_POLY, _POLY_INVERSE)]  # fmt: skip
    if size <= 4 * _PART_CHARS:
        _powers[:] = tables
    return tables[0][:n], tables[1][:n]


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of each word of every text in order, each text's first word's index, and the end).

    Words are lower-cased runs of characters between separators; in a text
    whose letters are mostly of scripts without spaces, each such character
    is a word of its own.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    texts = [t.lower() for t in texts]  # before the lengths: lower() may lengthen a text (İ)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n) + 1
    points = np.frombuffer((" ".join(texts) + " ").encode("utf-32-le", "surrogatepass"), dtype="<u4")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    word = ~_SEPARATOR[points]
    alone = _NO_SPACES[points]
    letters = np.add.reduceat(word, starts, dtype=np.int64)
    spaceless = np.add.reduceat(alone, starts, dtype=np.int64) * 2 > np.maximum(letters, 1)
    if spaceless.any():  # a character of such a script is a word of its own in such a text
        alone &= np.repeat(spaceless, lengths)
    else:
        alone[:] = False
    before = np.concatenate([[False], word[:-1] & ~alone[:-1]])
    after = np.concatenate([word[1:] & ~alone[1:], [False]])
    begins = np.flatnonzero(word & (~before | alone))
    ends = np.flatnonzero(word & (~after | alone)) + 1
    # Polynomial hash of each word from prefix sums: sum(c_i P^i) over the word, times P^-begin.
    powers, inverse = _power_tables(len(points) + 1)
    with np.errstate(over="ignore"):
        prefix = np.empty(len(points) + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum((points + np.uint32(1)) * powers[:-1], out=prefix[1:])
        hashes = mix64((prefix[ends] - prefix[begins]) * inverse[begins])
    first = np.searchsorted(begins, starts)
    return hashes, np.append(first, len(begins)).astype(np.int64)


def shingle_hashes(words: np.ndarray, bounds: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every n consecutive words within a document, each document's first shingle's
    index, and the end). A document of fewer than n words (but some) has one shingle: all its words."""
    count = np.diff(bounds)
    per_doc = np.where(count >= n, count - n + 1, np.minimum(count, 1))
    first = np.concatenate([[0], np.cumsum(per_doc)])
    total = int(first[-1])
    doc = np.repeat(np.arange(len(count)), per_doc)
    at = bounds[:-1][doc] + (np.arange(total) - first[:-1][doc])  # each shingle's first word
    width = np.minimum(count[doc], n)
    out = np.zeros(total, dtype=np.uint64)
    padded = np.concatenate([words, np.zeros(n, np.uint64)])
    with np.errstate(over="ignore"):
        for j in range(n):
            term = padded[at + j] * _SHINGLE_MULTIPLIERS[j]
            out += np.where(j < width, term, np.uint64(0))
        out = mix64(out + width.astype(np.uint64))
    return out, first.astype(np.int64)


def signatures(texts: list[str], config: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 MinHash signatures, (documents, hashes); whether each document has any shingle)."""
    sigs, has = [], []
    for part in _parts(texts):
        words, bounds = word_hashes(part)
        shingles, first = shingle_hashes(words, bounds, config.shingle)
        s, h = minhash(shingles, first, config)
        sigs.append(s)
        has.append(h)
    if not sigs:
        return np.zeros((0, config.hashes), np.uint32), np.zeros(0, bool)
    return np.concatenate(sigs), np.concatenate(has)


def _parts(texts: list[str], chars: int = _PART_CHARS) -> Iterator[list[str]]:
    """Consecutive runs of texts of about ``chars`` characters (a longer text alone): arrays that stay
    in the processor's cache."""
    lo, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= chars:
            yield texts[lo : i + 1]
            lo, size = i + 1, 0
    if lo < len(texts):
        yield texts[lo:]


def minhash(
    shingles: np.ndarray, first: np.ndarray, config: NearDedupConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Each document's minimum of each hash over its shingles (``first``: each one's first shingle).

    The hashes are multiply-shift, h(x) = (a x mod 2**64) >> 32 with a odd (Dietzfelbinger et al.,
    1997), over shingle hashes that are already uniform: the minimum is taken over the 64-bit products
    and shifted after, as the shift keeps their order: one pass over each block besides the minimum.
    """
    docs = len(first) - 1
    a = config.multipliers()
    out = np.full((docs, config.hashes), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    has = np.diff(first) > 0
    block = np.empty((_CHUNK, config.hashes), dtype=np.uint64)
    for lo in range(0, len(shingles), _CHUNK):
        hi = min(lo + _CHUNK, len(shingles))
        view = block[: hi - lo]
        np.multiply.outer(shingles[lo:hi], a, out=view)  # wraps modulo 2**64
        # The documents with shingles in [lo, hi): segments starting at lo or at a document's first.
        d0 = int(np.searchsorted(first, lo, side="right")) - 1
        d1 = int(np.searchsorted(first, hi, side="left"))
        cuts = np.clip(first[d0:d1], lo, hi) - lo
        keep = np.concatenate([cuts[1:] > cuts[:-1], [cuts[-1] < hi - lo]])
        segments = np.arange(d0, d1)[keep]
        out[segments] = np.minimum(out[segments], np.minimum.reduceat(view, cuts[keep], axis=0))
    return (out >> np.uint64(32)).astype(np.uint32), has


def band_keys(sigs: np.ndarray, config: NearDedupConfig) -> np.ndarray:
    """uint64 (documents, bands): each band's rows hashed with the band's index."""
    rows = sigs.reshape(len(sigs), config.bands, config.rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(
            mix64(np.arange(config.bands, dtype=np.uint64) + np.uint64(config.seed)), rows.shape[:2]
        )
        h = h.copy()
        for r in range(config.rows):
            h = mix64(h * _SHINGLE_MULTIPLIERS[r] + rows[:, :, r])
    return h


def compact(sigs: np.ndarray) -> np.ndarray:
    """The low SIGNATURE_BITS bits of each signature value, packed: (documents, hashes * bits / 8) uint8."""
    low = (sigs & ((1 << SIGNATURE_BITS) - 1)).astype(np.uint8)
    per_byte = 8 // SIGNATURE_BITS
    low = low.reshape(len(sigs), -1, per_byte)
    packed = np.zeros(low.shape[:2], dtype=np.uint8)
    for i in range(per_byte):
        packed |= low[:, :, i] << np.uint8(i * SIGNATURE_BITS)
    return packed


def estimate(a: np.ndarray, b: np.ndarray, hashes: int) -> np.ndarray:
    """Jaccard estimates of pairs of packed signatures (b-bit minwise hashing's unbiased estimator)."""
    mask = np.uint8((1 << SIGNATURE_BITS) - 1)
    x = a ^ b
    equal = np.zeros(len(a), dtype=np.int64)
    for i in range(8 // SIGNATURE_BITS):
        equal += (((x >> np.uint8(i * SIGNATURE_BITS)) & mask) == 0).sum(axis=1)
    chance = 2.0**-SIGNATURE_BITS
    return np.clip((equal / hashes - chance) / (1 - chance), 0.0, 1.0)


def entries(keys: np.ndarray, sigs: np.ndarray, has: np.ndarray, config: NearDedupConfig) -> np.ndarray:
    """Every band key of every document that has shingles, as ``config.entry_dtype()``."""
    keys, sigs = keys[has], sigs[has]
    bands = band_keys(sigs, config)
    out = np.empty(bands.size, dtype=config.entry_dtype())
    out["band"] = bands.reshape(-1)
    out["key"] = np.repeat(keys, config.bands)
    out["sig"] = np.repeat(compact(sigs), config.bands, axis=0)
    return out


def by_bucket(values: np.ndarray, field: str, bits: int) -> Iterator[tuple[int, np.ndarray]]:
    """Rows grouped by the top ``bits`` of a uint64 field (63-bit keys or 64-bit band keys alike)."""
    buckets = (values[field] >> np.uint64(64 - bits)) if bits else np.zeros(len(values), np.uint64)
    order = np.argsort(buckets, kind="stable")
    found, starts = np.unique(buckets[order], return_index=True)
    for bucket, part in zip(found, np.split(values[order], starts[1:])):
        yield int(bucket), part


EDGE = np.dtype([("a", "<u8"), ("b", "<u8")])  # an undirected edge, a < b where it says so
PAIR = np.dtype([("a", "<u8"), ("b", "<u8"), ("jaccard", "<f4")])  # a confirmed pair, a < b


def confirmed_pairs(entries: np.ndarray, config: NearDedupConfig) -> tuple[np.ndarray, int]:
    """(the confirmed pairs among documents sharing a band key, the candidate pairs compared).

    Within a group of documents sharing a band key every pair is compared
    up to ``ALL_PAIRS`` documents; a larger group (boilerplate in thousands
    of copies) compares each document with the group's first few, which is
    enough to connect it to its cluster.
    """
    if len(entries) == 0:
        return np.zeros(0, PAIR), 0
    order = np.lexsort((entries["key"], entries["band"]))
    e = entries[order]
    fresh = np.concatenate([[True], (e["band"][1:] != e["band"][:-1]) | (e["key"][1:] != e["key"][:-1])])
    e = e[fresh]  # a document's copies (and its own) band key once
    starts = np.flatnonzero(np.concatenate([[True], e["band"][1:] != e["band"][:-1]]))
    sizes = np.diff(np.append(starts, len(e)))
    multi = sizes > 1
    starts, sizes = starts[multi], sizes[multi]
    if len(starts) == 0:
        return np.zeros(0, PAIR), 0
    # Pair (i, j), i < j, within each group: j against the group's first min(size, ALL_PAIRS) members.
    partners = np.minimum(sizes, ALL_PAIRS)
    left, right = [], []
    for i in range(int(partners.max())):
        has = sizes > i + 1
        s, z = starts[has], sizes[has]
        count = z - i - 1
        base = np.repeat(s + i, count)
        offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        left.append(base)
        right.append(base + 1 + offsets)
    left, right = np.concatenate(left), np.concatenate(right)
    jaccard = estimate(e["sig"][left], e["sig"][right], config.hashes)
    ok = jaccard >= config.threshold
    a, b = e["key"][left][ok], e["key"][right][ok]
    out = np.empty(int(ok.sum()), PAIR)
    out["a"], out["b"], out["jaccard"] = np.minimum(a, b), np.maximum(a, b), jaccard[ok]
    return unique_pairs(out), len(left)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Each pair once (found in several bands), in (a, b) order."""
    order = np.lexsort((pairs["b"], pairs["a"]))
    pairs = pairs[order]
    fresh = np.concatenate(
        [[True], (pairs["a"][1:] != pairs["a"][:-1]) | (pairs["b"][1:] != pairs["b"][:-1])]
    )
    return pairs[fresh[: len(pairs)]] if len(pairs) else pairs


def both_ways(edges: np.ndarray) -> np.ndarray:
    """Each edge (a, b) as (a, b) and (b, a): the large-star step groups a node's whole neighbourhood."""
    out = np.empty(2 * len(edges), EDGE)
    out["a"][: len(edges)], out["b"][: len(edges)] = edges["a"], edges["b"]
    out["a"][len(edges) :], out["b"][len(edges) :] = edges["b"], edges["a"]
    return out


def _neighbourhoods(edges: np.ndarray):
    """Edges sorted by node; each node's first edge, and the smallest of its neighbours and itself."""
    edges = edges[np.lexsort((edges["b"], edges["a"]))]
    fresh = np.concatenate(
        [[True], (edges["a"][1:] != edges["a"][:-1]) | (edges["b"][1:] != edges["b"][:-1])]
    )
    edges = edges[fresh]
    starts = np.flatnonzero(np.concatenate([[True], edges["a"][1:] != edges["a"][:-1]]))
    least = np.minimum(np.minimum.reduceat(edges["b"], starts), edges["a"][starts])
    return edges, starts, least


def large_star(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Edges (u, v) grouped by u (each edge both ways) -> (v, m(u)) for every neighbour v > u, m(u) the
    least of u's neighbourhood; and how many of them moved (m(u) != u)."""
    if len(edges) == 0:
        return np.zeros(0, EDGE), 0
    edges, starts, least = _neighbourhoods(edges)
    m = np.repeat(least, np.diff(np.append(starts, len(edges))))
    up = edges["b"] > edges["a"]
    out = np.empty(int(up.sum()), EDGE)
    out["a"], out["b"] = edges["b"][up], m[up]
    return out, int((m[up] != edges["a"][up]).sum())


def small_star(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Edges (u, v), v < u, grouped by u -> (x, m) for x in u's smaller neighbours and u itself, x != m,
    m the least of them; and how many moved (an edge (u, v) that became (v, m), m != u)."""
    if len(edges) == 0:
        return np.zeros(0, EDGE), 0
    edges, starts, least = _neighbourhoods(edges)
    m = np.repeat(least, np.diff(np.append(starts, len(edges))))
    nodes = edges["a"][starts]
    x = np.concatenate([edges["b"], nodes])
    to = np.concatenate([m, least])
    keep = x != to
    out = np.empty(int(keep.sum()), EDGE)
    out["a"], out["b"] = x[keep], to[keep]
    return out, int((edges["b"] != m).sum())  # each smaller neighbour but m: its edge re-hung on m


def losers(edges: np.ndarray) -> np.ndarray:
    """The nodes with a smaller neighbour: every node of a cluster but its least (of settled edges)."""
    high = np.maximum(edges["a"], edges["b"])
    return np.unique(high)


def settled_rounds(counters: dict) -> tuple[int, bool]:
    """(rounds until one moved no edge, that one included; whether one did) from the job's counts of
    the edges each round moved (``near_dedup.moved.R``) and of the rounds run (``near_dedup.rounds``)."""
    ran = counters.get("near_dedup.rounds", 1)  # none counted: no edges, settled from the start
    for r in range(ran):
        if not counters.get(f"near_dedup.moved.{r}", 0):
            return r + 1, True
    return ran, False


def ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every n consecutive words of each text, each text's first n-gram's index and the
    end); a text of fewer than n words has none."""
    parts = [_ngrams(part, n) for part in _parts(texts)]  # bounded arrays, as ``signatures``
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    ends = np.cumsum([len(h) for h, _ in parts])
    first = np.concatenate([[0]] + [f[1:] + end - len(h) for (h, f), end in zip(parts, ends)])
    return np.concatenate([h for h, _ in parts]), first.astype(np.int64)


def _ngrams(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    words, bounds = word_hashes(texts)
    count = np.diff(bounds)
    per_doc = np.maximum(count - n + 1, 0)
    first = np.concatenate([[0], np.cumsum(per_doc)])
    doc = np.repeat(np.arange(len(count)), per_doc)
    at = bounds[:-1][doc] + (np.arange(int(first[-1])) - first[:-1][doc])
    out = np.zeros(len(at), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            out += words[at + j] * _SHINGLE_MULTIPLIERS[j]
        out = mix64(out)
    return out, first.astype(np.int64)


def contaminated(texts: list[str], ngrams: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(whether each text shares an n-gram with ``ngrams``, sorted uint64; the index in ``ngrams`` of
    one it shares, -1 where none)."""
    hashes, first = ngram_hashes(texts, n)
    at = np.searchsorted(ngrams, hashes)
    hit = at < len(ngrams)
    hit[hit] = ngrams[at[hit]] == hashes[hit]
    docs = len(first) - 1
    doc = np.repeat(np.arange(docs), np.diff(first))
    found = np.full(docs, -1, dtype=np.int64)
    found[doc[hit][::-1]] = at[hit][::-1]  # each text's first shared n-gram
    return found >= 0, found
