"""``mlmprep train-tokenizer``: a BERT-style WordPiece tokenizer from text files.

The files are streamed document by document into tokenizers' trainer, so the
corpus is never held in memory as a whole.
"""

from apache_beam.io.filesystems import FileSystems
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms.documents import buffered, iter_text_documents

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _documents(paths, input_format):
    for path in paths:
        with FileSystems.open(path) as raw:
            for pieces in iter_text_documents(buffered(raw), input_format):
                yield "".join(pieces)


def train(paths, *, vocab_size: int = 30522, lowercase: bool = True, input_format: str = "text") -> Tokenizer:
    """Trains WordPiece with BERT's normalizer, pre-tokenizer and special tokens."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # Rare characters (a few CJK ones in a Latin corpus) would otherwise
        # all join the alphabet and push the vocabulary past vocab_size.
        limit_alphabet=min(1000, vocab_size // 2),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_documents(paths, input_format), trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tokenizer


def main(argv):
    parser = CliParser(prog="mlmprep train-tokenizer", description=__doc__)
    parser.add_argument(
        "--input", action="append", required=True, help="Input file pattern; repeat for more."
    )
    parser.add_argument("--output", required=True, help="Where to write tokenizer.json.")
    parser.add_argument(
        "--vocab_size", type=int, default=30522, help="Vocabulary size, special tokens included."
    )
    parser.add_argument(
        "--input_format", default="text", choices=("text", "lines"), help="As for mlmprep run."
    )
    parser.add_argument(
        "--nolowercase", dest="lowercase", action="store_false", help="Keep case (a cased model)."
    )
    args = parser.parse_args(argv)
    if args.vocab_size < len(SPECIAL_TOKENS) + 1:
        raise UsageError(f"--vocab_size must be more than {len(SPECIAL_TOKENS)}, got {args.vocab_size}")
    paths = []
    for pattern in args.input:
        matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not matched:
            raise UsageError(f"--input {pattern} matches no file")
        paths += sorted(matched)
    tokenizer = train(
        paths, vocab_size=args.vocab_size, lowercase=args.lowercase, input_format=args.input_format
    )
    with FileSystems.create(args.output) as f:
        f.write(tokenizer.to_str(pretty=True).encode("utf-8"))
    print(f"wrote {args.output}: {tokenizer.get_vocab_size()} tokens")
