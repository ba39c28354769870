"""The tokenizing step on Beam: batches of documents to batches of token ids, the tokenizer on threads.

The tokenizer travels to workers as its JSON text, so a worker needs no access
to the path the user gave (a laptop path on Dataflow, say), and it is loaded
once per worker in ``DoFn.setup``.
"""

import collections
import concurrent.futures
import gc

import numpy as np

from mlmprep.transforms import profile
from mlmprep.transforms.beam import exit_quickly
from mlmprep.transforms.beam.counting import CountingDoFn, in_global_window
from mlmprep.transforms.documents import PIECE_CHARS, split_pieces
from mlmprep.transforms.pairs import split_sentences
from mlmprep.transforms.tokenize import (
    SPLITS,
    TokenizedBatch,
    encode_batch,
    encode_with_word_starts,
    load_tokenizer,
    splits_of,
    word_start_lookup,
)

ENCODE_CHARS = 1 << 20  # text per tokenizer call: its Encoding objects cost ~100x the ids
PREFETCH = 3  # batches the tokenizer may be ahead of the steps after it


def _encode_bounded(encode, texts: list[str]):
    """``encode`` over consecutive slices of ``texts`` of about ENCODE_CHARS each, results joined."""
    results, start = [], 0
    while start < len(texts):
        end, size = start, 0
        while end < len(texts) and (end == start or size + len(texts[end]) <= ENCODE_CHARS):
            size += len(texts[end])
            end += 1
        results.append(encode(texts[start:end]))
        start = end
    return results


def _join_pieces(per_piece: list[np.ndarray], counts: list[int], dtype=np.int32) -> list[np.ndarray]:
    """Per-piece arrays -> per-document arrays (a document's pieces are consecutive; it may have none)."""
    if len(per_piece) == len(counts) and all(n == 1 for n in counts):
        return per_piece
    out, start = [], 0
    for n in counts:
        out.append(
            per_piece[start]
            if n == 1
            else np.concatenate([np.zeros(0, dtype), *per_piece[start : start + n]])
        )
        start += n
    return out


