"""Tokenization with Hugging Face ``tokenizers``: loading a tokenizer, its vocabulary, encoding batches."""

import dataclasses
import json
import re

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mlmprep.transforms import frames, keys

SPLITS = ("train", "validation")
# The roles a tokenizer's special tokens play, and the names each goes by in the families served.
ROLES = ("cls", "sep", "pad", "mask", "unk")
COMMON_NAMES = {
    "mask": ("[MASK]", "<mask>"),
    "pad": ("[PAD]", "<pad>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "unk": ("[UNK]", "<unk>"),
}

# Reserved placeholders such as BERT's "[unused0]": text never produces them.
_BRACKETED = re.compile(r"^\[[^\[\]]+\]$")


class TokenizerError(ValueError):
    """The tokenizer file cannot be used (unreadable, or lacks a special token)."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What packing, masking and the writers need to know of a tokenizer."""

    size: int
    pad_id: int
    cls_id: int | None  # None where the tokenizer has no such role (the frame still frames)
    sep_id: int | None
    mask_id: int
    unk_id: int | None
    special_ids: tuple[int, ...]  # never selected for prediction, never drawn
    random_ids: np.ndarray  # candidates for the "random token" replacement
    frame: frames.Frame = None
    # Tokens that continue a word (WordPiece's "##" pieces): where a pair is not cut. Empty where the
    # tokenizer's model does not mark them.
    continuation_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    # Tokens that are whitespace alone (byte-level's lone space or newline, Metaspace's bare "▁"):
    # ordinary tokens, but never selected for prediction (they carry nothing to predict).
    blank_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    tokens: dict = dataclasses.field(default_factory=dict)  # role -> token text
    frames: dict = dataclasses.field(default_factory=dict)  # {"single": "[CLS] A [SEP]", "pair": ...}
    names: dict = dataclasses.field(default_factory=dict)  # id -> token, of the roles' and the frame's ids
    word_source: str | None = None  # WORD_SOURCES: how words are found; None: the tokenizer marks none

    def name(self, token_id: int) -> str:
        return self.names.get(token_id, str(token_id))

    def special_lookup(self) -> np.ndarray:
        lookup = np.zeros(self.size, dtype=bool)
        lookup[list(self.special_ids)] = True
        return lookup

    def unselectable_lookup(self) -> np.ndarray:
        """bool [size]: tokens never selected for prediction: the specials and the blank tokens."""
        lookup = self.special_lookup()
        lookup[self.blank_ids] = True
        return lookup

    def continuation_lookup(self) -> np.ndarray | None:
        """bool [size]: True for tokens that continue a word; None where the tokenizer does not say."""
        if not self.continuation_ids.size:
            return None
        lookup = np.zeros(self.size, dtype=bool)
        lookup[self.continuation_ids] = True
        return lookup

    @property
    def joiner_id(self) -> int:
        """What concat packing puts between two documents: the separator (the frame's last token)."""
        return self.sep_id if self.sep_id is not None else int(self.frame.suffix[-1])

    def manifest_entry(self) -> dict:
        ids = {"pad": self.pad_id, "unk": self.unk_id, "cls": self.cls_id}
        ids.update(sep=self.sep_id, mask=self.mask_id)
        return {
            "vocab_size": self.size,
            "special_ids": ids,
            "special_tokens": {role: self.tokens.get(role) for role in ids},
            "frames": self.frames,
            "word_starts": self.word_source,
        }


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
    if "[CLS]" in vocab and "[SEP]" in vocab:  # BERT's frame, as BertTokenizerFast sets it
        tokenizer.post_processor = processors.BertProcessing(
            ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"])
        )
    return tokenizer


def load_tokenizer(tokenizer_json_text: str) -> Tokenizer:
    """A tokenizer as the pipeline uses it: lengths and specials are ours to decide."""
    tokenizer = Tokenizer.from_str(tokenizer_json_text)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # "[MASK]" written in a document is text, never the special token.
    tokenizer.encode_special_tokens = True
    return tokenizer


def parse_roles(text: str) -> dict[str, str]:
    """``mask=<mask>,pad=<pad>`` -> ``{"mask": "<mask>", "pad": "<pad>"}``; ValueError on a bad one."""
    roles = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, sep, token = part.partition("=")
        if not sep or role.strip() not in ROLES or not token.strip():
            raise ValueError(f"{part!r} is not ROLE=TOKEN with ROLE one of {', '.join(ROLES)}")
        roles[role.strip()] = token.strip()
    return roles


def beside_roles(files: dict[str, bytes]) -> dict[str, str]:
    """Roles named by transformers' files beside a tokenizer.json (``tokenizer_config.json`` first, then
    ``special_tokens_map.json``): ``{"mask_token": "<mask>"}`` or ``{"mask_token": {"content": ...}}``."""
    roles = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later wins
        if name not in files:
            continue
        try:
            data = json.loads(files[name])
        except ValueError as e:
            raise TokenizerError(f"{name} beside it does not parse: {e}") from None
        for role in ROLES:
            value = data.get(f"{role}_token") if isinstance(data, dict) else None
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str) and value:
                roles[role] = value
    return roles


