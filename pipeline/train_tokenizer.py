"""``mlmprep train-tokenizer``: a WordPiece (BERT), byte-level BPE (RoBERTa) or Unigram (XLM-R) tokenizer
from text files, with its family's special tokens and frame.

The files are streamed document by document into tokenizers' trainer, so the
corpus is never held in memory as a whole. Beside ``tokenizer.json`` go
``tokenizer_config.json`` and ``special_tokens_map.json``, so that the folder
loads in transformers' ``AutoTokenizer`` with the right mask token.
``--output`` names either the tokenizer file (a name ending in ``.json``: the
two config files go beside it) or a folder that holds all three (any other
name, or an existing folder); ``mlmprep run --tokenizer`` takes either
(``tokenizer_path``).
"""

import os
import posixpath

from apache_beam.io.filesystems import FileSystems
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import tokenize, tokenizer_files
from mlmprep.transforms.sources import buffered
from mlmprep.transforms.text_input import iter_text_documents

MODELS = ("wordpiece", "bpe", "unigram")
# Each family's special tokens by role, in the order they take the first ids.
FAMILY_SPECIALS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},  # BERT
    "bpe": {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"},  # RoBERTa
    "unigram": {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"},  # XLM-R
}
SPECIAL_TOKENS = tuple(FAMILY_SPECIALS["wordpiece"].values())
TOKENIZER_FILE = "tokenizer.json"


def _documents(paths, input_format):
    for path in paths:
        with FileSystems.open(path) as raw:
            for pieces in iter_text_documents(buffered(raw), input_format):
                yield "".join(pieces)


def _frame(roles: dict[str, str]) -> tuple[str, str]:
    """RoBERTa's frame for its names (``<s> A </s></s> B </s>``), BERT's for any other
    (``[CLS] A [SEP] B:1 [SEP]:1``: ALBERT, DeBERTa-v3 and ModernBERT name theirs so)."""
    cls, sep = roles["cls"], roles["sep"]
    if cls == "<s>":
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}"
    else:
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} $B:1 {sep}:1"
    return single, pair


