"""Sentence pairs for next-sentence prediction (BERT) and sentence-order prediction (ALBERT).

A document is its token ids and the ends of its sentences. Pairs are made as
BERT's ``create_instances_from_document`` makes them: a chunk of consecutive
sentences up to a target length (the whole sequence, or with
``short_seq_prob`` a random shorter one, drawn once per document), segment A
its sentences up to a random split point, B the rest of the chunk (IsNext)
or, for NSP half the time, sentences of another document from a random
sentence on (IsRandom), with the chunk's unused sentences put back. SOP
(ALBERT) keeps A and B consecutive and swaps them half the time.

Where this differs from BERT's script, and why:

- No token is lost. BERT cuts a pair that does not fit from its longer side,
  at the front or the back at random, and drops what it cut. Here the longer
  side is cut at its back only and what is cut is put back: it starts the
  next pair. IsNext and SOP segments stay consecutive (when A is cut, B
  starts where A now ends).
- The label is drawn first, half and half. BERT makes every chunk of one
  sentence IsRandom, which skews the labels toward IsRandom on corpora of
  short documents; here IsNext and SOP cut such a chunk inside its sentence.
- A document never ends with a single token left over (nothing can pair
  with it): the pair before it takes that token, or leaves two.
- The other document of an IsRandom pair is drawn from the documents
  grouped with this one (the few thousand around it in key order: a
  pseudo-random sample of the split), not from the whole corpus, and only
  where there is another; every choice is a function of the seed and the
  documents' content keys, never of bundles or workers.
- Pairs are made once; ``--dupe_factor`` copies are masked differently but
  paired alike (BERT re-pairs each copy).
"""

import bisect
import dataclasses

import numpy as np

from mlmprep.transforms import keys, records
from mlmprep.transforms.frames import Frame

MODES = ("none", "nsp", "sop")
# Labels as BERT's next_sentence_labels and Hugging Face's next_sentence_label hold them.
IS_NEXT, IS_RANDOM = 0, 1  # nsp
IN_ORDER, SWAPPED = 0, 1  # sop


def min_seq_length(frame: Frame) -> int:
    """The pair frame's specials with room to cut a pair ([CLS] A [SEP] B [SEP]: 6)."""
    return frame.pair_specials + 3


MIN_DOC_TOKENS = 2  # a document of one token has nothing to pair with
# The pair step's counter, per split ("...train"): IsRandom drawn, IsNext made, no other document at hand.
WITHOUT_OTHER_DOCUMENT = "pairs_without_other_document"

_STREAM = 3  # keys.uniform_bits stream of pair choices (masking uses 0 to 2)
_FIRST_DRAWS = 10  # draws made for every document of a slice at once: enough for two pairs
_DRAWS = 64  # draws made at once where a document needs more


@dataclasses.dataclass(frozen=True)
class PairConfig:
    mode: str  # MODES, not "none"
    max_seq_length: int
    short_seq_prob: float = 0.1
    seed: int = 12345
    language: str = "en"  # whose rules split lines into sentences (split_sentences)


@dataclasses.dataclass
class Documents:
    """Documents as token ids with the ends of their sentences (ascending, the last is the length)."""

    token_ids: list[np.ndarray]
    sentence_ends: list[np.ndarray]
    keys: np.ndarray  # uint64 document keys
    word_starts: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    @staticmethod
    def join(first: "Documents", second: "Documents") -> "Documents":
        starts = None if first.word_starts is None else first.word_starts + second.word_starts
        return Documents(
            first.token_ids + second.token_ids,
            first.sentence_ends + second.sentence_ends,
            np.concatenate([first.keys, second.keys]),
            starts,
        )


@dataclasses.dataclass
class PairBatch:
    """Pairs in the tokenizer's pair frame (``[CLS] A [SEP] B [SEP] [PAD]...``) as rows."""

    input_ids: np.ndarray  # int32 [N, L]
    lengths: np.ndarray  # int32 [N]
    segment_starts: np.ndarray  # int32 [N]: B's first position (A and the frame's middle are before it)
    labels: np.ndarray  # int8 [N]
    word_starts: np.ndarray | None  # bool [N, L]
    without_other_document: int  # IsRandom pairs drawn where no other document was at hand (made IsNext)
    # Where the rows' pieces lie (``pack.SequenceBatch``): a pair is one piece, its frame once.
    pieces: np.ndarray  # int32 [N]
    piece_lengths: np.ndarray  # int32 [N]
    documents: np.ndarray | None = None  # int [N]: the pool's document segment A is of


