"""The job's flags, their defaults and their validation, in one place.

Every user mistake found here raises ``UsageError``, which the command line
turns into one line on stderr and exit status 2 before any work starts.
"""

import argparse
import dataclasses
import hashlib
import logging
import math
import os
import posixpath

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from mlmprep.pipeline import fingerprint as fingerprint_lib
from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import documents, encode, pack, shards, tokenize
from mlmprep.transforms.beam import groups
from mlmprep.transforms.mask import MASK_COUNTS, MaskingConfig

# Runners that keep a shuffle in memory (names as Beam takes them: any case, "Runner" optional):
# records reach their shards through run files there.
IN_MEMORY_RUNNERS = ("direct", "fnapi", "bundlebaseddirect", "swappingdirect")
TEMP_DIR = ".mlmprep-temp"  # under the output: run files, deleted when the job ends


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
        parser.add_argument("--tokenizer", help="A tokenizers tokenizer.json or a WordPiece vocab.txt.")
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
            default=documents.RANGE_BYTES / (1 << 20),
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
            "--max_predictions_per_seq", type=int, default=20, help="Cap on masked positions per sequence."
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
            "--whole_word_masking",
            action="store_true",
            default=False,
            help="Select all pieces of a word together, with one replacement decision per word.",
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
            help="document: sequences never cross documents; concat: documents joined by [SEP].",
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


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """Everything the graph needs, resolved and validated in the launcher."""

    inputs: tuple[str, ...]
    input_bytes: int
    input_format: str
    split_input_bytes: int
    text_field: str
    dedup: bool
    min_doc_tokens: int
    output_dir: str
    tokenizer_json: str
    vocab: tokenize.Vocabulary
    masking: MaskingConfig
    max_seq_length: int
    seed: int
    dupe_factor: int
    packing: str
    concat_groups: int
    grouping: str  # groups.MODES
    temp_dir: str
    validation_fraction: float
    shard_plan: shards.ShardPlan
    bucket_bits: int
    formats: tuple[str, ...]
    config: dict  # every job option, for the manifest
    input_files: int
    input_fingerprint: str | None
    generation: int  # above every build already in the output (see shards.generation_tag)
    tokenizer_file: str
    replaces: tuple[str, ...] | None  # the finished build in the output (see manifest.stale_files)


def _check(condition: bool, message: str):
    if not condition:
        raise UsageError(message)


