"""Assembles and runs the mlmprep Beam pipeline.

A full command line, as run by ``mlmprep run``::

  mlmprep run --input 'corpus/*.txt.gz' --output out/ --tokenizer vocab.txt \\
      --max_seq_length 128 --num_shards 64 --validation_fraction 0.01 \\
      --runner DataflowRunner --project my-project --region us-central1 \\
      --temp_location gs://my-bucket/tmp --setup_file ./setup.py
"""

import contextlib
import dataclasses
import os
import re
import sys
import tempfile

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

from mlmprep.pipeline import commit, engines, flags, manifest, pins
from mlmprep.pipeline.errors import UsageError
from mlmprep.pipeline.planning import BuildPlan, JobPlan, is_in_memory, plan_build, plan_parsed
from mlmprep.transforms import mds, mixture, phases, profile, records
from mlmprep.transforms.beam import coders, counting, exit_quickly, groups, pack, read
from mlmprep.transforms.beam import mixture as beam_mixture
from mlmprep.transforms.beam.mask import MaskSequences
from mlmprep.transforms.beam.progress import ProgressMonitor
from mlmprep.transforms.beam.tokenize import TokenizeDocuments
from mlmprep.transforms.beam.write import WriteShards
from mlmprep.transforms.pack import SequenceBatch, concat_rows
from mlmprep.transforms.pairs import MIN_DOC_TOKENS
from mlmprep.transforms.tokenize import ID_WORD_SOURCES, SPLITS, TokenizedBatch

# Below this much input, extra worker processes cost more to start than they save.
MULTIPROCESS_MIN_BYTES = 32 << 20
# A worker process keeps about this many cores busy: its tokenizer runs on every
# core it is given, beside the worker's own Python (about a third of the tokenizer's work).
CORES_PER_WORKER = 2


class _WriteManifest(beam.DoFn):
    """Commits an output once its shards are written; ``phase``: which phase of a build (``BuildPlan``) it
    is, whose own counts and sources table it records."""

    def __init__(self, job: JobPlan, build: BuildPlan | None = None, phase: int = 0):
        self._job = job
        self._build = build
        self._phase = phase

    def process(self, unused_trigger, shards, counts, plans=None, near_dedup=None):
        job = self._job
        if self._build is not None:
            counts = phase_counts(counts, self._phase)
        built = manifest.build(
            settings=job.config,
            tokenizer_json=job.tokenizer_json,
            vocab=job.vocab,
            shards=shards,
            counts=counts,
            formats=job.formats,
            input_files=job.input_files,
            input_fingerprint=job.input_fingerprint,
            generation=job.generation,
            tokenizer_file=job.tokenizer_file,
            recipe=job.recipe,
            mds_config=mds_config(job, sources=self._build is not None),
            near_dedup=near_dedup,
            source_names=[s.name for s in self._build.sources] if self._build is not None else None,
        )
        if self._build is not None:
            built.update(build_entries(self._build, self._phase, plans, counts))
        commit.commit(job.output_dir, built, job.tokenizer_json, job.replaces)
        if job.grouping == "run_files":
            groups.delete_temp(job.temp_dir)  # every shard is written: the run files are done with
        yield built


def _near_dedup_reading(job: JobPlan) -> dict:
    """What ``ReadDocuments`` needs for near-duplicate removal and decontamination."""
    return {
        "near": job.near_dedup,
        "band_bits": job.band_bits,
        "rounds": job.near_dedup_rounds,
        "grouping": job.grouping,
        "temp_dir": job.temp_dir,
        "decontamination": job.decontamination,
    }


def _near_dedup_side(documents: dict) -> dict:
    """The manifest writer's side input of what near-duplicate removal and decontamination found."""
    summary = documents.get("near_dedup")
    return {} if summary is None else {"near_dedup": beam.pvalue.AsSingleton(summary)}


def phase_counts(counts: dict, phase: int) -> dict:
    """A phase's counts: the build's reading and dropping, the phase's own documents and sequences."""
    prefix = phases.counts_prefix(phase)
    own = {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}
    shared = {
        k: v
        for k, v in counts.items()
        if not k.startswith(("phase.", "documents.", f"{profile.DOCUMENT_TOKENS}."))
    }
    kept = sum(v for k, v in counts.items() if k.startswith("documents.") and k.count(".") == 1)
    return {**shared, **own, "documents_kept": kept}


