"""Every data-side setting of ``mlmprep run``, defined once.

A setting has a name (the flag's, and the build file's key), a type, a
default, its choices, its help and its checks; the settings are grouped in
frozen dataclasses by what they decide (input, tokenizer, packing, pairs,
masking, split, output). Everything else is made from these definitions:
``mlmprep run``'s flags, the trainer's masking flags and docs/reference.md
(``settings_text``), the build file's keys and how its values parse
(``coerce``), a recipe (a partial set of values laid under the user's) and
the manifest's settings section (``Settings.flat`` and ``Settings.from_flat``).
No Beam here: the trainer and the output readers use it too.
"""

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Iterator

from mlmprep.pipeline.setting_spec import SettingError, Spec, in_range, setting
from mlmprep.transforms import documents, mds, pack, pairs, shards, sources
from mlmprep.transforms import near_dedup as near_dedup_lib
from mlmprep.transforms.mask import MASK_COUNTS, MASKINGS, SPAN_LENGTHS, MaskingConfig, default_predictions

MAX_SEQ_LENGTH = 8192  # long-context encoders train at up to this length


def _formats(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class Input:
    input: tuple[str, ...] = setting(
        (), "Input file pattern (local, gs://, ...); repeat for more. .gz, .bz2 and .zst are "
        "decompressed by suffix.", required=True
    )  # fmt: skip
    input_format: str = setting(
        "auto",
        "text: documents separated by blank lines; lines: one document per line; jsonl, parquet: text in "
        "--text_field. auto: by file suffix (.jsonl, .ndjson, .json, .parquet, else text).",
        choices=("auto", *documents.FORMATS),
    )
    text_field: str = setting("text", "JSONL key or Parquet column of the text.")
    split_input_mb: float = setting(
        sources.RANGE_BYTES / (1 << 20),
        "Uncompressed text, JSONL and Parquet files larger than this are read as byte ranges of about this "
        "size, spread over the workers (Parquet: the row groups that start in the range). It does not "
        "change the output.",
        check=in_range(0, open_low=True),
    )
    dedup: bool = setting(
        True, "Drop exact duplicate documents (whitespace-normalized); --nodedup keeps them."
    )
    min_doc_tokens: int = setting(0, "Drop (and count) documents with fewer tokens.", check=in_range(0))
    near_dedup: bool = setting(
        False,
        "Drop near-duplicate documents (after exact deduplication): MinHash signatures of their shingles, "
        "candidates from shared band keys (LSH), confirmed by the signatures' Jaccard estimate, clustered; "
        "each cluster keeps its document of smallest key (docs/near-dedup.md).",
    )
    near_dedup_shingle: int = setting(
        5, "Words per shingle (characters in text of scripts written without spaces).", check=in_range(1, 64)
    )
    near_dedup_hashes: int = setting(
        112, "MinHash signature length: --near_dedup_bands x --near_dedup_rows.", check=in_range(2, 1024)
    )
    near_dedup_bands: int = setting(14, "LSH bands: documents sharing one are candidates.", check=in_range(1))
    near_dedup_rows: int = setting(8, "Signature values per band.", check=in_range(1, 64))
    near_dedup_threshold: float = setting(
        0.75,
        "Least Jaccard estimate of a confirmed pair (the bands' S-curve midpoint, (1/bands)^(1/rows), is "
        "0.72 at 14 x 8).",
        check=in_range(0, 1, open_low=True, open_high=True),
    )
    decontaminate: str | None = setting(
        None,
        "Evaluation text (a file pattern; an item per line, or JSONL): drop every document sharing an n-gram "
        "of --decontaminate_ngram words with an item, counted as contaminated.",
        default_text="none",
    )
    decontaminate_ngram: int = setting(
        near_dedup_lib.DECONTAMINATION_NGRAM,
        "Words per n-gram of --decontaminate (GPT-3's 13).",
        check=in_range(1, 64),
    )

    def near_dedup_config(self) -> near_dedup_lib.NearDedupConfig | None:
        if not self.near_dedup:
            return None
        return near_dedup_lib.NearDedupConfig(
            shingle=self.near_dedup_shingle,
            hashes=self.near_dedup_hashes,
            bands=self.near_dedup_bands,
            rows=self.near_dedup_rows,
            threshold=self.near_dedup_threshold,
        )


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    tokenizer: str = setting(
        None, "A tokenizers tokenizer.json (or a folder holding one) or a WordPiece vocab.txt.", required=True
    )
    special_tokens: str | None = setting(
        None,
        "The tokenizer's special tokens by role, where it does not say them itself: "
        "mask=<mask>,pad=<pad>,cls=<s>,sep=</s>,unk=<unk> (any of them). Otherwise taken from a "
        "tokenizer_config.json or special_tokens_map.json beside the tokenizer, its model's unk and "
        "padding's pad, then the common names ([MASK] or <mask>, ...) among its special tokens.",
        default_text="from the tokenizer",
    )


@dataclasses.dataclass(frozen=True)
class Packing:
    max_seq_length: int = setting(
        128,
        f"Tokens per sequence, the frame's ([CLS] and [SEP]) included; up to {MAX_SEQ_LENGTH:,}.",
        check=in_range(3, MAX_SEQ_LENGTH),
    )
    mode: str = setting(
        "document",
        "document: sequences never cross documents (a document's tail pads); concat: documents joined by "
        "the separator fill every sequence, attention crossing them; best_fit: each document (or piece of "
        "a long one) framed on its own, several to a sequence by best fit, position_ids restarting at "
        "each so that attention need not cross them.",
        name="packing",
        choices=pack.PACKINGS,
    )

    @property
    def best_fit(self) -> bool:
        """Whether a sequence holds several framed pieces (position_ids restart at each)."""
        return self.mode == "best_fit"


@dataclasses.dataclass(frozen=True)
class Pairs:
    mode: str = setting(
        "none",
        "none: single segments (RoBERTa); nsp: [CLS] A [SEP] B [SEP] with B the next sentences or, half "
        "the time, another document's (BERT); sop: A and B consecutive, swapped half the time (ALBERT). "
        "Sentences are lines, split further by sentencex.",
        name="sentence_pairs",
        choices=pairs.MODES,
    )
    short_seq_prob: float = setting(
        0.1,
        "With sentence pairs: the share of documents whose pairs aim at a random shorter length (BERT's).",
        check=in_range(0, 1),
    )
    sentence_language: str = setting(
        "en",
        "With sentence pairs: the language code whose rules sentencex splits lines by (its fallbacks cover "
        "~300 languages; CJK and other scripts' terminators are split in any).",
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclasses.dataclass(frozen=True)
class Masking:
    mode: str = setting(
        "token",
        "token: tokens one by one (BERT); word: all pieces of a word together, one replacement decision "
        "per word; span: spans of whole words, their lengths from a truncated geometric distribution "
        "(SpanBERT), one decision per span; none: no masks written, the word starts kept, for trainers "
        "that mask each batch (mlmprep train, transformers' collators). --whole_word_masking is --masking "
        "word.",
        name="masking",
        choices=MASKINGS,
    )
    masked_lm_prob: float = setting(
        0.15, "Fraction of tokens selected for prediction.", check=in_range(0, 1, open_low=True)
    )
    max_predictions_per_seq: int | None = setting(
        None,
        "Cap on masked positions per sequence. Default: max(20, ceil(max_seq_length * masked_lm_prob)) "
        "(BERT's 20 at 128 tokens, 77 at 512), at most max_seq_length - 2; a cap that holds the masked "
        "share under nine tenths of the asked rate is one warning line.",
        default_text="from the length and rate",
        check=in_range(1),
    )
    mask_token_ratio: float = setting(
        0.8, "Of the selected, the share replaced by the mask token.", check=in_range(0, 1)
    )
    random_token_ratio: float = setting(
        0.1, "Of the selected, the share replaced by a random token.", check=in_range(0, 1)
    )
    mask_count: str = setting(
        "exact",
        "exact: min(max_predictions_per_seq, max(1, round(n * p))) per sequence (BERT); bernoulli: each "
        "token (word) selected with probability p, capped (Hugging Face).",
        choices=MASK_COUNTS,
    )
    span_p: float = setting(
        0.2,
        "Span masking: p of the geometric distribution of span lengths in words (SpanBERT's 0.2).",
        check=in_range(0, 1, open_low=True),
    )
    span_lengths: str = setting(
        "geometric",
        "Span masking: span lengths in words. geometric: Geometric(--span_p) truncated to "
        "1..--max_span_words (SpanBERT); harmonic: p(n) proportional to 1/n up to --max_span_words "
        "(ALBERT's n-grams, with 3).",
        choices=SPAN_LENGTHS,
    )
    max_span_words: int = setting(
        10,
        "Span masking: the longest span, in words; lengths are truncated to 1..this and renormalised "
        "(mean 3.8 words with p 0.2).",
        check=in_range(1),
    )
    dupe_factor: int = setting(1, "Differently masked copies of each sequence.", check=in_range(1))
    random_seed: int = setting(
        12345,
        "Seed of all masking and of the shard order.",
        check=in_range(0, 2**63, open_high=True, what="in [0, 2**63)"),
    )

    @property
    def unmasked(self) -> bool:
        """Whether the output holds no masks: the trainer masks each batch."""
        return self.mode == "none"

    @property
    def by_words(self) -> bool:
        return self.mode in ("word", "span")

    def config(self) -> MaskingConfig:
        """The mask step's parameters."""
        return MaskingConfig(
            masked_lm_prob=self.masked_lm_prob,
            max_predictions_per_seq=self.max_predictions_per_seq,
            mask_token_ratio=self.mask_token_ratio,
            random_token_ratio=self.random_token_ratio,
            masking=self.mode,
            mask_count=self.mask_count,
            span_p=self.span_p,
            max_span_words=self.max_span_words,
            span_lengths=self.span_lengths,
        )


@dataclasses.dataclass(frozen=True)
class Split:
    validation_fraction: float = setting(
        0.0,
        "Share of documents, by a hash of their text, in the validation split.",
        check=in_range(0, 1, open_high=True),
    )


def _mds_compression(text: str) -> str | None:
    try:
        mds.parse_compression(text)
    except ValueError as e:
        return str(e)
    return None


@dataclasses.dataclass(frozen=True)
class Output:
    output: str = setting(
        None, "Output directory for shards, tokenizer.json and manifest.json.", required=True
    )
    formats: tuple[str, ...] = setting(
        shards.DEFAULT_FORMATS,
        "Comma-separated, any of tfrecord, parquet, arrayrecord (Grain; the [arrayrecord] extra) and mds "
        "(MosaicML Streaming: mds/<split>/ with its index.json).",
        choices=shards.FORMATS,
        parse=_formats,
    )
    mds_compression: str = setting(
        mds.DEFAULT_COMPRESSION,
        "How --formats mds compresses each shard file: zstd, gz or bz2, optionally with a level (zstd:7), "
        "or none.",
        check=_mds_compression,
    )
    num_shards: int | None = setting(
        None,
        "Shards of the train split (validation: ceil(num_shards * validation_fraction)). Default: from "
        "--target_shard_mb.",
        default_text="from the size",
        check=in_range(1),
    )
    target_shard_mb: float = setting(
        128,
        "Without --num_shards, each split gets as many shards as make TFRecord shards of about this size.",
        check=in_range(0, open_low=True),
    )
    overwrite: bool = setting(
        False,
        "Replace an existing non-empty output: the build there stays whole until the new one is complete, "
        "then its files are removed.",
    )
    grouping: str = setting(
        "auto",
        "How records reach their shards (and documents their concat groups): shuffle, the runner's "
        "GroupByKey (distributed runners spill it to disk); run_files, key-sorted run files under the "
        "output's temporary folder, merged per shard (bounded memory on the in-memory local runner); auto: "
        "run_files on the local runner, shuffle elsewhere. The output is the same.",
        choices=("auto", *shards.GROUPINGS),
    )


def _weights(text: str) -> dict:
    """``web=1,books=3`` as a flag gives it: source name -> weight."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(text)
    return {name.strip(): value.strip() for name, value in pairs}


def _check_weights(weights: dict | None) -> str | None:
    if weights is None:
        return None
    if any(w < 0 for w in weights.values()):
        bad = next(name for name, w in weights.items() if w < 0)
        return f"must not be negative, got {bad}: {weights[bad]}"
    if not any(weights.values()):
        return "must give some source a weight above 0"
    return None


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A phase's sources, shares and budget (a build file's ``sources`` and ``phases``; docs/mixtures.md).
    At the top of a build file they are every phase's unless the phase gives its own."""

    tokens: int | None = setting(
        None,
        "The phase's token budget: tokens of its documents in the train split (the frame's special tokens "
        "and padding not counted), shared among its sources; sources below their share are repeated, "
        "those above it cut. Default: every document once.",
        default_text="every document once",
        check=in_range(1),
    )
    temperature: float | None = setting(
        None,
        "Each source's share of --tokens proportional to its weight times its natural tokens to this power "
        "(XLM-R's 0.3, mBERT's 0.7); 1 is the natural mix.",
        default_text="1",
        check=in_range(0),
    )
    weights: dict | None = setting(
        None,
        "Each source's share of --tokens proportional to its weight here (web=1,books=3; a mapping in the "
        "build file); a source not named is not in the phase. Not with --temperature.",
        default_text="by temperature",
        parse=_weights,
        check=_check_weights,
    )
    max_repeats: float | None = setting(
        None,
        "The most epochs of any source (a source's own max_repeats wins): a share that needs more is an "
        "error naming the source.",
        default_text="no limit",
        check=in_range(0, open_low=True),
    )
    max_doc_tokens: int | None = setting(
        None,
        "The phase uses only documents of at most this many tokens (with --min_doc_tokens, at least); the "
        "others stay in the build for its other phases.",
        default_text="no limit",
        check=in_range(1),
    )

    @property
    def natural(self) -> bool:
        """Whether the mix is the sources' own (every document once, unless a budget says otherwise)."""
        return self.weights is None and self.temperature in (None, 1.0)


@dataclasses.dataclass(frozen=True)
class Build:
    recipe: str | None = setting(
        None,
        "A published recipe's data settings, by name (docs/recipes.md lists them and what each sets); "
        "every setting given wins.",
        default_text="none",
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a run, resolved: what the job, the manifest and every reader of an output use."""

    input: Input = Input()
    tokenizer: Tokenizer = Tokenizer()
    packing: Packing = Packing()
    pairs: Pairs = Pairs()
    masking: Masking = Masking()
    split: Split = Split()
    output: Output = Output()
    mixture: Mixture = Mixture()
    build: Build = Build()

    def flat(self) -> dict:
        """Every setting by name, as the build file and the manifest write them."""
        values = {}
        for group, field in _fields():
            value = getattr(getattr(self, group), field.name)
            values[flag_name(field)] = list(value) if isinstance(value, tuple) else value
            if isinstance(value, dict):
                values[flag_name(field)] = dict(value)
        return values

    @classmethod
    def from_flat(cls, values: dict) -> "Settings":
        """Settings from values by name (each already of its type), the others at their defaults;
        unchecked: ``resolve`` checks and derives."""
        groups = {}
        for group, field in _fields():
            name = flag_name(field)
            if name in values:
                value = values[name]
                groups.setdefault(group, {})[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**{g: dataclasses.replace(getattr(cls(), g), **v) for g, v in groups.items()})


# Flags that stand for a value of another setting.
ALIASES = {"whole_word_masking": ("masking", "word")}


def _fields() -> Iterator[tuple[str, dataclasses.Field]]:
    for group in dataclasses.fields(Settings):
        for field in dataclasses.fields(group.type):
            yield group.name, field


def flag_name(field: dataclasses.Field) -> str:
    """The setting's name: its flag's and its build-file key's."""
    return field.metadata["spec"].name or field.name


def spec(name: str) -> Spec:
    return SETTINGS[name][1].metadata["spec"]


# Every setting by name: (its group, its dataclass field).
SETTINGS: dict[str, tuple[str, dataclasses.Field]] = {flag_name(f): (g, f) for g, f in _fields()}


def kind(name: str) -> tuple[type, bool]:
    """(the setting's scalar type: str, int, float, bool or tuple; whether it may be None)."""
    annotation = SETTINGS[name][1].type
    optional = False
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation, optional = args[0], True
    if typing.get_origin(annotation) in (tuple, dict) or annotation is dict:
        return typing.get_origin(annotation) or annotation, optional
    return annotation, optional


def _expected(scalar: type) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "text",
        tuple: "a list",
        dict: "a mapping of names to numbers",
    }[scalar]


def coerce(name: str, value, label: str | None = None):
    """A setting's value from a flag's text or a build file's value, parsed by the setting's type as the
    flag's text would be; a value of another type is a SettingError naming the setting (as ``label``:
    the flag by default)."""
    scalar, optional = kind(name)
    parse = spec(name).parse

    def wrong():
        return SettingError(f"{label or '--' + name} must be {_expected(scalar)}, got {value!r}", (name,))

    if value is None:
        if optional:
            return None
        raise wrong()
    if scalar is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if isinstance(value, bool):  # YAML's true for a number or text: say so rather than read it as 1
        raise wrong()
    if scalar is dict:  # names -> non-negative numbers (a phase's weights)
        if isinstance(value, str):
            try:
                value = parse(value)
            except ValueError:
                raise wrong() from None
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong()
        try:
            parsed = {k: float(v.strip() if isinstance(v, str) else v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise wrong() from None
        if any(isinstance(v, bool) or not math.isfinite(w) for v, w in zip(value.values(), parsed.values())):
            raise wrong()
        return parsed
    if scalar is tuple:
        if isinstance(value, str):
            items = parse(value) if parse else (value,)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = tuple(value)
        else:
            raise wrong()
        return tuple(dict.fromkeys(items))
    if scalar is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if isinstance(value, str):
        try:
            value = scalar(value.strip())
        except ValueError:
            raise wrong() from None
    if scalar is int and not isinstance(value, int):
        raise wrong()
    if scalar is float:
        # A number given is a float, as argparse's type=float made it (so a fingerprint stays the same);
        # a default is as written.
        try:
            value = float(value)
        except (TypeError, OverflowError):
            raise wrong() from None
        if not math.isfinite(value):
            raise wrong()
    return value


def check_value(name: str, value) -> None:
    """A setting's value on its own: its choices and its check."""
    s = spec(name)
    items = value if isinstance(value, (tuple, dict)) else (value,)
    if s.choices and value is not None:
        bad = [v for v in items if v not in s.choices]
        if bad or not items:
            shown = bad[0] if bad else repr(value)
            raise SettingError(f"--{name} must be one of {', '.join(s.choices)}, got {shown}", (name,))
    problem = s.check(value) if s.check else None
    if problem:
        raise SettingError(f"--{name} {problem}", (name,))


def _require(condition: bool, message: str, *names: str) -> None:
    if not condition:
        raise SettingError(message, names)


def resolve(values: dict, *, warn: bool = True) -> Settings:
    """Checked settings from values by name (parsed, see ``coerce``), with the values derived from others.

    ``values`` need not hold every setting: the others take their defaults. A value no run can take is a
    SettingError naming the settings it concerns.
    """
    values = {name: coerce(name, value) for name, value in values.items()}
    for name, value in values.items():
        check_value(name, value)
    for name in SETTINGS:
        if spec(name).required and not values.get(name):
            raise SettingError(f"--{name} is required", (name,))
    s = Settings.from_flat(values)
    length, m = s.packing.max_seq_length, s.masking
    _check_masking(m, length)
    _require(
        not m.unmasked or m.dupe_factor == 1,
        f"--dupe_factor {m.dupe_factor} with --masking none writes identical copies: the trainer masks every "
        "epoch anew (leave --dupe_factor at 1)",
        "dupe_factor",
        "masking",
    )
    i = s.input
    _require(
        i.near_dedup_bands * i.near_dedup_rows == i.near_dedup_hashes,
        f"--near_dedup_bands x --near_dedup_rows must be --near_dedup_hashes: {i.near_dedup_bands} x "
        f"{i.near_dedup_rows} is not {i.near_dedup_hashes}",
        "near_dedup_bands",
        "near_dedup_rows",
        "near_dedup_hashes",
    )
    _require(
        i.near_dedup_hashes % 2 == 0,
        f"--near_dedup_hashes must be even (its values are kept 4 bits each, two to a byte), got "
        f"{i.near_dedup_hashes}",
        "near_dedup_hashes",
    )
    _require(
        s.mixture.weights is None or s.mixture.temperature is None,
        "--weights and --temperature each decide the mixture: give one",
        "weights",
        "temperature",
    )
    _require(
        s.mixture.max_doc_tokens is None or s.mixture.max_doc_tokens >= s.input.min_doc_tokens,
        f"--max_doc_tokens {s.mixture.max_doc_tokens} is below --min_doc_tokens {s.input.min_doc_tokens}: "
        "no document is both",
        "max_doc_tokens",
        "min_doc_tokens",
    )
    _require(
        not s.pairs.enabled or s.packing.mode == "document",
        f"--packing {s.packing.mode} packs documents into single segments; --sentence_pairs packs pairs in "
        "their own frame by BERT's rules",
        "packing",
        "sentence_pairs",
    )
    if m.max_predictions_per_seq is None:
        cap = default_predictions(length, m.masked_lm_prob)
        return dataclasses.replace(s, masking=dataclasses.replace(m, max_predictions_per_seq=cap))
    share = m.max_predictions_per_seq / length
    if warn and share < 0.9 * m.masked_lm_prob:
        logging.warning(
            "mlmprep: --max_predictions_per_seq %d at --max_seq_length %d masks at most %.1f%% of a full "
            "sequence, not the %g%% --masked_lm_prob asks for (without the flag the cap follows the length)",
            m.max_predictions_per_seq,
            length,
            100 * share,
            100 * m.masked_lm_prob,
        )
    return s


def unalias(given: dict) -> dict:
    """Values by name with the alias flags (``--whole_word_masking``) made the values they stand for; an
    alias that contradicts its setting's own value is a SettingError."""
    given = dict(given)
    for alias, (name, value) in ALIASES.items():
        if not given.pop(alias, False):
            continue
        _require(
            given.get(name, value) == value,
            f"--{alias} is --{name} {value}; it contradicts --{name} {given.get(name)}",
            alias,
            name,
        )
        given[name] = value
    return given


def _check_masking(m: Masking, length: int) -> None:
    """What the masking settings must hold together, at a sequence length."""
    _require(
        m.mask_token_ratio + m.random_token_ratio <= 1,
        "--mask_token_ratio + --random_token_ratio must be at most 1, "
        f"got {m.mask_token_ratio + m.random_token_ratio}",
        "mask_token_ratio",
        "random_token_ratio",
    )
    _require(
        m.max_predictions_per_seq is None or m.max_predictions_per_seq <= length - 2,
        f"--max_predictions_per_seq must be in [1, {length - 2}] at --max_seq_length {length}, got "
        f"{m.max_predictions_per_seq}",
        "max_predictions_per_seq",
        "max_seq_length",
    )


def check_masking(m: Masking, max_seq_length: int, choices: tuple[str, ...] = MASKINGS) -> None:
    """The masking settings on their own at a sequence length (the trainer's masking in training)."""
    _require(m.mode in choices, f"--masking must be one of {', '.join(choices)}, got {m.mode}", "masking")
    for field in dataclasses.fields(Masking):
        check_value(flag_name(field), getattr(m, field.name))
    _check_masking(m, max_seq_length)


# The settings of ``mlmprep run``'s command line, in the order of the reference; the flags are these and
# the aliases.
RUN_FLAGS = (*SETTINGS, *ALIASES)
# The masking settings the trainer takes for masking in training (each defaults to the data's).
TRAIN_MASKING = (
    "masking",
    "masked_lm_prob",
    "mask_token_ratio",
    "random_token_ratio",
    "max_predictions_per_seq",
    "span_p",
    "span_lengths",
    "max_span_words",
)
