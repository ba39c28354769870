"""Planning a run: the settings checked against the world (inputs, tokenizer, output); what the graph needs.

``plan`` has no side effect: it reads, and never writes or deletes (a build
replaces another only when it commits, see ``manifest``), and changes
neither the settings nor Beam's options. Every user mistake found here
raises ``UsageError``, which the command line turns into one line on stderr
and exit status 2 before any work starts.
"""

import dataclasses
import hashlib
import logging
import os
import posixpath
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from mlmprep.pipeline import commit, flags
from mlmprep.pipeline import fingerprint as fingerprint_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.pipeline.settings import SettingError, Settings
from mlmprep.pipeline.train_tokenizer import tokenizer_path
from mlmprep.transforms import arrayrecord, mixture, pack, pairs, shards, tokenize
from mlmprep.transforms.beam import near_dedup as beam_near_dedup
from mlmprep.transforms.beam import read
from mlmprep.transforms.beam.near_dedup import Decontamination
from mlmprep.transforms.mask import MaskingConfig
from mlmprep.transforms.near_dedup import NearDedupConfig
from mlmprep.transforms.pairs import PairConfig

# Runners that keep a shuffle in memory (names as Beam takes them: any case, "Runner" optional):
# records reach their shards through run files there.
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
    near_dedup: NearDedupConfig | None  # None: no near-duplicate removal
    band_bits: int  # log2 of the buckets of band keys (read.band_bits)
    near_dedup_rounds: int  # connected-components rounds unrolled (near_dedup.rounds_for)
    decontamination: Decontamination | None  # --decontaminate: the evaluation files and the n-gram
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
    settings: Settings  # every setting, resolved
    config: dict  # the settings the manifest records (manifest_settings)
    input_files: int
    input_fingerprint: str | None
    generation: int  # above every build already in the output (see shards.generation_tag)
    tokenizer_file: str
    replaces: tuple[str, ...] | None  # the finished build in the output (see manifest.stale_files)
    recipe: dict | None = None  # --recipe: what it set, for the manifest (recipes.Applied.record)


def _check_libraries(s: Settings):
    """A format whose library is missing stops the run before any work, naming the extra to install."""
    if "arrayrecord" in s.output.formats:
        try:
            arrayrecord.module()
        except ImportError as e:
            raise SettingError(str(e), ("formats",)) from None


def _check(condition: bool, message: str, *names: str):
    if not condition:
        raise SettingError(message, names)


def _word_source(s: Settings, vocab: tokenize.Vocabulary) -> str | None:
    """How the job finds words, where its masking needs them (word, span) or keeps them (none)."""
    if s.masking.mode == "token":
        return None
    if vocab.word_source is None:
        _check(
            s.masking.unmasked,
            f"--masking {s.masking.mode} needs words, and --tokenizer {s.tokenizer.tokenizer} marks none: no "
            "pre-tokenizer splits its text into words and its tokens carry no continuation (##) or "
            "word-start (▁, Ġ) mark; use --masking token",
            "masking",
        )
        logging.warning(
            "mlmprep: --tokenizer %s marks no words: the output's word_starts mark every token",
            s.tokenizer.tokenizer,
        )
        return "tokens"
    return vocab.word_source


def _input_files(patterns, dry_run: bool, flag: str = "--input") -> list[fingerprint_lib.InputFile]:
    """Every file the patterns match; a pattern that matches none is a mistake. A --dry_run (Dataflow's
    offline job build) does not touch remote storage."""
    files = []
    for pattern in patterns:
        if dry_run and not _is_local(pattern):
            continue
        if _is_local(pattern) and os.path.isdir(pattern):
            raise UsageError(
                f"{flag} {pattern} is a directory; give a pattern such as {pattern.rstrip('/')}/*"
            )
        try:
            matched = fingerprint_lib.list_inputs([pattern])
        except Exception as e:  # Beam raises BeamIOError and friends
            raise UsageError(f"cannot read {flag} {pattern}: {e}") from None
        _check(bool(matched), f"{flag} {pattern} matches no file")
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
    path = tokenizer_path(path)  # a folder train-tokenizer wrote: its tokenizer.json
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


def manifest_settings(s: Settings) -> dict:
    """The settings a manifest records: every one but --overwrite, which says how to write, not what."""
    values = s.flat()
    values.pop("overwrite")
    return values


class Found(NamedTuple):
    """What the settings name in the world: the input files, the tokenizer's JSON and its vocabulary."""

    input_files: list
    tokenizer_json: str
    vocab: tokenize.Vocabulary


def survey(s: Settings, options: PipelineOptions) -> Found:
    """Lists the inputs and reads the tokenizer (the phases of a build share what this finds once)."""
    input_files = _input_files(s.input.input, options.view_as(TestOptions).dry_run)
    return Found(input_files, *_tokenizer(s.tokenizer.tokenizer, s.tokenizer.special_tokens))