def train(
    paths,
    *,
    vocab_size: int = 30522,
    lowercase: bool = True,
    input_format: str = "text",
    model: str = "wordpiece",
    special_tokens: dict[str, str] | None = None,
) -> Tokenizer:
    """A tokenizer of the family ``model`` trained on ``paths``, its roles ``roles(model, special_tokens)``.

    wordpiece: BERT's normalizer (``lowercase``), pre-tokenizer and names. bpe: byte-level BPE as
    RoBERTa's (cased, every byte in the alphabet, so any text round-trips). unigram: SentencePiece-style
    as XLM-R's (NMT and NFKC normalization, Metaspace ``▁``). ``special_tokens`` renames roles.
    """
    roles = family_roles(model, special_tokens)
    # The mask takes the space before it, as RoBERTa's: "a <mask>" is two tokens, not three.
    specials = [
        AddedToken(token, lstrip=model != "wordpiece" and role == "mask", special=True, normalized=False)
        for role, token in roles.items()
    ]
    common = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if model == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=roles["unk"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        # Rare characters (a few CJK ones in a Latin corpus) would otherwise
        # all join the alphabet and push the vocabulary past vocab_size.
        trainer = trainers.WordPieceTrainer(**common, limit_alphabet=min(1000, vocab_size // 2))
    elif model == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(**common, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(**common, unk_token=roles["unk"])
    tokenizer.train_from_iterator(_documents(paths, input_format), trainer=trainer)
    single, pair = _frame(roles)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single,
        pair=pair,
        special_tokens=[(roles[r], tokenizer.token_to_id(roles[r])) for r in ("cls", "sep")],
    )
    return tokenizer


def family_roles(model: str, special_tokens: dict[str, str] | None = None) -> dict[str, str]:
    """Role -> token of a family, ``special_tokens`` renaming any."""
    return {**FAMILY_SPECIALS[model], **(special_tokens or {})}


def files(tokenizer: Tokenizer, roles: dict[str, str]) -> dict[str, str]:
    """tokenizer.json and transformers' two files naming its special tokens."""
    vocab = tokenize.vocabulary(tokenizer, roles)
    return tokenizer_files.transformers_files(tokenizer, vocab)


def _dirname(path: str) -> str:
    return posixpath.dirname(path) if "://" in path else os.path.dirname(path)


def _is_folder(path: str) -> bool:
    return path.endswith("/") or ("://" not in path and os.path.isdir(path))


def output_file(output: str) -> str:
    """Where ``--output`` puts tokenizer.json: ``output`` itself where it ends in ``.json`` (the config files
    go beside it), else the ``tokenizer.json`` in the folder ``output`` (created if absent)."""
    if output.endswith(".json") and not _is_folder(output):
        return output
    return FileSystems.join(output.rstrip("/") or "/", TOKENIZER_FILE)


def tokenizer_path(path: str) -> str:
    """The tokenizer file that ``--tokenizer PATH`` names: the ``tokenizer.json`` in PATH where PATH is a
    folder (as ``train-tokenizer --output NAME`` writes), else PATH itself (a tokenizer.json or vocab.txt).
    A remote PATH (``gs://``) is a folder where it ends in "/", or holds a tokenizer.json and names no
    file of its own (no ``.json`` or ``.txt`` suffix)."""
    inside = FileSystems.join(path.rstrip("/") or "/", TOKENIZER_FILE)
    if _is_folder(path):
        return inside
    if "://" in path and not path.endswith((".json", ".txt")) and FileSystems.exists(inside):
        return inside
    return path


def _special_tokens(text: str | None) -> dict[str, str]:
    try:
        return tokenize.parse_roles(text or "")
    except ValueError as e:
        raise UsageError(f"--special_tokens: {e}") from None


def main(argv):
    parser = CliParser(prog="mlmprep train-tokenizer", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", action="append", required=True, help="Input file pattern; repeat for more."
    )
    parser.add_argument(
        "--output",
        required=True,
        help="A folder to write tokenizer.json, tokenizer_config.json and special_tokens_map.json in "
        "(created if absent), or a file name ending in .json for the tokenizer, the other two beside it.",
    )
    parser.add_argument(
        "--model",
        default="wordpiece",
        help="wordpiece: BERT's; bpe: byte-level BPE with RoBERTa's <s> <pad> </s> <unk> <mask> and frame; "
        "unigram: SentencePiece-style Unigram with XLM-R's.",
    )
    parser.add_argument(
        "--special_tokens",
        default=None,
        help="Other names for the family's special tokens, e.g. cls=[CLS],sep=[SEP],pad=[PAD],mask=[MASK],"
        "unk=[UNK] for byte-level BPE with BERT's names (ModernBERT's); with cls other than <s> the frame "
        "is BERT's ([CLS] A [SEP] B [SEP]).",
    )
    parser.add_argument(
        "--vocab_size", type=int, default=30522, help="Vocabulary size, special tokens included."
    )
    parser.add_argument(
        "--input_format", default="text", choices=("text", "lines"), help="As for mlmprep run."
    )
    parser.add_argument(
        "--nolowercase",
        dest="lowercase",
        action="store_false",
        help="wordpiece: keep case (a cased model). bpe and unigram are always cased.",
    )
    args = parser.parse_args(argv)
    if args.model not in MODELS:
        raise UsageError(f"--model must be one of {', '.join(MODELS)}, got {args.model!r}")
    given = _special_tokens(args.special_tokens)
    if args.vocab_size < len(SPECIAL_TOKENS) + 1:
        raise UsageError(f"--vocab_size must be more than {len(SPECIAL_TOKENS)}, got {args.vocab_size}")
    tokenizer_file = output_file(args.output)
    if "://" not in args.output and os.path.isfile(args.output) and tokenizer_file != args.output:
        raise UsageError(
            f"--output {args.output} is a file: name the tokenizer file NAME.json, or a folder to write it in"
        )
    paths = []
    for pattern in args.input:
        matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not matched:
            raise UsageError(f"--input {pattern} matches no file")
        paths += sorted(matched)
    tokenizer = train(
        paths,
        vocab_size=args.vocab_size,
        lowercase=args.lowercase,
        input_format=args.input_format,
        model=args.model,
        special_tokens=given,
    )
    folder = _dirname(tokenizer_file)
    if "://" not in folder:
        os.makedirs(folder or ".", exist_ok=True)
    texts = files(tokenizer, family_roles(args.model, given))
    written = []
    # A WordPiece vocab.txt is the tokenizer again: tokenizer.json is the one written.
    for name in (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json"):
        path = tokenizer_file if name == TOKENIZER_FILE else FileSystems.join(folder or ".", name)
        with FileSystems.create(path) as f:
            f.write(texts[name].encode("utf-8"))
        written.append(path)
    print(
        f"wrote {written[0]} ({args.model}, {tokenizer.get_vocab_size():,} tokens), "
        f"{' and '.join(written[1:])}; use it as mlmprep run --tokenizer {args.output}"
    )