def split_sentences(text: str, language: str) -> list[str]:
    """A document's sentences: its lines (BERT's one sentence per line), each split by ``sentencex``.

    sentencex (Wikimedia's rule-based segmenter, ~300 languages with
    fallbacks, in Rust) leaves a line that is one sentence whole and splits a
    line that holds several: a paragraph, a JSONL text, a document on one
    line. It costs 5 to 10% of tokenizing the same text (bench/sentence_split.py).
    """
    import sentencex

    out = []
    for line in text.split("\n"):
        if line and not line.isspace():
            out.extend(s for s in sentencex.segment(language, line) if s and not s.isspace())
    return out


def fit(a: int, b: int, max_tokens: int) -> tuple[int, int]:
    """Lengths of A and B after cutting the longer (B on a tie) one token at a time until they fit,
    as BERT's ``truncate_seq_pair``; in closed form."""
    if a + b <= max_tokens:
        return a, b
    a = min(a, max(max_tokens - b, (max_tokens + 1) // 2))
    return a, min(b, max_tokens - a)


class _Draws:
    """Uniform draws in [0, 1) of one document: counter-based on its key (``keys.uniform_bits``), so a
    function of the seed and its content alone. The first few come with it, drawn for a whole slice of
    documents at once; more are drawn as a document needs them."""

    def __init__(self, key: np.uint64, first: list[float]):
        self._key = np.asarray([key], dtype=np.uint64)
        self._values = first
        self._next = 0

    def take(self, count: int) -> list[float]:
        """The next ``count`` draws."""
        if self._next + count > len(self._values):
            columns = np.arange(len(self._values), len(self._values) + max(_DRAWS, count))
            more = keys.to_unit(keys.uniform_bits(self._key, stream=_STREAM, columns=columns))
            self._values.extend(more.tolist())  # a list of this document's own
        self._next += count
        return self._values[self._next - count : self._next]

    def uniform(self) -> float:
        return self.take(1)[0]

    def integer(self, low: int, high: int) -> int:
        """In [low, high], both included (Python's ``randint``)."""
        return low + min(int(self.uniform() * (high - low + 1)), high - low)


def make_pairs(
    pool: Documents,
    first: int,
    config: PairConfig,
    *,
    frame: Frame,
    pad_id: int,
    continues: np.ndarray | None = None,
) -> PairBatch:
    """The pairs of documents ``pool[first:]``; IsRandom segments come from any other document of ``pool``.

    ``continues``: bool [vocab size], the tokens that continue a word (``Vocabulary.continuation_lookup``),
    which never start a segment cut from one sentence.

    A loop over documents and their pairs, not tokens: sentence ends are Python lists searched by
    ``bisect`` (faster than numpy on a few values), and each document's first draws come from one
    vectorized call for the slice.
    """
    max_tokens = config.max_seq_length - frame.pair_specials
    rng_keys = keys.record_keys(pool.keys[first:], seed=config.seed, dupe=0)
    columns = np.arange(_FIRST_DRAWS)[None, :]
    first_draws = keys.to_unit(keys.uniform_bits(rng_keys[:, None], stream=_STREAM, columns=columns)).tolist()
    all_ends = [ends.tolist() for ends in pool.sentence_ends]
    nsp, sop, others = config.mode == "nsp", config.mode == "sop", len(pool) - 1
    pairs, without_other = [], 0  # (a_doc, a_start, a_end, b_doc, b_start, b_end, label)
    for doc, rng_key, drawn in zip(range(first, len(pool)), rng_keys, first_draws):
        ends = all_ends[doc]
        n, last = ends[-1], len(ends) - 1
        draws = _Draws(rng_key, drawn)
        target = max_tokens
        if draws.uniform() < config.short_seq_prob:
            target = draws.integer(2, max_tokens)
        else:
            draws.uniform()  # each document takes the same draws whichever way it went
        pos = 0
        while pos < n:
            # The chunk: sentences from pos until they reach the target (or the document ends).
            lo = bisect.bisect_right(ends, pos)
            hi = min(bisect.bisect_left(ends, pos + target), last)
            label_draw, split_draw, other_draw, start_draw = draws.take(4)
            random_next = nsp and label_draw < 0.5
            if random_next and not others:
                random_next, without_other = False, without_other + 1
            if hi > lo:
                split = ends[lo + min(int(split_draw * (hi - lo)), hi - lo - 1)]
            else:  # one sentence (two tokens or more): cut inside what fits, where a word starts if one does
                cuts = np.arange(pos + 1, min(ends[lo], pos + target))
                if continues is not None:
                    starts = cuts[~continues[pool.token_ids[doc][cuts]]]
                    cuts = starts if starts.size else cuts
                split = int(cuts[min(int(split_draw * cuts.size), cuts.size - 1)])
            if random_next:
                other = int(other_draw * others)
                other += other >= doc  # any document but this one
                other_ends = all_ends[other]
                sentence = min(int(start_draw * len(other_ends)), len(other_ends) - 1)
                b_start = other_ends[sentence - 1] if sentence else 0
                wanted = max(1, target - (split - pos))
                j = min(bisect.bisect_left(other_ends, b_start + wanted), len(other_ends) - 1)
                a, b = fit(split - pos, other_ends[j] - b_start, max_tokens)
                if n - (pos + a) == 1:  # never leave one token alone
                    a, b = (a + 1, b) if a + b < max_tokens else (a - 1, b) if a > 1 else (a + 1, b - 1)
                pairs.append((doc, pos, pos + a, other, b_start, b_start + b, IS_RANDOM))
                pos += a
            else:
                a, b = fit(split - pos, ends[hi] - split, max_tokens)
                if n - (pos + a + b) == 1:
                    a, b = (a, b + 1) if a + b < max_tokens else (a - 1, b) if a > b else (a, b - 1)
                if sop and label_draw < 0.5:
                    pairs.append((doc, pos + a, pos + a + b, doc, pos, pos + a, SWAPPED))
                else:
                    pairs.append((doc, pos, pos + a, doc, pos + a, pos + a + b, IS_NEXT))  # or IN_ORDER
                pos += a + b
    return _rows(pool, pairs, config.max_seq_length, frame, pad_id, without_other)


def _rows(pool: Documents, pairs, width: int, frame: Frame, pad_id, without_other) -> PairBatch:
    n = len(pairs)
    input_ids = np.full((n, width), pad_id, dtype=np.int32)
    starts = None if pool.word_starts is None else np.zeros((n, width), dtype=bool)
    lengths = np.zeros(n, dtype=np.int32)
    segment_starts = np.zeros(n, dtype=np.int32)
    labels = np.zeros(n, dtype=np.int8)
    prefix, middle, suffix = frame.pair_prefix, frame.middle, frame.pair_suffix
    head = prefix.size
    for row, (a_doc, a_start, a_end, b_doc, b_start, b_end, label) in enumerate(pairs):
        a_stop = head + a_end - a_start
        b_at = a_stop + middle.size
        end = b_at + b_end - b_start
        input_ids[row, head:a_stop] = pool.token_ids[a_doc][a_start:a_end]
        input_ids[row, a_stop:b_at] = middle
        input_ids[row, b_at:end] = pool.token_ids[b_doc][b_start:b_end]
        input_ids[row, end : end + suffix.size] = suffix
        if starts is not None:
            starts[row, head:a_stop] = pool.word_starts[a_doc][a_start:a_end]
            starts[row, b_at:end] = pool.word_starts[b_doc][b_start:b_end]
        lengths[row], segment_starts[row], labels[row] = end + suffix.size, b_at, label
    input_ids[:, :head] = prefix
    documents = np.array([pair[0] for pair in pairs], dtype=np.int64)
    return PairBatch(
        input_ids,
        lengths,
        segment_starts,
        labels,
        starts,
        without_other,
        *records.one_piece_each(lengths),
        documents=documents,
    )


def segment_ids(segment_starts: np.ndarray, lengths: np.ndarray, width: int, b_type: int = 1) -> np.ndarray:
    """int32 [N, width]: 0 for the prefix, A and the middle (and padding), ``b_type`` for B and the suffix
    (the frame's type ids: BERT's 1, RoBERTa's 0)."""
    cols = np.arange(width)[None, :]
    return ((cols >= segment_starts[:, None]) & (cols < lengths[:, None])).astype(np.int32) * b_type