def build_entries(build: BuildPlan, phase: int, plans, counts: dict) -> dict:
    """What a phase's manifest says of its build: the phase, the sources its source_ids index, and the
    sources table (natural, target and achieved tokens per source and split)."""
    names = [s.name for s in build.sources]
    return {
        "build": {
            "phase": build.names[phase],
            "phases": list(build.names),
            "index": phase,
            "given": build.given[phase],  # its own settings as the build file gave them
        },
        "sources": build.source_entries(),
        "mixture": mixture.table(plans[phase], names, counts, "sources."),
    }


def _mask(job: JobPlan) -> MaskSequences:
    """The mask step of a job (or a phase): word starts carried with the tokens, or read off the ids."""
    return MaskSequences(
        config=job.masking,
        vocab=job.vocab,
        seed=job.seed,
        dupe_factor=job.dupe_factor,
        max_seq_length=job.max_seq_length,
        word_source=None if _carries_words(job) else job.word_source,
    )


def _carries_words(job: JobPlan) -> bool:
    """Whether word starts travel with the tokens: where they come from the encodings; read off the ids
    (``tokenize.ID_WORD_SOURCES``), the mask step finds them itself."""
    return job.word_source is not None and job.word_source not in ID_WORD_SOURCES


def _pack(batches: beam.PCollection, job: JobPlan):
    """Token ids -> fixed-length sequences: by document; concatenated or best-fit packed within groups of
    documents; or sentence pairs made within groups of documents."""
    shape = dict(max_seq_length=job.max_seq_length, vocab=job.vocab)
    if job.pairs is not None:
        pairs = pack.PackPairs(**shape, config=job.pairs, word_starts=_carries_words(job))
        return _in_groups(batches, job, "Pairs", pairs)
    if job.packing == "document":
        return batches | "PackDocuments" >> beam.ParDo(pack.PackDocuments(**shape)).with_output_types(
            SequenceBatch
        ).with_outputs(counting.COUNTS, main="sequences")
    if job.packing == "best_fit":
        best_fit = pack.PackBestFit(**shape, word_starts=_carries_words(job))
        return _in_groups(batches, job, "BestFit", best_fit)
    concat = pack.PackConcat(**shape, word_starts=_carries_words(job))
    return _in_groups(batches, job, "Concat", concat)


def _in_groups(batches: beam.PCollection, job: JobPlan, name: str, packer):
    """Documents grouped in key order (``pack.CONCAT_ORDER``), then packed a group at a time."""
    ids = records.id_type(job.vocab.size, job.max_seq_length)
    return (
        batches
        | f"{name}Rows" >> beam.Map(concat_rows, job.concat_groups, ids).with_output_types(pa.RecordBatch)
        | f"GroupFor{name}"
        >> groups.SortedGroups(pack.CONCAT_ORDER, mode=job.grouping, temp_dir=job.temp_dir)
        | f"Pack{name}"
        >> beam.ParDo(packer).with_output_types(SequenceBatch).with_outputs(counting.COUNTS, main="sequences")
    )


def build_pipeline(p: beam.Pipeline, job: JobPlan, progress_dir: str | None = None) -> beam.PCollection:
    """Adds the job to ``p``; returns the PCollection holding the manifest dict. ``progress_dir``: a local
    folder where the readers note the input bytes they read, for a ``ProgressMonitor``."""
    coders.register()
    documents = (
        p
        | "InputPatterns" >> beam.Create([(0, pattern) for pattern in job.inputs])
        | "ReadDocuments"
        >> read.ReadDocuments(
            readers=((job.input_format, job.text_field),),
            range_bytes=job.split_input_bytes,
            dedup=job.dedup,
            with_keys=job.validation_fraction > 0 or job.packing != "document" or job.pairs is not None,
            dedup_bits=job.dedup_bits,
            progress_dir=progress_dir,
            **_near_dedup_reading(job),
        )
    )
    tokenize = TokenizeDocuments(
        job.tokenizer_json,
        job.validation_fraction,
        word_starts=job.word_source if _carries_words(job) else None,
        # A document of one token has nothing to pair with: too short for sentence pairs.
        min_doc_tokens=job.min_doc_tokens if job.pairs is None else max(job.min_doc_tokens, MIN_DOC_TOKENS),
        sentence_language=None if job.pairs is None else job.pairs.language,
    )
    tokenized = documents["batches"] | "Tokenize" >> beam.ParDo(tokenize).with_output_types(
        TokenizedBatch
    ).with_outputs(counting.COUNTS, main="batches")
    packed = _pack(tokenized.batches, job)
    masked = packed.sequences | "Mask" >> beam.ParDo(_mask(job)).with_output_types(
        pa.RecordBatch
    ).with_outputs(counting.COUNTS, main="records")
    shards = masked.records | "WriteShards" >> _write_shards(job)
    counts = (
        [outputs[counting.COUNTS] for outputs in (documents, tokenized, packed, masked)]
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(counting.SumCounts())
    )
    return (
        p
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest"
        >> beam.ParDo(
            _WriteManifest(job),
            shards=beam.pvalue.AsList(shards),
            counts=beam.pvalue.AsSingleton(counts),
            **_near_dedup_side(documents),
        )
    )