def plan(
    s: Settings,
    options: PipelineOptions,
    check_output: bool = True,
    recipe: dict | None = None,
    *,
    found: Found | None = None,
    fingerprinted: dict | None = None,
) -> JobPlan:
    """Checks the settings against the world: inputs, tokenizer, output; reads, never writes.

    ``options``: Beam's pipeline options (the runner decides how records are grouped).
    ``check_output=False`` plans without looking at the output (to compute a
    build's fingerprint before deciding to run it). ``found``: the ``survey`` of these settings, where
    it was made; ``fingerprinted``: what else the fingerprint covers (a phase's build).
    """
    dry_run = options.view_as(TestOptions).dry_run
    output = s.output.output
    input_files, tokenizer_json, vocab = found or survey(s, options)
    input_bytes = sum(f.size for f in input_files) if input_files else None  # None: unknown (a dry run)
    _check_lengths(s, vocab.frame)
    _check_libraries(s)
    replacing = None
    if check_output and not (dry_run and not _is_local(output)):
        replacing = commit.replacing(output, s.output.overwrite)
    generation = replacing.generation if replacing else 0
    config = manifest_settings(s)
    evaluation_files = []
    if s.input.decontaminate:
        evaluation_files = _input_files([s.input.decontaminate], dry_run, "--decontaminate")
    fingerprint = None
    if input_files and not dry_run:
        tokenizer_sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        fingerprint = fingerprint_lib.fingerprint(
            {**config, **(fingerprinted or {})}, input_files + list(evaluation_files), tokenizer_sha256
        )
    m, length = s.masking, s.packing.max_seq_length
    return JobPlan(
        inputs=s.input.input,
        input_bytes=input_bytes or 0,
        input_format=s.input.input_format,
        split_input_bytes=max(1, int(s.input.split_input_mb * (1 << 20))),
        text_field=s.input.text_field,
        dedup=s.input.dedup,
        dedup_bits=read.dedup_bits(input_bytes),
        near_dedup=s.input.near_dedup_config(),
        band_bits=read.band_bits(input_bytes),
        near_dedup_rounds=beam_near_dedup.rounds_for(input_bytes),
        decontamination=Decontamination(
            s.input.decontaminate,
            s.input.decontaminate_ngram,
            tuple(f.path for f in evaluation_files) if evaluation_files else None,
        )
        if s.input.decontaminate
        else None,
        min_doc_tokens=s.input.min_doc_tokens,
        output_dir=output,
        tokenizer_json=tokenizer_json,
        vocab=vocab,
        masking=m.config(),
        word_source=_word_source(s, vocab),
        max_seq_length=length,
        seed=m.random_seed,
        dupe_factor=m.dupe_factor,
        packing=s.packing.mode,
        concat_groups=pack.concat_group_count(input_bytes or 0),
        pairs=None
        if not s.pairs.enabled
        else PairConfig(
            s.pairs.mode, length, s.pairs.short_seq_prob, m.random_seed, s.pairs.sentence_language
        ),
        grouping=_grouping(s.output.grouping, options.view_as(StandardOptions).runner),
        temp_dir=FileSystems.join(output, TEMP_DIR),
        bucket_bits=shards.bucket_bits(shards.expected_records(input_bytes, m.dupe_factor, length)),
        validation_fraction=s.split.validation_fraction,
        shard_plan=shards.ShardPlan(
            num_shards=s.output.num_shards,
            target_shard_bytes=int(s.output.target_shard_mb * (1 << 20)),
            validation_fraction=s.split.validation_fraction,
            record_bytes=shards.estimated_record_bytes(length, m.max_predictions_per_seq),
        ),
        formats=s.output.formats,
        settings=s,
        config=config,
        input_files=len(input_files),
        input_fingerprint=fingerprint,
        generation=generation,
        tokenizer_file=commit.tokenizer_file(replacing, tokenizer_json, generation),
        replaces=replacing.replaces if replacing else None,
        recipe=recipe,
    )


def plan_command(argv: list[str], check_output: bool = True) -> tuple[PipelineOptions, JobPlan]:
    """Beam's options and the plan of a ``mlmprep run`` command line (``flags.parse``: its build file and
    recipe laid under its flags)."""
    return plan_parsed(flags.parse(argv), check_output)


def plan_parsed(command: flags.RunCommand, check_output: bool = True) -> tuple[PipelineOptions, JobPlan]:
    """Beam's options (from the command's Beam flags alone) and the plan of a command line read; a failed
    check on a setting a recipe set says it was the recipe's."""
    options = PipelineOptions(list(command.beam_argv))
    recipe = command.recipe
    try:
        return options, plan(command.settings, options, check_output, recipe.record() if recipe else None)
    except UsageError as e:
        raise recipe.explain(e) if recipe else e from None


def runner_name(runner) -> str | None:
    return runner if runner is None or isinstance(runner, str) else type(runner).__name__