def plan(options: PipelineOptions, check_output: bool = True) -> JobPlan:
    """Validates the job options against the world: inputs, tokenizer, output.

    ``check_output=False`` plans without looking at the output (to compute a
    build's fingerprint before deciding to run it).
    """
    o = options.view_as(MlmPrepOptions)
    _check(bool(o.input), "--input is required")
    _check(bool(o.output), "--output is required")
    _check(bool(o.tokenizer), "--tokenizer is required")
    _check(o.max_seq_length >= 3, f"--max_seq_length must be at least 3, got {o.max_seq_length}")
    _check(
        1 <= o.max_predictions_per_seq <= o.max_seq_length - 2,
        f"--max_predictions_per_seq must be in [1, max_seq_length - 2], got {o.max_predictions_per_seq}",
    )
    _check(0 < o.masked_lm_prob <= 1, f"--masked_lm_prob must be in (0, 1], got {o.masked_lm_prob}")
    for name in ("mask_token_ratio", "random_token_ratio"):
        value = getattr(o, name)
        _check(0 <= value <= 1, f"--{name} must be in [0, 1], got {value}")
    _check(
        o.mask_token_ratio + o.random_token_ratio <= 1,
        "--mask_token_ratio + --random_token_ratio must be at most 1, "
        f"got {o.mask_token_ratio + o.random_token_ratio}",
    )
    _check(o.min_doc_tokens >= 0, f"--min_doc_tokens must be at least 0, got {o.min_doc_tokens}")
    _check(o.dupe_factor >= 1, f"--dupe_factor must be at least 1, got {o.dupe_factor}")
    _check(o.num_shards is None or o.num_shards >= 1, f"--num_shards must be at least 1, got {o.num_shards}")
    _check(o.target_shard_mb > 0, f"--target_shard_mb must be positive, got {o.target_shard_mb}")
    _check(o.split_input_mb > 0, f"--split_input_mb must be positive, got {o.split_input_mb}")
    _check(
        0 <= o.validation_fraction < 1,
        f"--validation_fraction must be in [0, 1), got {o.validation_fraction}",
    )
    _check(0 <= o.random_seed < 2**63, f"--random_seed must be in [0, 2**63), got {o.random_seed}")

    # A --dry_run (Dataflow's offline job build) must not touch remote storage.
    dry_run = options.view_as(TestOptions).dry_run
    input_files = []
    for pattern in o.input:
        if dry_run and not _is_local(pattern):
            continue
        if _is_local(pattern) and os.path.isdir(pattern):
            raise UsageError(
                f"--input {pattern} is a directory; give a pattern such as {pattern.rstrip('/')}/*"
            )
        try:
            files = fingerprint_lib.list_inputs([pattern])
        except Exception as e:  # Beam raises BeamIOError and friends
            raise UsageError(f"cannot read --input {pattern}: {e}") from None
        _check(bool(files), f"--input {pattern} matches no file")
        input_files += files
    input_files = sorted(set(input_files))
    input_bytes = sum(f.size for f in input_files)

    try:
        with FileSystems.open(o.tokenizer) as f:
            tokenizer_json = tokenize.tokenizer_json(f.read())
        vocab = tokenize.vocabulary(tokenize.load_tokenizer(tokenizer_json))
    except tokenize.TokenizerError as e:
        raise UsageError(f"--tokenizer {o.tokenizer}: {e}") from None
    except Exception as e:
        raise UsageError(f"cannot read --tokenizer {o.tokenizer}: {e}") from None

    replacing = None
    if check_output and not (dry_run and not _is_local(o.output)):
        replacing = _replacing(o.output, o.overwrite)
    generation = replacing.generation if replacing else 0
    tokenizer_file = manifest_lib.tokenizer_name(generation)
    if (
        replacing
        and replacing.tokenizer
        and replacing.tokenizer.get("sha256") == encode.sha256(tokenizer_json.encode("utf-8"))
    ):
        tokenizer_file = replacing.tokenizer["file"]  # the same tokenizer keeps its name (tokenizer.json)

    config = dict(sorted(o.get_all_options(current_only=True).items()))
    config.pop("overwrite")
    config["formats"] = list(o.formats)
    fingerprint = None
    if input_files and not dry_run:
        tokenizer_sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        fingerprint = fingerprint_lib.fingerprint(config, input_files, tokenizer_sha256)
    return JobPlan(
        inputs=tuple(o.input),
        input_bytes=input_bytes,
        input_format=o.input_format,
        split_input_bytes=max(1, int(o.split_input_mb * (1 << 20))),
        text_field=o.text_field,
        dedup=o.dedup,
        min_doc_tokens=o.min_doc_tokens,
        output_dir=o.output,
        tokenizer_json=tokenizer_json,
        vocab=vocab,
        masking=MaskingConfig(
            masked_lm_prob=o.masked_lm_prob,
            max_predictions_per_seq=o.max_predictions_per_seq,
            mask_token_ratio=o.mask_token_ratio,
            random_token_ratio=o.random_token_ratio,
            whole_word_masking=o.whole_word_masking,
            mask_count=o.mask_count,
        ),
        max_seq_length=o.max_seq_length,
        seed=o.random_seed,
        dupe_factor=o.dupe_factor,
        packing=o.packing,
        concat_groups=max(1, math.ceil(input_bytes / pack.CONCAT_GROUP_BYTES)),
        grouping=_grouping(o.grouping, options.view_as(StandardOptions).runner),
        temp_dir=FileSystems.join(o.output, TEMP_DIR),
        # About 4 bytes of text per token; unknown (a dry run) picks a fine-grained default.
        bucket_bits=shards.bucket_bits(
            o.dupe_factor * input_bytes // (4 * (o.max_seq_length - 2)) if input_files else None
        ),
        validation_fraction=o.validation_fraction,
        shard_plan=shards.ShardPlan(
            num_shards=o.num_shards,
            target_shard_bytes=int(o.target_shard_mb * (1 << 20)),
            validation_fraction=o.validation_fraction,
            record_bytes=shards.estimated_record_bytes(o.max_seq_length, o.max_predictions_per_seq),
        ),
        formats=tuple(o.formats),
        config=config,
        input_files=len(input_files),
        input_fingerprint=fingerprint,
        generation=generation,
        tokenizer_file=tokenizer_file,
        replaces=replacing.replaces if replacing else None,
    )


def _grouping(grouping: str, runner) -> str:
    name = runner if runner is None or isinstance(runner, str) else type(runner).__name__
    local = name is None or name.lower().removesuffix("runner") in IN_MEMORY_RUNNERS
    if grouping == "auto":
        return "run_files" if local else "shuffle"
    if grouping == "run_files" and not local:
        logging.warning(
            "mlmprep: --grouping run_files on %s: every bundle writes run files that every shard reads; "
            "the runner's own shuffle (--grouping shuffle) is the way on a distributed runner",
            name,
        )
    return grouping


def _is_local(path: str) -> bool:
    return "://" not in path


@dataclasses.dataclass(frozen=True)
class Replacing:
    """What a build written into a non-empty output must know of what is there (see ``manifest``)."""

    generation: int  # above every generation there, finished or not
    replaces: tuple[str, ...] | None  # the files of the finished build there; None: none finished
    tokenizer: dict | None  # the finished build's tokenizer entry, whose file a same tokenizer keeps


def _replacing(output: str, overwrite: bool) -> Replacing | None:
    """None for an empty output; a non-empty one needs --overwrite. Nothing is deleted here: a build
    replaces another only once it is complete."""
    if _is_local(output) and os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} is a file, not a directory")
    try:
        existing = FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list
    except Exception:  # nothing there yet
        existing = []
    if not existing:
        return None
    if not overwrite:
        raise UsageError(f"--output {output} exists and is not empty; pass --overwrite to replace it")
    names = [posixpath.basename(m.path) for m in existing]
    generations = [g for g in map(manifest_lib.generation_of, names) if g is not None]
    previous = None
    if manifest_lib.MANIFEST in names:
        try:
            previous = manifest_lib.read(output)
            generations.append(int(previous.get("generation", 0)))
            replaces = tuple(s["file"] for s in previous["shards"]) + (previous["tokenizer"]["file"],)
        except (ValueError, KeyError, TypeError):  # damaged: no finished build is there
            previous = None
        except Exception as e:
            raise UsageError(f"cannot read the manifest.json in --output {output}: {e}") from None
    return Replacing(
        generation=1 + max(generations) if generations or previous else 0,
        replaces=replaces if previous else None,
        tokenizer=previous["tokenizer"] if previous else None,
    )