def find_roles(tokenizer_json_text: str, *given: dict) -> dict[str, str]:
    """Role -> token, each from the first source that names it: the ``given`` mappings in order (the
    ``--special_tokens`` flag, then a ``tokenizer_config.json`` beside the file), the model's unk token
    and the padding's pad token, then the common names
    (``COMMON_NAMES``) among the tokenizer's special tokens (among its other added tokens where no special
    one has the name, to be refused as not special)."""
    data = json.loads(tokenizer_json_text)
    model, padding = data.get("model") or {}, data.get("padding") or {}
    own = {}
    if model.get("unk_token"):
        own["unk"] = model["unk_token"]
    elif model.get("unk_id") is not None and model.get("vocab"):  # Unigram: [[piece, score], ...]
        own["unk"] = model["vocab"][model["unk_id"]][0]
    if padding.get("pad_token"):
        own["pad"] = padding["pad_token"]
    added = data.get("added_tokens") or ()
    specials = [t["content"] for t in added if t.get("special")]
    others = [t["content"] for t in added if not t.get("special")]  # found, to be refused as not special
    common = {}
    for role, names in COMMON_NAMES.items():
        found = [n for n in names if n in specials] or [n for n in names if n in others]
        if found:
            common[role] = found[0]
    roles = {}
    for source in (common, own, *reversed(given)):
        roles.update({role: token for role, token in source.items() if token})
    return roles


def vocabulary(tokenizer: Tokenizer, *given: dict) -> Vocabulary:
    """The tokenizer's roles (``find_roles``; ``given``: role -> token or id, first wins), frame and
    special set."""
    given = [
        {r: (tokenizer.id_to_token(t) if isinstance(t, int) else t) for r, t in g.items()} for g in given
    ]
    text = tokenizer.to_str()
    roles = find_roles(text, *given)
    ids = {}
    for role, token in roles.items():
        ids[role] = tokenizer.token_to_id(token)
        if ids[role] is None:
            raise TokenizerError(f"its {role} token {token!r} is not in its vocabulary")
    frame = _frame(tokenizer, text)
    needed = ("mask", "pad") if frame is not None else ("mask", "pad", "cls", "sep")
    missing = [role for role in needed if role not in ids]
    if missing:
        what = ", ".join(f"{role} ({' or '.join(COMMON_NAMES[role])})" for role in missing)
        framing = (
            "" if frame is not None else "; its post-processor frames no sequence, so cls and sep frame it"
        )
        raise TokenizerError(
            f"it has no special token for {what}{framing}: name them with --special_tokens "
            + ",".join(f"{role}=TOKEN" for role in missing)
        )
    frame = frame or frames.bert_frame(ids["cls"], ids["sep"])
    added = tokenizer.get_added_tokens_decoder()
    special = {i for i, t in added.items() if t.special}
    if ids["mask"] not in special:
        raise TokenizerError(
            f"its mask token {roles['mask']!r} is not a special token (text could spell it): mark it "
            "special in tokenizer.json's added_tokens"
        )
    special.update(ids.values())
    special.update(frame.pair_ids())
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    # Ids may have gaps: the size every id fits under, not the count of tokens.
    size = max(tokenizer.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)
    wordpiece = isinstance(tokenizer.model, models.WordPiece)
    random_ids = np.array(
        sorted(i for t, i in vocab.items() if i not in special and not (wordpiece and _BRACKETED.match(t))),
        dtype=np.int32,
    )
    if random_ids.size == 0:
        raise TokenizerError("it has no ordinary tokens")
    return Vocabulary(
        size=size,
        pad_id=ids["pad"],
        cls_id=ids.get("cls"),
        sep_id=ids.get("sep"),
        mask_id=ids["mask"],
        unk_id=ids.get("unk"),
        special_ids=tuple(sorted(special)),
        random_ids=random_ids,
        frame=frame,
        continuation_ids=_continuation_ids(tokenizer, vocab),
        blank_ids=_blank_ids(tokenizer, vocab, special),
        tokens={role: roles[role] for role in ROLES if role in roles},
        frames=frame.describe(tokenizer.id_to_token),
        names={i: tokenizer.id_to_token(i) for i in (*ids.values(), *frame.pair_ids())},
        word_source=word_source(tokenizer),
    )