def is_in_memory(runner) -> bool:
    """Whether ``--runner`` (a name, a runner or None) runs the job in this machine's memory."""
    name = runner_name(runner)
    return name is None or name.lower().removesuffix("runner") in IN_MEMORY_RUNNERS


def _check_lengths(s: Settings, frame) -> None:
    """Sequences must hold the tokenizer's frame and at least one token (pairs: two, and room to cut)."""
    length, shortest = s.packing.max_seq_length, frame.specials + 1
    _check(
        length >= shortest,
        f"--max_seq_length must be at least {shortest} (the tokenizer's frame adds {frame.specials} tokens), "
        f"got {length}",
        "max_seq_length",
    )
    if s.pairs.enabled:
        shortest = pairs.min_seq_length(frame)
        _check(
            length >= shortest,
            f"--sentence_pairs needs --max_seq_length of at least {shortest}, got {length}",
            "max_seq_length",
            "sentence_pairs",
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


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """A build of sources and phases: its reading (the top's settings) and each phase's plan."""

    reading: JobPlan  # reading, cleaning, deduplication, tokenizing: once for every phase
    phases: tuple[JobPlan, ...]
    names: tuple[str, ...]  # the phases' ("" for the one phase of a build without a phases list)
    given: tuple[dict, ...]  # each phase's own values as the build file gave them (its manifest remakes it)
    top_given: dict  # the build's own values as given (a derived one is derived again for each phase)
    sources: tuple  # build_spec.Source
    layered: bool  # phases listed: each in OUTPUT/PHASE, the build's manifest at OUTPUT
    groups: int  # key-range groups of documents (``mixture.range_groups``)
    mixes: tuple[mixture.Mix, ...]
    filters: tuple[mixture.PhaseFilter, ...]

    def source_entries(self) -> list[dict]:
        """The sources as manifests list them (``source_ids`` index this list)."""
        return [dataclasses.asdict(s) | {"input": list(s.input)} for s in self.sources]


def _mix(phase, sources) -> mixture.Mix:
    m = phase.settings.mixture
    return mixture.Mix(
        tokens=m.tokens,
        temperature=1.0 if m.temperature is None else m.temperature,
        weights=None if m.weights is None else tuple(m.weights.get(src.name, 0.0) for src in sources),
        source_weights=tuple(src.weight if phase.uses(src.name) else 0.0 for src in sources),
        max_repeats=tuple(m.max_repeats if src.max_repeats is None else src.max_repeats for src in sources),
        uses=tuple(phase.uses(src.name) for src in sources),
    )


def _source_files(sources, dry_run: bool) -> None:
    """Each source's files: a pattern that matches none, or a file two sources match, is a mistake."""
    owner = {}
    for source in sources:
        try:
            files = _input_files(source.input, dry_run)
        except UsageError as e:
            raise UsageError(f"sources[{source.name}]: {e}") from None
        for f in files:
            if owner.setdefault(f.path, source.name) != source.name:
                raise UsageError(
                    f"{f.path} is in sources {owner[f.path]!r} and {source.name!r}: a file belongs to one "
                    "source"
                )


def plan_build(command: flags.RunCommand, options: PipelineOptions, check_output: bool = True) -> BuildPlan:
    """Beam-free checks and plans of a build of sources and phases (``build_spec``)."""
    build = command.build
    _source_files(build.sources, options.view_as(TestOptions).dry_run)
    found = survey(command.settings, options)  # every phase reads the same inputs with the same tokenizer
    reading = plan(command.settings, options, check_output, found=found)
    phases = []
    for phase in build.phases:
        sources = [dataclasses.asdict(s) for s in build.sources]
        fingerprinted = {"sources": sources, "phase": phase.name}
        job = plan(phase.settings, options, check_output, found=found, fingerprinted=fingerprinted)
        if job.settings.packing.best_fit and job.vocab.frame.first_id is None:
            raise UsageError(
                f"phases[{phase.name}]: --packing best_fit in a build of sources needs a tokenizer whose "
                "frame opens with a token (each piece's source is told by where it starts)"
            )
        phases.append(job)
    return BuildPlan(
        reading=reading,
        phases=tuple(phases),
        names=tuple(p.name for p in build.phases),
        given=tuple(p.given for p in build.phases),
        top_given=build.given,
        sources=build.sources,
        layered=build.layered,
        groups=pack.concat_group_count(reading.input_bytes),
        mixes=tuple(_mix(p, build.sources) for p in build.phases),
        filters=tuple(
            mixture.PhaseFilter(
                sources=tuple(p.uses(s.name) for s in build.sources),
                # A document of one token has nothing to pair with: too short for sentence pairs.
                min_tokens=max(
                    p.settings.input.min_doc_tokens, pairs.MIN_DOC_TOKENS * p.settings.pairs.enabled
                ),
                max_tokens=p.settings.mixture.max_doc_tokens,
            )
            for p in build.phases
        ),
    )
