"""The flags of ``mlmprep run``, their defaults, and the check that no flag is unknown.

Every other flag is a Beam pipeline option; ``check_flags`` knows both.
"""

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from mlmprep.pipeline import recipes
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import documents, pack, pairs, shards, sources
from mlmprep.transforms.beam import groups
from mlmprep.transforms.mask import MASK_COUNTS, MASKINGS, SPAN_LENGTHS


def _formats(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [n for n in names if n not in shards.FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--formats takes a comma-separated subset of {','.join(shards.FORMATS)}, got {value!r}"
        )
    return names


class MlmPrepOptions(PipelineOptions):
    """Options of ``mlmprep run``; every other flag is a Beam pipeline option."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", action="append", help="Input file pattern (local, gs://, ...); repeat for more."
        )
        parser.add_argument("--output", help="Output directory for shards and manifest.json.")
        parser.add_argument(
            "--recipe",
            default=None,
            help=f"A published recipe's data settings ({', '.join(recipes.RECIPES)}); every flag given wins. "
            "The README's recipe table says what each sets.",
        )
        parser.add_argument("--tokenizer", help="A tokenizers tokenizer.json or a WordPiece vocab.txt.")
        parser.add_argument(
            "--special_tokens",
            default=None,
            help="The tokenizer's special tokens by role, where it does not say them itself: "
            "mask=<mask>,pad=<pad>,cls=<s>,sep=</s>,unk=<unk> (any of them). Otherwise taken from a "
            "tokenizer_config.json or special_tokens_map.json beside the tokenizer, its model's unk and "
            "padding's pad, then the common names ([MASK] or <mask>, ...) among its special tokens.",
        )
        parser.add_argument(
            "--input_format",
            default="auto",
            choices=("auto", *documents.FORMATS),
            help="text: documents separated by blank lines; lines: one document per line; "
            "jsonl, parquet: text in --text_field. auto: by file suffix (.jsonl, .parquet, else text).",
        )
        parser.add_argument("--text_field", default="text", help="JSONL key or Parquet column of the text.")
        parser.add_argument(
            "--split_input_mb",
            type=float,
            default=sources.RANGE_BYTES / (1 << 20),
            help="Uncompressed text, JSONL and Parquet files larger than this are read as byte ranges of "
            "about this size, spread over the workers (Parquet: the row groups that start in the range).",
        )
        parser.add_argument(
            "--dedup",
            dest="dedup",
            action="store_true",
            default=True,
            help="Drop exact duplicate documents (whitespace-normalized); the default.",
        )
        parser.add_argument("--nodedup", dest="dedup", action="store_false", help="Keep duplicate documents.")
        parser.add_argument(
            "--min_doc_tokens", type=int, default=0, help="Drop (and count) documents with fewer tokens."
        )
        parser.add_argument("--max_seq_length", type=int, default=128, help="Tokens per sequence.")
        parser.add_argument(
            "--max_predictions_per_seq",
            type=int,
            default=None,
            help="Cap on masked positions per sequence. Default: max(20, ceil(max_seq_length * "
            "masked_lm_prob)) (BERT's 20 at 128 tokens, 77 at 512), at most max_seq_length - 2.",
        )
        parser.add_argument(
            "--masked_lm_prob", type=float, default=0.15, help="Fraction of tokens selected for prediction."
        )
        parser.add_argument(
            "--mask_token_ratio",
            type=float,
            default=0.8,
            help="Of the selected, the share replaced by [MASK].",
        )
        parser.add_argument(
            "--random_token_ratio",
            type=float,
            default=0.1,
            help="Of the selected, the share replaced at random.",
        )
        parser.add_argument(
            "--masking",
            default=None,
            choices=MASKINGS,
            help="token: tokens one by one (BERT); word: all pieces of a word together, one replacement "
            "decision per word; span: spans of whole words, their lengths from a truncated geometric "
            "distribution (SpanBERT), one decision per span; none: no masks written, the word starts "
            "kept, for trainers that mask each batch (mlmprep train, transformers' collators). "
            "Default: token (word with --whole_word_masking).",
        )
        parser.add_argument(
            "--whole_word_masking",
            action="store_true",
            default=False,
            help="The same as --masking word.",
        )
        parser.add_argument(
            "--span_p",
            type=float,
            default=0.2,
            help="Span masking: p of the geometric distribution of span lengths in words (SpanBERT's 0.2).",
        )
        parser.add_argument(
            "--span_lengths",
            default="geometric",
            choices=SPAN_LENGTHS,
            help="Span masking: span lengths in words. geometric: Geometric(--span_p) truncated "
            "to 1..--max_span_words (SpanBERT); harmonic: p(n) proportional to 1/n up to --max_span_words "
            "(ALBERT's n-grams, with 3).",
        )
        parser.add_argument(
            "--max_span_words",
            type=int,
            default=10,
            help="Span masking: the longest span, in words; lengths are truncated to 1..this and "
            "renormalised (mean 3.8 words with p 0.2).",
        )
        parser.add_argument(
            "--mask_count",
            default="exact",
            choices=MASK_COUNTS,
            help="exact: min(max_predictions_per_seq, max(1, round(n * p))) per sequence (BERT); "
            "bernoulli: each token (word) selected with probability p, capped (Hugging Face).",
        )
        parser.add_argument(
            "--dupe_factor", type=int, default=1, help="Differently masked copies of each sequence."
        )
        parser.add_argument("--random_seed", type=int, default=12345, help="Seed of all masking.")
        parser.add_argument(
            "--packing",
            default="document",
            choices=pack.PACKINGS,
            help="document: sequences never cross documents (a document's tail pads); concat: documents "
            "joined by the separator fill every sequence, attention crossing them; best_fit: each document "
            "(or piece of a long one) framed on its own, several to a sequence by best fit, position_ids "
            "restarting at each so that attention need not cross them.",
        )
        parser.add_argument(
            "--sentence_pairs",
            default="none",
            choices=pairs.MODES,
            help="none: single segments (RoBERTa); nsp: [CLS] A [SEP] B [SEP] with B the next sentences or, "
            "half the time, another document's (BERT); sop: A and B consecutive, swapped half the time "
            "(ALBERT). Sentences are lines, split further by sentencex.",
        )
        parser.add_argument(
            "--short_seq_prob",
            type=float,
            default=0.1,
            help="With sentence pairs: the share of documents whose pairs aim at a random shorter length.",
        )
        parser.add_argument(
            "--sentence_language",
            default="en",
            help="With sentence pairs: the language code whose rules sentencex splits lines by (its "
            "fallbacks cover ~300 languages; CJK and other scripts' terminators are split in any).",
        )
        parser.add_argument(
            "--validation_fraction",
            type=float,
            default=0.0,
            help="Share of documents, by a hash of their text, in the validation split.",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=None,
            help="Shards of the train split (validation: ceil(num_shards * validation_fraction)). "
            "Default: from --target_shard_mb.",
        )
        parser.add_argument(
            "--target_shard_mb",
            type=float,
            default=128,
            help="Without --num_shards, each split gets as many shards as make TFRecord shards "
            "of about this size.",
        )
        parser.add_argument(
            "--formats", type=_formats, default=shards.FORMATS, help="Comma-separated: tfrecord,parquet."
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            default=False,
            help="Replace an existing non-empty output: the build there stays whole until the new one "
            "is complete, then its files are removed.",
        )
        parser.add_argument(
            "--grouping",
            default="auto",
            choices=("auto", *groups.MODES),
            help="How records reach their shards (and documents their concat groups): shuffle, the "
            "runner's GroupByKey (distributed runners spill it to disk); run_files, key-sorted run files "
            "under the output's temporary folder, merged per shard (bounded memory on the in-memory local "
            "runner); auto: run_files on the local runner, shuffle elsewhere. The output is the same.",
        )


def run_parser() -> argparse.ArgumentParser:
    """The options of ``mlmprep run`` alone (no Beam option), as Beam reads them; a bad value is a
    UsageError."""
    parser = CliParser(prog="mlmprep run", allow_abbrev=False)
    MlmPrepOptions._add_argparse_args(parser)
    return parser


def check_flags(argv: list[str]) -> None:
    """Parses argv with every known option; a bad value or unknown flag is a UsageError.

    Beam itself only logs and drops flags it does not know, so a typo such as
    ``--max_seq_lenght`` would otherwise run with the default.
    """
    parser = CliParser(prog="mlmprep run", allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
