"""Tokenization with Hugging Face ``tokenizers``: loading a tokenizer, its vocabulary, encoding batches."""

import dataclasses
import re

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from mlmprep.transforms import keys

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
    # Tokens that continue a word (WordPiece's "##" pieces): where a pair is not cut. Empty where the
    # tokenizer's model does not mark them.
    continuation_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))

    def special_lookup(self) -> np.ndarray:
        lookup = np.zeros(self.size, dtype=bool)
        lookup[list(self.special_ids)] = True
        return lookup

    def continuation_lookup(self) -> np.ndarray | None:
        """bool [size]: True for tokens that continue a word; None where the tokenizer does not say."""
        if not self.continuation_ids.size:
            return None
        lookup = np.zeros(self.size, dtype=bool)
        lookup[self.continuation_ids] = True
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
        continuation_ids=_continuation_ids(tokenizer, vocab),
    )


def _continuation_ids(tokenizer: Tokenizer, vocab: dict[str, int]) -> np.ndarray:
    prefix = getattr(tokenizer.model, "continuing_subword_prefix", None)
    if not prefix:
        return np.zeros(0, np.int32)
    return np.array(
        sorted(i for t, i in vocab.items() if t.startswith(prefix) and len(t) > len(prefix)), np.int32
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
    sentence_ends: list[np.ndarray] | None = None  # int32, where each sentence's tokens end (sentence pairs)

    @property
    def nbytes(self) -> int:
        ids = sum(t.nbytes for t in self.token_ids)
        return ids if self.word_starts is None else ids + ids // 4  # a byte of word start per 4-byte id