def _sentence_ends(per_sentence: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    """Where each document's sentences end in its token ids; sentences without tokens are none."""
    lengths = np.array([ids.size for ids in per_sentence], dtype=np.int32)
    out, start = [], 0
    for n in counts:
        ends = np.cumsum(lengths[start : start + n], dtype=np.int32)
        out.append(ends[lengths[start : start + n] > 0])
        start += n
    return out


def _sentences(pieces: list[str], language: str) -> list[str]:
    """A document's sentences; one longer than a piece (no end in 64K characters) is cut as documents are."""
    sentences = split_sentences("".join(pieces), language)
    if all(len(s) <= PIECE_CHARS for s in sentences):
        return sentences
    return [piece for s in sentences for piece in split_pieces(s)]


class TokenizeDocuments(CountingDoFn):
    """DocumentBatch -> TokenizedBatch.

    A long document's pieces are tokenized separately (bounded memory in the
    tokenizer) and joined again: they were cut at whitespace, so the ids are
    those of the whole text.

    The tokenizer works in Rust without the GIL, on threads of its own (and on
    its own thread pool across the cores a worker has): it encodes the next
    PREFETCH batches while the steps fused after this one (packing, masking)
    run on the batch before, as tf.data's prefetch overlaps stages, so it
    never waits for them. A batch is thus emitted after later ones were
    received, which is right because the job has no windowing: every element
    is in the global window.
    """

    def __init__(
        self,
        tokenizer_json_text: str,
        validation_fraction: float,
        *,
        word_starts: str | None = None,
        min_doc_tokens: int = 0,
        sentence_language: str | None = None,
    ):
        super().__init__()
        self._tokenizer_json = tokenizer_json_text
        self._validation_fraction = validation_fraction
        self._word_starts = word_starts  # tokenize.WORD_SOURCES: how words are found; None: not needed
        self._word_start_lookup = None
        self._min_doc_tokens = min_doc_tokens
        self._sentence_language = sentence_language  # sentence pairs: tokenized a sentence at a time
        self._tokenizer = None
        self._encoder = None
        self._pending = collections.deque()

    def setup(self):
        exit_quickly()
        self._tokenizer = load_tokenizer(self._tokenizer_json)
        if self._word_starts:
            self._word_start_lookup = word_start_lookup(self._tokenizer, self._word_starts)
        gc.freeze()  # what this worker has loaded (Beam, the tokenizer) is never garbage: collections skip it
        # Two threads: one reads a batch's ids out of its encodings (which holds the GIL)
        # while the other tokenizes the next, so the tokenizer's pool is never idle.
        self._encoder = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mlmprep-tokenize")

    def teardown(self):
        if self._encoder is not None:
            self._encoder.shutdown()

    def start_bundle(self):
        super().start_bundle()
        self._pending.clear()

    def process(self, batch):
        self._pending.append(self._encoder.submit(self._encode, batch))
        if len(self._pending) > PREFETCH:
            yield from self._batch(*self._pending.popleft().result())

    def finish_bundle(self):
        while self._pending:
            for batch in self._batch(*self._pending.popleft().result()):
                yield in_global_window(batch)
        yield from super().finish_bundle()

    def _encode(self, batch):
        """On a tokenizer thread: (batch, ids, word starts or None, sentence ends or None) of its documents.

        Each call of the tokenizer takes at most ENCODE_CHARS of text, and its
        Encoding objects (about 100 times the size of the ids) are read and
        let go before the next: a 50 MB document never has all of them at once.
        For sentence pairs, a document's pieces are its sentences.
        """
        if self._sentence_language:
            pieces = [_sentences(doc, self._sentence_language) for doc in batch.docs]
        else:
            pieces = batch.docs
        texts = [piece for doc in pieces for piece in doc]
        counts = [len(doc) for doc in pieces]
        if self._word_starts:
            parts = _encode_bounded(
                lambda t: encode_with_word_starts(self._tokenizer, t, self._word_start_lookup), texts
            )
            ids = [i for part_ids, _ in parts for i in part_ids]
            starts = _join_pieces([s for _, part_starts in parts for s in part_starts], counts, bool)
        else:
            ids = [
                i for part in _encode_bounded(lambda t: encode_batch(self._tokenizer, t), texts) for i in part
            ]
            starts = None
        ends = _sentence_ends(ids, counts) if self._sentence_language else None
        return batch, _join_pieces(ids, counts), starts, ends

    def _batch(self, batch, token_ids, starts, ends):
        lengths = np.array([t.size for t in token_ids])
        self.count("tokens", int(lengths.sum()))
        splits = splits_of(batch.keys, len(token_ids), self._validation_fraction)
        # Text the normalizer removes entirely; documents under --min_doc_tokens.
        no_tokens = lengths == 0
        too_short = ~no_tokens & (lengths < self._min_doc_tokens)
        self.count("documents_dropped.no_tokens", int(no_tokens.sum()))
        self.count("documents_dropped.too_short", int(too_short.sum()))
        kept = ~no_tokens & ~too_short
        for split, name in enumerate(SPLITS):
            in_split = kept & (splits == split)
            self.count(f"documents.{name}", int(in_split.sum()))
            for bucket, n in enumerate(profile.document_buckets(lengths[in_split]).tolist()):
                if n:
                    self.count(f"{profile.DOCUMENT_TOKENS}.{name}.{bucket}", n)
        if kept.any():
            yield TokenizedBatch(
                keys=None if batch.keys is None else batch.keys[kept],
                splits=splits[kept],
                token_ids=[t for t, k in zip(token_ids, kept) if k],
                word_starts=None if starts is None else [s for s, k in zip(starts, kept) if k],
                sentence_ends=None if ends is None else [e for e, k in zip(ends, kept) if k],
                source=batch.source,
            )
