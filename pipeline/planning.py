"""Planning a run: the flags checked against the world (inputs, tokenizer, output), and what the graph needs.

``plan`` has no side effect: it reads, and never writes or deletes (a build
replaces another only when it commits, see ``manifest``). Every user mistake
found here raises ``UsageError``, which the command line turns into one line
on stderr and exit status 2 before any work starts.
"""

import dataclasses
import hashlib
import logging
import os
import posixpath

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from mlmprep.pipeline import commit, recipes
from mlmprep.pipeline import fingerprint as fingerprint_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.pipeline.flags import MlmPrepOptions, run_parser
from mlmprep.transforms import pack, pairs, shards, tokenize
from mlmprep.transforms.beam import read
from mlmprep.transforms.mask import MaskingConfig, default_predictions
from mlmprep.transforms.pairs import PairConfig

# Runners that keep a shuffle in memory (names as Beam takes them: any case, "Runner" optional):
# records reach their shards through run files there.
MAX_SEQ_LENGTH = 8192  # long-context encoders train at up to this length
IN_MEMORY_RUNNERS = ("direct", "fnapi", "bundlebaseddirect", "swappingdirect")
TEMP_DIR = ".mlmprep-temp"  # under the output: run files, deleted when the job ends


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """Everything the graph needs, resolved and validated in the launcher."""

    inputs: tuple[str, ...]
    input_bytes: int
    input_format: str
    split_input_bytes: int
    text_field: str
    dedup: bool
    dedup_bits: int
    min_doc_tokens: int
    output_dir: str
    tokenizer_json: str
    vocab: tokenize.Vocabulary
    masking: MaskingConfig
    word_source: str | None  # tokenize.WORD_SOURCES, or "tokens"; None: words are not needed
    max_seq_length: int
    seed: int
    dupe_factor: int
    packing: str
    concat_groups: int  # groups of documents joined by concat packing or made into sentence pairs
    pairs: PairConfig | None  # sentence pairs; None: single segments
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
    recipe: dict | None = None  # --recipe: what it set, for the manifest (recipes.Applied.record)


def _check(condition: bool, message: str):
    if not condition:
        raise UsageError(message)


def _predictions_cap(o: MlmPrepOptions) -> None:
    """Resolves a default ``--max_predictions_per_seq`` from the length; warns where a given one cuts the
    masked share below the asked rate by more than a tenth."""
    if o.max_predictions_per_seq is None:
        o.max_predictions_per_seq = default_predictions(o.max_seq_length, o.masked_lm_prob)
        return
    share = o.max_predictions_per_seq / o.max_seq_length
    if share < 0.9 * o.masked_lm_prob:
        logging.warning(
            "mlmprep: --max_predictions_per_seq %d at --max_seq_length %d masks at most %.1f%% of a full "
            "sequence, not the %g%% --masked_lm_prob asks for (without the flag the cap follows the length)",
            o.max_predictions_per_seq,
            o.max_seq_length,
            100 * share,
            100 * o.masked_lm_prob,
        )


def _validate(o: MlmPrepOptions):
    """The flags' values on their own, before anything is read."""
    _check(bool(o.input), "--input is required")
    _check(bool(o.output), "--output is required")
    _check(bool(o.tokenizer), "--tokenizer is required")
    _check(
        3 <= o.max_seq_length <= MAX_SEQ_LENGTH,
        f"--max_seq_length must be in [3, {MAX_SEQ_LENGTH}], got {o.max_seq_length}",
    )
    _check(0 < o.masked_lm_prob <= 1, f"--masked_lm_prob must be in (0, 1], got {o.masked_lm_prob}")
    _check(
        o.max_predictions_per_seq is None or 1 <= o.max_predictions_per_seq <= o.max_seq_length - 2,
        f"--max_predictions_per_seq must be in [1, {o.max_seq_length - 2}] at --max_seq_length "
        f"{o.max_seq_length}, got {o.max_predictions_per_seq}",
    )
    _predictions_cap(o)
    for name in ("mask_token_ratio", "random_token_ratio"):
        value = getattr(o, name)
        _check(0 <= value <= 1, f"--{name} must be in [0, 1], got {value}")
    _check(
        o.mask_token_ratio + o.random_token_ratio <= 1,
        "--mask_token_ratio + --random_token_ratio must be at most 1, "
        f"got {o.mask_token_ratio + o.random_token_ratio}",
    )
    _masking(o)
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
    _check(0 <= o.short_seq_prob <= 1, f"--short_seq_prob must be in [0, 1], got {o.short_seq_prob}")
    if o.sentence_pairs != "none":
        _check(
            o.packing == "document",
            f"--packing {o.packing} packs documents into single segments; "
            "--sentence_pairs packs pairs in their own frame by BERT's rules",
        )


