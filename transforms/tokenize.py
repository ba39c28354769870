"""Tokenization with Hugging Face ``tokenizers``.

The tokenizer travels to workers as its JSON text, so a worker needs no access
to the path the user gave (a laptop path on Dataflow, say), and it is loaded
once per worker in ``DoFn.setup``.
"""

import collections
import concurrent.futures
import dataclasses
import gc
import re

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from mlmprep.transforms import keys
from mlmprep.transforms.counting import CountingDoFn, in_global_window

REQUIRED_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
SPLITS = ("train", "validation")

# Reserved placeholders such as BERT's "[unused0]": text never produces them.
_BRACKETED = re.compile(r"^\[[^\[\]]+\]$")


class TokenizerError(ValueError):
    """The tokenizer file cannot be used (unreadable, or lacks a special token)."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What masking and the writers need to know of a tokenizer."""

    size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int | None
    special_ids: tuple[int, ...]  # never selected for prediction
    random_ids: np.ndarray  # candidates for the "random token" replacement

    def special_lookup(self) -> np.ndarray:
        lookup = np.zeros(self.size, dtype=bool)
        lookup[list(self.special_ids)] = True
        return lookup

    def manifest_entry(self) -> dict:
        ids = {"pad": self.pad_id, "unk": self.unk_id, "cls": self.cls_id}
        ids.update(sep=self.sep_id, mask=self.mask_id)
        return {"vocab_size": self.size, "special_ids": ids}


def tokenizer_json(data: bytes) -> str:
    """The tokenizer JSON for a ``tokenizer.json`` or a WordPiece ``vocab.txt``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"not a UTF-8 tokenizer.json or vocab.txt ({e})") from None
    if text.lstrip().startswith("{"):
        try:
            Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON.
            raise TokenizerError(f"cannot load tokenizer.json: {e}") from None
        return text
    return _wordpiece_from_vocab(text).to_str()


def _wordpiece_from_vocab(text: str) -> Tokenizer:
    """A BERT tokenizer around a ``vocab.txt``, as ``BertTokenizerFast`` builds it."""
    vocab = {}
    for token in text.splitlines():
        if token and token not in vocab:
            vocab[token] = len(vocab)
    if not vocab:
        raise TokenizerError("vocab.txt is empty")
    if "[UNK]" not in vocab:
        raise TokenizerError("vocab.txt has no [UNK] token")
    # An uncased vocabulary (bert-base-uncased) has no upper-case pieces.
    lowercase = not any(t != t.lower() for t in vocab if not _BRACKETED.match(t))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def load_tokenizer(tokenizer_json_text: str) -> Tokenizer:
    """A tokenizer as the pipeline uses it: lengths and specials are ours to decide."""
    tokenizer = Tokenizer.from_str(tokenizer_json_text)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # "[MASK]" written in a document is text, never the special token.
    tokenizer.encode_special_tokens = True
    return tokenizer


def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    ids = {t: tokenizer.token_to_id(t) for t in (*REQUIRED_SPECIALS, "[UNK]")}
    missing = [t for t in REQUIRED_SPECIALS if ids[t] is None]
    if missing:
        raise TokenizerError(f"tokenizer has no {', '.join(missing)} token")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    # Ids may have gaps: the size every id fits under, not the count of tokens.
    size = max(tokenizer.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)
    added = tokenizer.get_added_tokens_decoder()
    special = {i for i, t in added.items() if t.special}
    special.update(i for i in ids.values() if i is not None)
    random_ids = np.array(
        sorted(i for t, i in vocab.items() if i not in special and not _BRACKETED.match(t)),
        dtype=np.int32,
    )
    if random_ids.size == 0:
        raise TokenizerError("tokenizer has no ordinary tokens")
    return Vocabulary(
        size=size,
        pad_id=ids["[PAD]"],
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        mask_id=ids["[MASK]"],
        unk_id=ids["[UNK]"],
        special_ids=tuple(sorted(special)),
        random_ids=random_ids,
    )


def encode_batch(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, without special tokens (packing adds them)."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encodings]


def _word_starts(encoding) -> np.ndarray:
    """Per token, whether it begins a word (from the pre-tokenizer's word ids: any tokenizer, not only
    WordPiece's ``##`` convention)."""
    words = np.nan_to_num(np.array(encoding.word_ids, dtype=np.float64), nan=-1)  # None (specials): -1
    start = np.ones(words.size, dtype=bool)
    start[1:] = words[1:] != words[:-1]
    return start


def encode_with_word_starts(
    tokenizer: Tokenizer, texts: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and, per token, whether it begins a word."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encodings], [_word_starts(e) for e in encodings]


def splits_of(document_keys: np.ndarray | None, count: int, validation_fraction: float) -> np.ndarray:
    """0 (train) or 1 (validation) per document, by a hash of its content (int8)."""
    if not validation_fraction:
        return np.zeros(count, dtype=np.int8)
    return (keys.split_fractions(document_keys) < validation_fraction).astype(np.int8)


@dataclasses.dataclass
class TokenizedBatch:
    """Documents as token ids; ``splits`` index SPLITS."""

    keys: np.ndarray | None  # uint64 [B] document keys, where the job needs them
    splits: np.ndarray  # int8 [B]
    token_ids: list[np.ndarray]
    word_starts: list[np.ndarray] | None = None

    @property
    def nbytes(self) -> int:
        ids = sum(t.nbytes for t in self.token_ids)
        return ids if self.word_starts is None else ids + ids // 4  # a byte of word start per 4-byte id


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


def _join_pieces(per_piece: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    """Per-piece arrays -> per-document arrays (a document's pieces are consecutive)."""
    if len(per_piece) == len(counts):
        return per_piece
    out, start = [], 0
    for n in counts:
        out.append(per_piece[start] if n == 1 else np.concatenate(per_piece[start : start + n]))
        start += n
    return out


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
        word_starts: bool = False,
        min_doc_tokens: int = 0,
    ):
        super().__init__()
        self._tokenizer_json = tokenizer_json_text
        self._validation_fraction = validation_fraction
        self._word_starts = word_starts
        self._min_doc_tokens = min_doc_tokens
        self._tokenizer = None
        self._encoder = None
        self._pending = collections.deque()

    def setup(self):
        self._tokenizer = load_tokenizer(self._tokenizer_json)
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
        """On a tokenizer thread: (batch, ids, word starts or None) of its documents.

        Each call of the tokenizer takes at most ENCODE_CHARS of text, and its
        Encoding objects (about 100 times the size of the ids) are read and
        let go before the next: a 50 MB document never has all of them at once.
        """
        texts = [piece for pieces in batch.docs for piece in pieces]
        counts = [len(pieces) for pieces in batch.docs]
        if self._word_starts:
            parts = _encode_bounded(lambda t: encode_with_word_starts(self._tokenizer, t), texts)
            ids = [i for part_ids, _ in parts for i in part_ids]
            starts = _join_pieces([s for _, part_starts in parts for s in part_starts], counts)
        else:
            ids = [
                i for part in _encode_bounded(lambda t: encode_batch(self._tokenizer, t), texts) for i in part
            ]
            starts = None
        return batch, _join_pieces(ids, counts), starts

    def _batch(self, batch, token_ids, starts):
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
            self.count(f"documents.{name}", int((kept & (splits == split)).sum()))
        if kept.any():
            yield TokenizedBatch(
                keys=None if batch.keys is None else batch.keys[kept],
                splits=splits[kept],
                token_ids=[t for t, k in zip(token_ids, kept) if k],
                word_starts=None if starts is None else [s for s, k in zip(starts, kept) if k],
            )