class _WriteBuildManifest(beam.DoFn):
    """A build of phases commits last: OUTPUT/manifest.json lists its phases once each has committed."""

    def __init__(self, build: BuildPlan):
        self._build = build

    def process(self, unused_trigger, phase_manifests):
        build = self._build
        by_name = {m["build"]["phase"]: m for m in phase_manifests}
        built = manifest.build_index(
            settings=build.reading.config,
            sources=build.source_entries(),
            phases=[by_name[name] for name in build.names],
            given=list(build.given),
            top_given=build.top_given,
            input_fingerprint=build.reading.input_fingerprint,
        )
        commit.write_whole(
            FileSystems.join(build.reading.output_dir, manifest.MANIFEST),
            manifest.to_json(built).encode("utf-8"),
        )
        if build.reading.grouping == "run_files":
            groups.delete_temp(build.reading.temp_dir)
        yield built


def build_phases(p: beam.Pipeline, build: BuildPlan, progress_dir: str | None = None) -> beam.PCollection:
    """Adds a build of sources and phases to ``p``: the documents read and tokenized once, then each
    phase's sequences selected, packed, masked and written to its own output; returns the PCollection of
    the build's manifest (a single phase's, without a phases list)."""
    coders.register()
    job, sources = build.reading, build.sources
    documents = (
        p
        | "InputPatterns" >> beam.Create([(i, pattern) for i, s in enumerate(sources) for pattern in s.input])
        | "ReadDocuments"
        >> read.ReadDocuments(
            readers=tuple((s.input_format, s.text_field) for s in sources),
            range_bytes=job.split_input_bytes,
            dedup=job.dedup,
            with_keys=True,
            dedup_bits=job.dedup_bits,
            progress_dir=progress_dir,
            **_near_dedup_reading(job),
        )
    )
    carried = [ph for ph in build.phases if _carries_words(ph)]
    paired = [ph.pairs for ph in build.phases if ph.pairs is not None]
    tokenize = TokenizeDocuments(
        job.tokenizer_json,
        job.validation_fraction,
        word_starts=carried[0].word_source if carried else None,
        min_doc_tokens=job.min_doc_tokens,
        # A phase of sentence pairs: every document is tokenized a sentence at a time (build_spec).
        sentence_language=paired[0].language if paired else None,
    )
    tokenized = documents["batches"] | "Tokenize" >> beam.ParDo(tokenize).with_output_types(
        TokenizedBatch
    ).with_outputs(counting.COUNTS, main="batches")
    shape = (len(build.phases), len(sources), len(SPLITS), build.groups, 2)
    plans = (
        tokenized.batches
        | "Histogram" >> beam.ParDo(beam_mixture.Histogram(build.filters, len(sources), build.groups))
        | "SumHistograms" >> beam.CombineGlobally(beam_mixture.SumHistograms(shape))
        | "PlanMixtures"
        >> beam.Map(beam_mixture.plan_phases, build.mixes, [s.name for s in sources], list(build.names))
    )
    shapes = [
        phases.PhaseShape(
            ph.packing, ph.max_seq_length, build.filters[i], word_starts=_carries_words(ph), pairs=ph.pairs
        )
        for i, ph in enumerate(build.phases)
    ]
    tags = [str(i) for i in range(len(build.phases))]
    ids = records.id_type(job.vocab.size, 1)
    packed = (
        tokenized.batches
        | "DocumentRows" >> beam.Map(concat_rows, build.groups, ids, True).with_output_types(pa.RecordBatch)
        | "GroupDocuments" >> groups.SortedGroups(pack.CONCAT_ORDER, mode=job.grouping, temp_dir=job.temp_dir)
        | "PackPhases"
        >> beam.ParDo(
            pack.PackPhases(phases=shapes, vocab=job.vocab), plans=beam.pvalue.AsSingleton(plans)
        ).with_outputs(counting.COUNTS, *tags)
    )
    all_counts, written = (
        [documents[counting.COUNTS], tokenized[counting.COUNTS], packed[counting.COUNTS]],
        [],
    )
    for i, (name, ph) in enumerate(zip(build.names, build.phases)):
        label = f"[{name}]" if name else ""
        masked = packed[tags[i]] | f"Mask{label}" >> beam.ParDo(_mask(ph)).with_output_types(
            pa.RecordBatch
        ).with_outputs(counting.COUNTS, main="records")
        all_counts.append(masked[counting.COUNTS])
        written.append(masked.records | f"WriteShards{label}" >> _write_shards(ph, sources=True))
    counts = (
        all_counts
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(counting.SumCounts())
    )
    manifests = []
    for i, (name, ph, shards) in enumerate(zip(build.names, build.phases, written)):
        label = f"[{name}]" if name else ""
        manifests.append(
            p
            | f"ManifestTrigger{label}" >> beam.Create([None])
            | f"WriteManifest{label}"
            >> beam.ParDo(
                _WriteManifest(ph, build, i),
                shards=beam.pvalue.AsList(shards),
                counts=beam.pvalue.AsSingleton(counts),
                plans=beam.pvalue.AsSingleton(plans),
                **_near_dedup_side(documents),
            )
        )
    if not build.layered:
        return manifests[0]
    return (
        p
        | "BuildManifestTrigger" >> beam.Create([None])
        | "WriteBuildManifest"
        >> beam.ParDo(
            _WriteBuildManifest(build), phase_manifests=beam.pvalue.AsList(manifests | beam.Flatten())
        )
    )