def _masking(o: MlmPrepOptions) -> None:
    """Resolves ``--masking`` (``--whole_word_masking`` is ``word``) and checks the span flags."""
    if o.masking is None:
        o.masking = "word" if o.whole_word_masking else "token"
    _check(
        not o.whole_word_masking or o.masking == "word",
        f"--whole_word_masking is --masking word; it contradicts --masking {o.masking}",
    )
    o.whole_word_masking = o.masking == "word"  # the manifest says both, for readers of either
    _check(0 < o.span_p <= 1, f"--span_p must be in (0, 1], got {o.span_p}")
    _check(o.max_span_words >= 1, f"--max_span_words must be at least 1, got {o.max_span_words}")
    _check(
        o.masking != "none" or o.dupe_factor == 1,
        f"--dupe_factor {o.dupe_factor} with --masking none writes identical copies: the trainer masks "
        "every epoch anew (leave --dupe_factor at 1)",
    )


def _word_source(o: MlmPrepOptions, vocab: tokenize.Vocabulary) -> str | None:
    """How the job finds words, where its masking needs them (word, span) or keeps them (none)."""
    if o.masking == "token":
        return None
    if vocab.word_source is None:
        _check(
            o.masking == "none",
            f"--masking {o.masking} needs words, and --tokenizer {o.tokenizer} marks none: no pre-tokenizer "
            "splits its text into words and its tokens carry no continuation (##) or word-start (▁, Ġ) mark; "
            "use --masking token",
        )
        logging.warning(
            "mlmprep: --tokenizer %s marks no words: the output's word_starts mark every token",
            o.tokenizer,
        )
        return "tokens"
    return vocab.word_source


def _input_files(patterns, dry_run: bool) -> list[fingerprint_lib.InputFile]:
    """Every file the patterns match; a pattern that matches none is a mistake. A --dry_run (Dataflow's
    offline job build) does not touch remote storage."""
    files = []
    for pattern in patterns:
        if dry_run and not _is_local(pattern):
            continue
        if _is_local(pattern) and os.path.isdir(pattern):
            raise UsageError(
                f"--input {pattern} is a directory; give a pattern such as {pattern.rstrip('/')}/*"
            )
        try:
            matched = fingerprint_lib.list_inputs([pattern])
        except Exception as e:  # Beam raises BeamIOError and friends
            raise UsageError(f"cannot read --input {pattern}: {e}") from None
        _check(bool(matched), f"--input {pattern} matches no file")
        files += matched
    return sorted(set(files))


def _beside(path: str) -> dict[str, bytes]:
    """transformers' files beside a tokenizer.json that name its special tokens, where there are any."""
    found = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        other = FileSystems.join(posixpath.dirname(path) or ".", name)
        try:
            if FileSystems.exists(other):
                with FileSystems.open(other) as f:
                    found[name] = f.read()
        except Exception:  # unreadable: as if absent; the tokenizer itself may say enough
            continue
    return found


def _tokenizer(path: str, special_tokens: str | None) -> tuple[str, tokenize.Vocabulary]:
    """The tokenizer's JSON text (a vocab.txt becomes a WordPiece tokenizer) and its vocabulary, its
    roles from ``--special_tokens``, then the files beside it, then the tokenizer itself."""
    try:
        given = tokenize.parse_roles(special_tokens or "")
    except ValueError as e:
        raise UsageError(f"--special_tokens: {e}") from None
    try:
        with FileSystems.open(path) as f:
            tokenizer_json = tokenize.tokenizer_json(f.read())
    except tokenize.TokenizerError as e:
        raise UsageError(f"--tokenizer {path}: {e}") from None
    except Exception as e:
        raise UsageError(f"cannot read --tokenizer {path}: {e}") from None
    tokenizer = tokenize.load_tokenizer(tokenizer_json)
    for role, token in given.items():
        _check(
            tokenizer.token_to_id(token) is not None,
            f"--special_tokens {role}={token}: {token!r} is not in the vocabulary of --tokenizer {path}",
        )
    try:
        beside = tokenize.beside_roles(_beside(path)) if tokenizer_json.lstrip().startswith("{") else {}
        return tokenizer_json, tokenize.vocabulary(tokenizer, given, beside)
    except tokenize.TokenizerError as e:
        raise UsageError(f"--tokenizer {path}: {e}") from None


def _config(o: MlmPrepOptions) -> dict:
    """Every run option, for the manifest (--overwrite says how to write, not what)."""
    config = dict(sorted(o.get_all_options(current_only=True).items()))
    config.pop("overwrite")
    config["formats"] = list(o.formats)
    return config