def _frame(tokenizer: Tokenizer, text: str) -> frames.Frame | None:
    """The post-processor's frame, checked against what the tokenizer encodes; None where it frames
    nothing (then BERT's frame of the cls and sep tokens, as a vocab.txt's)."""
    try:
        frame = frames.parse(text)
        if frame is not None:
            frames.check_by_encoding(frame, tokenizer)
        return frame
    except frames.FrameError as e:
        raise TokenizerError(str(e)) from None


def _blank_ids(tokenizer: Tokenizer, vocab: dict[str, int], special: set[int]) -> np.ndarray:
    """Ordinary tokens that decode to whitespace alone (or to nothing: Metaspace's bare "▁")."""
    if isinstance(tokenizer.model, models.WordPiece) or tokenizer.decoder is None:
        return np.zeros(0, np.int32)  # WordPiece has none; without a decoder, tokens are not text
    ids = sorted(i for i in vocab.values() if i not in special)
    texts = tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)
    return np.array([i for i, t in zip(ids, texts) if not t.strip()], dtype=np.int32)


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


# How a tokenizer's words are found, best first: its pre-tokenizer's word ids; the pieces its model marks
# as continuing a word (WordPiece's "##"); the word-start mark its tokens carry (SentencePiece's "▁",
# byte-level BPE's "Ġ") where nothing splits the text into words before the model.
WORD_SOURCES = ("words", "continuation", "prefix")
_WORD_MARKS = ("▁", "Ġ")
_PROBE = "the quick brown fox jumps over the lazy dog"


def word_source(tokenizer: Tokenizer) -> str | None:
    """Which of WORD_SOURCES finds this tokenizer's words; None where none does (then whole-word and span
    masking cannot be done).

    WordPiece marks every piece after a word's first: its words are its pre-tokenizer's, read from the ids
    alone, which spares the job the encodings' word ids (a fifth of its time).
    """
    continuation = _continuation_ids(tokenizer, tokenizer.get_vocab(with_added_tokens=False)).size > 0
    if continuation and isinstance(tokenizer.model, models.WordPiece):
        return "continuation"
    probe = tokenizer.encode(_PROBE, add_special_tokens=False)
    if len({w for w in probe.word_ids if w is not None}) > 1:
        return "words"
    if continuation:
        return "continuation"
    if sum(t.startswith(_WORD_MARKS) for t in probe.tokens) > 1:
        return "prefix"
    return None


# Sources whose word starts are a function of each token id alone: the mask step reads them off the ids,
# so they need not travel with the tokens through packing and grouping.
ID_WORD_SOURCES = ("continuation", "tokens")


def id_word_starts(vocab: Vocabulary, source: str) -> np.ndarray:
    """bool [size]: whether a token starts a word, for ID_WORD_SOURCES: every token but WordPiece's
    continuations; never the frame's tokens or the pad, which are no text."""
    lookup = np.ones(vocab.size, dtype=bool)
    if source == "continuation":
        lookup[vocab.continuation_ids] = False
    lookup[[vocab.pad_id, *vocab.frame.pair_ids()]] = False
    return lookup


def word_start_lookup(tokenizer: Tokenizer, source: str) -> np.ndarray | None:
    """bool [vocab size]: the tokens that carry a word-start mark ("▁", "Ġ"), for the "prefix" source;
    None for "words", which the encodings give (the ``ID_WORD_SOURCES`` are read off the ids later)."""
    if source != "prefix":
        return None
    lookup = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=bool)
    lookup[
        [i for t, i in tokenizer.get_vocab(with_added_tokens=False).items() if t.startswith(_WORD_MARKS)]
    ] = True
    return lookup


def encode_with_word_starts(
    tokenizer: Tokenizer, texts: list[str], lookup: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and, per token, whether it begins a word: from the encodings' word ids, or where
    ``lookup`` (``word_start_lookup``) is given, from the ids (a text's first token always begins one)."""
    if lookup is None:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings], [_word_starts(e) for e in encodings]
    ids = encode_batch(tokenizer, texts)
    starts = [lookup[i] for i in ids]
    for s in starts:
        s[:1] = True
    return ids, starts


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
    source: int = 0  # the build's source the documents were read from

    @property
    def nbytes(self) -> int:
        ids = sum(t.nbytes for t in self.token_ids)
        return ids if self.word_starts is None else ids + ids // 4  # a byte of word start per 4-byte id