def _write_shards(job: JobPlan, sources: bool = False) -> WriteShards:
    return WriteShards(
        output_dir=job.output_dir,
        formats=job.formats,
        plan=job.shard_plan,
        bucket_bits=job.bucket_bits,
        max_seq_length=job.max_seq_length,
        max_predictions_per_seq=job.masking.max_predictions_per_seq,
        pad_id=job.vocab.pad_id,
        unk_id=job.vocab.unk_id,
        grouping=job.grouping,
        temp_dir=job.temp_dir,
        generation=job.generation,
        pairs=job.pairs is not None,
        unmasked=job.settings.masking.unmasked,
        frame=job.vocab.frame,
        sources=sources,
        mds_config=mds_config(job, sources),
    )


def mds_config(job: JobPlan, sources: bool = False) -> dict | None:
    """What every MDS shard of a job says of itself (and its index.json); None without --formats mds."""
    if "mds" not in job.formats:
        return None
    s = job.settings
    columns = mds.columns(
        job.max_seq_length, job.masking.max_predictions_per_seq, job.pairs is not None, s.masking.unmasked,
        sources,
    )  # fmt: skip
    return mds.config(columns, s.output.mds_compression)


def available_cores() -> int:
    """The cores this process may run on (``taskset`` and cgroups included), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_mode(input_bytes: int, cores: int) -> tuple[str, int]:
    """The DirectRunner's running mode and worker count for an input, when the user chose neither.

    One process uses two cores: more processes only pay for their start-up and
    for moving data through the runner (on two cores a second worker process
    took 12% more CPU and no less time). Larger machines get a process per two cores.
    """
    workers = cores // CORES_PER_WORKER
    if workers > 1 and input_bytes >= MULTIPROCESS_MIN_BYTES:
        return "multi_processing", workers
    return "in_memory", 1


def _given(argv, flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv or ())


def local_worker_flags(options: PipelineOptions, job: JobPlan, argv=()) -> list[str]:
    """The worker flags the local runner gets where the user gave none: a worker process per two cores
    for a big input (``worker_mode``); processes where a count alone was given (the in-memory mode would
    run one worker whatever the count). Worker flags given in ``argv`` (Beam's) are honoured as given."""
    if options.view_as(StandardOptions).runner is not None:
        return []
    workers, mode = _given(argv, "--direct_num_workers"), _given(argv, "--direct_running_mode")
    if not (workers or mode):
        mode, count = worker_mode(job.input_bytes, available_cores())
        return [f"--direct_running_mode={mode}", f"--direct_num_workers={count}"]
    if workers and not mode and options.view_as(DirectOptions).direct_num_workers != 1:
        return ["--direct_running_mode=multi_processing"]
    return []


def local_runner(options: PipelineOptions):
    """Beam's FnApiRunner when no --runner is given (None otherwise).

    The DirectRunner of recent Beam first tries Prism, a runner it downloads at run time; where that
    works, the job runs in one Python process whatever ``--direct_num_workers`` says. The FnApiRunner
    is the DirectRunner's own engine, made here the way the DirectRunner makes it, so that a local run
    is the same with or without a network. ``--runner DirectRunner`` still lets Beam choose.
    """
    if options.view_as(StandardOptions).runner is not None:
        return None
    # Worker processes read their options (the pickler, for one) from the provision info.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    provision = fn_runner.ExtendedProvisionInfo(info)
    return fn_runner.FnApiRunner(provision_info=provision)


def run(argv=None, save_main_session=False) -> beam.runners.runner.PipelineResult:
    """Runs a ``mlmprep run`` command line to completion; returns the PipelineResult (its metrics are the
    counts)."""
    del save_main_session  # the job's code lives in the installed package
    return run_command(flags.parse(sys.argv[1:] if argv is None else argv))


def run_command(command: flags.RunCommand) -> beam.runners.runner.PipelineResult:
    """Runs a command line read (``flags.parse``); waits for it unless Beam's options say not to."""
    exit_quickly()
    engine_flags = engines.runner_flags(command.beam_argv)  # Flink's and Spark's job servers, found
    if engine_flags:
        command = dataclasses.replace(command, beam_argv=(*command.beam_argv, *engine_flags))
    if command.build is None:
        options, job = plan_parsed(command)
        build = None
    else:  # a build of sources and phases: its reading is planned once, beside its phases
        options = PipelineOptions(list(command.beam_argv))
        build = plan_build(command, options)
        job = build.reading
    if not is_in_memory(options.view_as(StandardOptions).runner):
        pins.warn_if_remote_differs(options)
    workers = local_worker_flags(options, job, command.beam_argv)
    if workers:  # Beam's options are made from flags, not changed after: the chosen worker flags join them
        options = PipelineOptions([*command.beam_argv, *workers])
    runner = local_runner(options)
    p = beam.Pipeline(runner=runner, options=options)
    with _local_progress(runner is not None, job.input_bytes) as progress_dir:
        if build is None:
            build_pipeline(p, job, progress_dir)
        else:
            build_phases(p, build, progress_dir)
        try:
            result = p.run()
            if not options.view_as(StandardOptions).no_wait_until_finish:
                result.wait_until_finish()
        except Exception as e:  # a mixture the sources cannot give: the user's one line, not a traceback
            line = _mixture_error(e)
            if line is None:
                raise
            raise UsageError(line) from None
    return result


def _mixture_error(e: Exception) -> str | None:
    """The line of a MixtureError that failed the job, raised here or relayed by a worker as text."""
    text = str(e) if isinstance(e, mixture.MixtureError) else None
    if text is None:
        found = re.search(rf"{mixture.MixtureError.__name__}: (.+)", str(e))
        text = found.group(1) if found else None
    return None if text is None else re.sub(r" \[while running '[^']*'\]$", "", text.strip())


@contextlib.contextmanager
def _local_progress(local: bool, input_bytes: int):
    """On the local runner, a folder the readers note their progress in, and a monitor that prints the share
    of the input read and the time left; remote runners keep their own logs."""
    if not local:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="mlmprep-progress-") as directory:
        monitor = ProgressMonitor(directory, input_bytes)
        monitor.start()
        try:
            yield directory
        finally:
            monitor.stop()


def step_names(result) -> list[str]:
    """Transform names of a job a runner built (a Dataflow ``--dry_run`` keeps it on the result)."""
    built = getattr(result, "job", None)
    if built is None:
        return []
    return sorted(t.unique_name for t in built.proto_pipeline.components.transforms.values())