def plan(options: PipelineOptions, check_output: bool = True, recipe: dict | None = None) -> JobPlan:
    """Checks the job options against the world: inputs, tokenizer, output; reads, never writes.

    ``check_output=False`` plans without looking at the output (to compute a
    build's fingerprint before deciding to run it).
    """
    o = options.view_as(MlmPrepOptions)
    _validate(o)
    dry_run = options.view_as(TestOptions).dry_run
    input_files = _input_files(o.input, dry_run)
    input_bytes = sum(f.size for f in input_files) if input_files else None  # None: unknown (a dry run)
    tokenizer_json, vocab = _tokenizer(o.tokenizer, o.special_tokens)
    _check_lengths(o, vocab.frame)
    replacing = None
    if check_output and not (dry_run and not _is_local(o.output)):
        replacing = commit.replacing(o.output, o.overwrite)
    generation = replacing.generation if replacing else 0
    config = _config(o)
    fingerprint = None
    if input_files and not dry_run:
        tokenizer_sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        fingerprint = fingerprint_lib.fingerprint(config, input_files, tokenizer_sha256)
    return JobPlan(
        inputs=tuple(o.input),
        input_bytes=input_bytes or 0,
        input_format=o.input_format,
        split_input_bytes=max(1, int(o.split_input_mb * (1 << 20))),
        text_field=o.text_field,
        dedup=o.dedup,
        dedup_bits=read.dedup_bits(input_bytes),
        min_doc_tokens=o.min_doc_tokens,
        output_dir=o.output,
        tokenizer_json=tokenizer_json,
        vocab=vocab,
        masking=MaskingConfig(
            masked_lm_prob=o.masked_lm_prob,
            max_predictions_per_seq=o.max_predictions_per_seq,
            mask_token_ratio=o.mask_token_ratio,
            random_token_ratio=o.random_token_ratio,
            masking=o.masking,
            mask_count=o.mask_count,
            span_p=o.span_p,
            span_lengths=o.span_lengths,
            max_span_words=o.max_span_words,
        ),
        word_source=_word_source(o, vocab),
        max_seq_length=o.max_seq_length,
        seed=o.random_seed,
        dupe_factor=o.dupe_factor,
        packing=o.packing,
        concat_groups=pack.concat_group_count(input_bytes or 0),
        pairs=None
        if o.sentence_pairs == "none"
        else PairConfig(
            o.sentence_pairs, o.max_seq_length, o.short_seq_prob, o.random_seed, o.sentence_language
        ),
        grouping=_grouping(o.grouping, options.view_as(StandardOptions).runner),
        temp_dir=FileSystems.join(o.output, TEMP_DIR),
        bucket_bits=shards.bucket_bits(shards.expected_records(input_bytes, o.dupe_factor, o.max_seq_length)),
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
        tokenizer_file=commit.tokenizer_file(replacing, tokenizer_json, generation),
        replaces=replacing.replaces if replacing else None,
        recipe=recipe,
    )


def plan_command(argv: list[str], check_output: bool = True) -> tuple[PipelineOptions, JobPlan]:
    """The options and plan of a ``mlmprep run`` command line, its ``--recipe`` expanded (the flags given
    win; one line says what the recipe set); a failed check on a recipe's setting says it was the recipe's."""
    argv, recipe = recipes.expand(argv, run_parser(), "run")
    if recipe is not None:
        print(recipe.line())
    options = PipelineOptions(argv)
    try:
        return options, plan(options, check_output, recipe.record() if recipe else None)
    except UsageError as e:
        raise recipe.explain(e) if recipe else e from None


def runner_name(runner) -> str | None:
    return runner if runner is None or isinstance(runner, str) else type(runner).__name__


def is_in_memory(runner) -> bool:
    """Whether ``--runner`` (a name, a runner or None) runs the job in this machine's memory."""
    name = runner_name(runner)
    return name is None or name.lower().removesuffix("runner") in IN_MEMORY_RUNNERS


def _check_lengths(o: MlmPrepOptions, frame) -> None:
    """Sequences must hold the tokenizer's frame and at least one token (pairs: two, and room to cut)."""
    shortest = frame.specials + 1
    _check(
        o.max_seq_length >= shortest,
        f"--max_seq_length must be at least {shortest} (the tokenizer's frame adds {frame.specials} tokens), "
        f"got {o.max_seq_length}",
    )
    if o.sentence_pairs != "none":
        shortest = pairs.min_seq_length(frame)
        _check(
            o.max_seq_length >= shortest,
            f"--sentence_pairs needs --max_seq_length of at least {shortest}, got {o.max_seq_length}",
        )


def _grouping(grouping: str, runner) -> str:
    name, local = runner_name(runner), is_in_memory(runner)
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
