"""``mlmprep verify DIR``: re-reads every shard and checks it against manifest.json.

Checks, per shard: it exists, its sha256, record, token and prediction
counts, [UNK] tokens, padding and length histogram match the manifest, its
schema is the contract's; per record: the
[CLS] ... [SEP] [PAD] frame (with sentence pairs: [CLS] A [SEP] B [SEP] [PAD],
segment ids switching once after the first [SEP], labels 0 or 1 and their
share within 4 sigma of one half), the masking invariants (specials never
selected, positions inside the sequence and ascending, the prediction count
rule, every selected token replaced by [MASK], a random ordinary token, or
kept); that TFRecord and Parquet shards of the same name hold the same rows;
and that the manifest's counts agree with the shards and with each other.
Shards are streamed a slice of rows at a time (the TFRecord and Parquet
files of a shard side by side), so memory does not grow with the output.
Needs no TensorFlow.
"""

import collections
import contextlib
import dataclasses
import json

import numpy as np
import pyarrow as pa

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import shard_files
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.pipeline.record_checks import check_batch
from mlmprep.pipeline.settings import Settings
from mlmprep.transforms import decode, encode, profile, records
from mlmprep.transforms.pairs import IS_RANDOM, WITHOUT_OTHER_DOCUMENT
from mlmprep.transforms.shards import shard_stem

MAX_REPORTED = 20
_FIELDS = ("input_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_predictions")
_PAIR_FIELDS = ("segment_starts", "next_sentence_labels")
_PIECE_FIELDS = ("pieces", "piece_lengths", "piece_sources")
PROFILE = ("unk_tokens", "padding", "pieces")  # counted since each was added: an older manifest lacks them
_DECODE_ERRORS = (decode.CorruptRecordError, pa.ArrowException, ValueError, OSError)


@dataclasses.dataclass
class Report:
    problems: list = dataclasses.field(default_factory=list)
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    pair_labels: list = dataclasses.field(default_factory=lambda: [0, 0])  # sentence pairs, first format
    records: int = 0
    shards: int = 0
    runs: collections.Counter = dataclasses.field(
        default_factory=collections.Counter
    )  # span masking, by format

    def problem(self, where: str, what: str):
        self.problems.append(f"{where}: {what}")


def _check_spans(manifest: dict, report: Report):
    """Span masking: the manifest's span histogram against the predictions, and the runs of consecutive
    predictions the shards hold (at most one per span: spans are contiguous; abutting ones merge)."""
    spans = manifest["counts"].get("spans")
    if not spans:
        report.problem("manifest", "span masking, and no span histogram in counts.spans")
        return
    predictions = sum(s["predictions"] for s in manifest["counts"]["splits"].values())
    in_spans = sum(k * n for k, n in enumerate(spans["tokens"], 1))
    if in_spans != predictions:
        report.problem("manifest", f"its spans hold {in_spans} tokens, its predictions are {predictions}")
    for fmt, runs in report.runs.items():
        if runs > sum(spans["tokens"]):
            report.problem(
                fmt,
                f"{runs} runs of consecutive predictions from {sum(spans['tokens'])} spans: not contiguous",
            )


def source_tokens(batch, settings: Settings, vocab, num_sources: int) -> np.ndarray:
    """int64 [sources]: the document tokens each source's pieces hold in a batch (what the mixture counted:
    a piece's tokens but its frame's, and concat packing's joiners). A row's source_ids must be one per
    piece, and name a source; a CorruptRecordError says where not."""
    starts = records.piece_starts(batch.input_ids, batch.lengths, vocab.frame.first_id)
    if not settings.packing.best_fit:  # one piece a row: only position 0 starts one
        starts = starts & (np.arange(starts.shape[1])[None, :] == 0)
    counts = starts.sum(axis=1)
    values = np.asarray(batch.piece_sources, dtype=np.int64)
    if values.size != counts.sum():
        raise decode.CorruptRecordError(f"{values.size} source_ids for {int(counts.sum())} pieces")
    if values.size and (values.min() < 0 or values.max() >= num_sources):
        raise decode.CorruptRecordError(f"a source_id outside the manifest's {num_sources} sources")
    rows, cols = np.nonzero(starts)
    ends = np.r_[cols[1:], 0]
    last = np.r_[rows[1:] != rows[:-1], True]
    ends[last] = batch.lengths[rows[last]]
    tokens = (ends - cols - vocab.frame.specials).astype(np.int64)
    if settings.pairs.enabled:  # a pair is one piece: A and B, but an IsRandom B is another document's
        tokens = (batch.lengths - vocab.frame.pair_specials).astype(np.int64)
        if settings.pairs.mode == "nsp":
            b = batch.lengths - vocab.frame.pair_suffix.size - batch.segment_starts
            tokens -= np.where(batch.next_sentence_labels == IS_RANDOM, b, 0)
    if settings.packing.mode == "concat":  # the joiners between documents are the frame's, not theirs
        body = np.arange(batch.input_ids.shape[1])[None, :]
        inside = (body >= vocab.frame.prefix.size) & (body < batch.lengths[:, None] - vocab.frame.suffix.size)
        tokens -= ((batch.input_ids == vocab.joiner_id) & inside).sum(axis=1)[rows]
    out = np.zeros(num_sources, dtype=np.int64)
    np.add.at(out, values, tokens)
    return out


def _verify_shard(
    output_dir, manifest: dict, files: list[dict], settings: Settings, *, vocab, masking, report, totals,
    sources: int = 0,
):  # fmt: skip
    """One shard's files (one a format), read side by side a slice at a time."""
    seen = {shard["file"]: collections.Counter() for shard in files}
    with contextlib.ExitStack() as stack:
        slices, hashes, failed, unequal = {}, {}, set(), False
        for shard in files:
            try:
                parts = shard_files.slices(output_dir, manifest, shard, stack, vocab.frame, settings=settings)
                slices[shard["file"]], hashes[shard["file"]] = parts
            except Exception as e:
                report.problem(shard["file"], f"cannot be read ({e.__class__.__name__})")
                continue
            report.shards += 1
        while slices:
            read = {}
            for name, parts in list(slices.items()):
                try:
                    part = next(parts, None)
                except _DECODE_ERRORS as e:
                    report.problem(name, f"does not decode: {e}")
                    part = None
                    failed.add(name)
                if part is None:
                    del slices[name]
                    continue
                batch, extra = part
                check_batch(
                    batch, extra, vocab=vocab, masking=masking, report=report, where=name,
                    first=seen[name]["records"], several_pieces=settings.packing.best_fit,
                )  # fmt: skip
                seen[name].update(
                    records=len(batch.lengths),
                    tokens=int(batch.lengths.sum()),
                    predictions=int(batch.num_predictions.sum()),
                    unk_tokens=profile.unk_tokens(batch, vocab.unk_id),
                    padding=profile.padding(batch),
                    pieces=profile.pieces(batch, vocab.frame.first_id),
                )
                lengths = profile.length_buckets(batch.lengths, batch.input_ids.shape[1]).tolist()
                seen[name].update({f"length_{i}": n for i, n in enumerate(lengths)})
                if sources:
                    try:
                        per_source = source_tokens(batch, settings, vocab, sources)
                    except decode.CorruptRecordError as e:
                        report.problem(name, f"source_ids: {e}")
                        per_source = np.zeros(sources, np.int64)
                    seen[name].update({f"source_{i}": int(n) for i, n in enumerate(per_source)})
                if batch.next_sentence_labels is not None:
                    seen[name].update(
                        label_0=int(np.sum(batch.next_sentence_labels == 0)),
                        label_1=int(np.sum(batch.next_sentence_labels == 1)),
                    )
                read[name] = batch
            if len(files) > 1 and len(hashes) == len(files) and not failed and not unequal:
                first, *others = (read.get(shard["file"]) for shard in files)
                for other, shard in zip(others, files[1:]):
                    if not unequal and not _same_rows(first, other):
                        unequal = True
                        report.problem(
                            files[0]["file"], f"{files[0]['format']} and {shard['file']} hold different rows"
                        )
        for shard in files:
            name = shard["file"]
            if name not in hashes:
                continue
            if hashes[name]() != shard["sha256"]:
                report.problem(name, "sha256 differs from the manifest")
            if name in failed:
                continue
            for field in ("records", "tokens", "predictions", *(f for f in PROFILE if f in shard)):
                if seen[name][field] != shard.get(field):
                    report.problem(name, f"{seen[name][field]} {field}, the manifest says {shard.get(field)}")
            lengths = [seen[name][f"length_{i}"] for i in range(profile.BUCKETS)]
            if "sequence_lengths" in shard and lengths != shard["sequence_lengths"]:
                report.problem(
                    name, f"sequence_lengths {lengths}, the manifest says {shard['sequence_lengths']}"
                )
            labels = [seen[name]["label_0"], seen[name]["label_1"]]
            if settings.pairs.enabled and labels != shard.get("next_sentence_labels"):
                report.problem(
                    name,
                    f"next_sentence_labels {labels}, the manifest says {shard.get('next_sentence_labels')}",
                )
            totals[(shard["split"], shard["format"])].update(
                sequences=seen[name]["records"],
                tokens=seen[name]["tokens"],
                predictions=seen[name]["predictions"],
                shards=1,
                label_0=labels[0],
                label_1=labels[1],
                unk_tokens=seen[name]["unk_tokens"],
                padding=seen[name]["padding"],
                pieces=seen[name]["pieces"],
                **{f"length_{i}": n for i, n in enumerate(lengths)},
                **{f"source_{i}": seen[name][f"source_{i}"] for i in range(sources)},
            )


def check_counts(manifest: dict, totals: dict, report: Report):
    """The manifest's counts against what the shards hold, and against each other."""
    counts = manifest["counts"]
    splits = counts["splits"]
    settings = manifest_lib.settings(manifest)
    formats = settings.output.formats
    for split in sorted(set(splits) | {s for s, _ in totals}):
        listed = splits.get(split)
        if listed is None:
            report.problem("manifest", f"shards of split {split}, which its counts do not list")
            continue
        for fmt in formats:
            seen = totals.get((split, fmt), collections.Counter())
            for field in (
                "sequences",
                "tokens",
                "predictions",
                "shards",
                *(f for f in PROFILE if f in listed),
            ):
                if listed.get(field) != seen[field]:
                    report.problem(
                        f"{split} ({fmt})", f"{field} {seen[field]}, the manifest says {listed.get(field)}"
                    )
            lengths = [seen[f"length_{i}"] for i in range(profile.BUCKETS)]
            if "sequence_lengths" in listed and listed["sequence_lengths"] != lengths:
                report.problem(
                    f"{split} ({fmt})",
                    f"sequence_lengths {lengths}, the manifest says {listed['sequence_lengths']}",
                )
            if settings.pairs.enabled:
                forced = counts.get("counters", {}).get(f"{WITHOUT_OTHER_DOCUMENT}.{split}", 0)
                copies = settings.masking.dupe_factor
                _check_labels(split, fmt, listed, [seen["label_0"], seen["label_1"]], copies, forced, report)
        if listed.get("sequences") and not listed.get("documents"):
            report.problem("manifest", f"{split} has {listed['sequences']} sequences from 0 documents")
    written = counts["documents_written"]
    if written != sum(s.get("documents", 0) for s in splits.values()):
        report.problem("manifest", "documents_written is not the sum of the splits' documents")
    # A phase of a build writes the documents its mixture chose (copies counted) of those the build kept.
    kept = counts.get("documents_kept", written)
    if counts["documents_read"] != kept + sum(counts["documents_dropped"].values()):
        what = "documents_kept" if "documents_kept" in counts else "documents_written"
        report.problem("manifest", f"documents_read != {what} + documents dropped")
    _check_near_dedup(manifest, report)
    if "mixture" in manifest:
        _check_mixture(manifest, totals, report)
    if written == 0 and any(seen["sequences"] for seen in totals.values()):
        report.problem("manifest", "documents_written is 0, yet the shards hold sequences")


def _check_near_dedup(manifest: dict, report: Report):
    """The near_dedup and decontamination sections against the drop counts and each other: the removed
    are the dropped, every cluster keeps one document, the sources add up."""
    dropped = manifest["counts"]["documents_dropped"]
    for section, reason in (("near_dedup", "near_duplicate"), ("decontamination", "contaminated")):
        found = manifest.get(section)
        if found is None:
            continue
        if found["removed"] != dropped.get(reason, 0):
            report.problem(
                section,
                f"removed {found['removed']:,}, documents_dropped.{reason} says {dropped.get(reason, 0):,}",
            )
        if sum(found["by_source"].values()) != found["removed"]:
            report.problem(section, "by_source does not add up to removed")
    near = manifest.get("near_dedup")
    if near is None:
        return
    if near["converged"] and near["documents_in_clusters"] - near["clusters"] != near["keys_removed"]:
        report.problem(
            "near_dedup",
            f"{near['documents_in_clusters']:,} documents in {near['clusters']:,} clusters, yet "
            f"{near['keys_removed']:,} removed",
        )
    if (
        near["converged"]
        and manifest["settings"].get("dedup", True)
        and near["keys_removed"] != near["removed"]
    ):
        report.problem(
            "near_dedup", f"keys_removed {near['keys_removed']:,} is not removed {near['removed']:,}"
        )


def _check_mixture(manifest: dict, totals: dict, report: Report):
    """The sources table against the shards: each source's achieved tokens recounted per split and format
    (each of --dupe_factor copies holds them again), and the budget's rule for each target."""
    settings = manifest_lib.settings(manifest)
    names = [s["name"] for s in manifest["sources"]]
    copies = settings.masking.dupe_factor
    for row in manifest["mixture"]:
        i = names.index(row["source"])
        for fmt in settings.output.formats:
            seen = totals.get((row["split"], fmt), collections.Counter())[f"source_{i}"]
            if seen != copies * row["achieved_tokens"]:
                report.problem(
                    f"{row['split']} ({fmt})",
                    f"source {row['source']!r} holds {seen:,} tokens, the sources table says "
                    f"{copies} x {row['achieved_tokens']:,}",
                )
        if row["split"] == "train" and row["achieved_tokens"] != row["target_tokens"]:
            report.problem(
                manifest_lib.MANIFEST,
                f"source {row['source']!r} took {row['achieved_tokens']:,} train tokens for a target of "
                f"{row['target_tokens']:,}",
            )


def _check_labels(
    split: str, fmt: str, listed: dict, seen: list[int], copies: int, forced: int, report: Report
):
    """The split's label counts as the shards hold them, and the share of label 1 within 4 sigma of one half.

    The share is of pairs, not records: the ``copies`` (``--dupe_factor``) of a pair share its label. Pairs
    that drew IsRandom where no other document was at hand (``forced``, made IsNext) count as drawn.
    """
    if listed.get("next_sentence_labels") != seen:
        report.problem(
            f"{split} ({fmt})",
            f"next_sentence_labels {seen}, the manifest says {listed.get('next_sentence_labels')}",
        )
    pairs, drawn = sum(seen) / copies, seen[1] / copies + forced
    if pairs and abs(drawn - pairs / 2) > 4 * np.sqrt(pairs) / 2:
        report.problem(
            f"{split} ({fmt})",
            f"{drawn / pairs:.3f} of the pairs drew label 1: not within 4 sigma of one half",
        )


def _same_rows(first, second) -> bool:
    """Whether two formats' slices of a shard hold the same rows (None: the file has no more)."""
    if first is None or second is None:
        return first is second
    fields = _FIELDS + (_PAIR_FIELDS if first.next_sentence_labels is not None else ())
    fields += ("word_starts",) if first.unmasked else ()
    fields += tuple(
        f for f in _PIECE_FIELDS if getattr(first, f) is not None or getattr(second, f) is not None
    )
    return all(
        getattr(first, f) is not None
        and getattr(second, f) is not None
        and np.array_equal(getattr(first, f), getattr(second, f))
        for f in fields
    )


def _check_mds_indexes(output_dir: str, manifest: dict, report: Report):
    """Each MDS split's index.json: present, and listing the manifest's shards as MosaicML Streaming does."""
    if "mds" not in manifest:
        if any(s["format"] == "mds" for s in manifest["shards"]):
            report.problem(manifest_lib.MANIFEST, "MDS shards, and no mds config to check them against")
        return
    for name, expected in manifest_lib.mds_indexes(manifest).items():
        try:
            with manifest_lib.open_file(output_dir, name) as f:
                found = f.read()
        except Exception as e:
            report.problem(name, f"cannot be read ({e.__class__.__name__})")
            continue
        if json.loads(found) != json.loads(expected):
            report.problem(name, "does not list the manifest's MDS shards as they are")


def _check_fields(manifest: dict):
    """Raises KeyError unless the manifest has every field verify reads."""
    for shard in manifest["shards"]:
        for key in ("file", "split", "format", "records", "sha256"):
            shard[key]
    for key in ("documents_read", "documents_written", "documents_dropped", "splits"):
        manifest["counts"][key]


def verify(output_dir: str) -> Report:
    report = Report()
    try:
        manifest = manifest_lib.read(output_dir)
        settings = manifest_lib.settings(manifest)
        masking = settings.masking.config()
        with manifest_lib.open_file(output_dir, manifest["tokenizer"]["file"]) as f:
            tokenizer_data = f.read()
        _check_fields(manifest)
    except Exception as e:  # missing or malformed: nothing to verify against
        raise UsageError(f"{output_dir} has no usable manifest.json and tokenizer: {e}") from None
    if encode.sha256(tokenizer_data) != manifest["tokenizer"]["sha256"]:
        report.problem(manifest["tokenizer"]["file"], "sha256 differs from the manifest")
    try:
        _, vocab = manifest_lib.vocabulary(manifest, tokenizer_data.decode("utf-8"))
    except Exception as e:  # the tokenizer and its roles no longer make a vocabulary
        raise UsageError(f"{output_dir}: its tokenizer and the manifest's roles do not agree: {e}") from None
    entry = vocab.manifest_entry()
    for key in ("frames", "special_tokens"):  # recorded since mlmprep knew frames: checked where present
        if key in manifest["tokenizer"] and manifest["tokenizer"][key] != entry[key]:
            report.problem(
                manifest_lib.MANIFEST, f"tokenizer {key} {manifest['tokenizer'][key]} are not {entry[key]}"
            )

    twins = collections.defaultdict(list)  # a shard's files, one a format
    for shard in manifest["shards"]:
        twins[shard_stem(shard["file"])].append(shard)
    totals = collections.defaultdict(collections.Counter)
    sources = len(manifest.get("sources", ()))
    order = {fmt: i for i, fmt in enumerate(settings.output.formats)}  # rows compared with the first format's
    for files in twins.values():
        files.sort(key=lambda shard: order.get(shard["format"], len(order)))
        _verify_shard(
            output_dir,
            manifest,
            files,
            settings,
            vocab=vocab,
            masking=masking,
            report=report,
            totals=totals,
            sources=sources,
        )
    _check_mds_indexes(output_dir, manifest, report)
    first_format = settings.output.formats[0]
    report.records = sum(seen["sequences"] for (_, fmt), seen in totals.items() if fmt == first_format)
    for label in (0, 1):
        report.pair_labels[label] = sum(
            s[f"label_{label}"] for (_, fmt), s in totals.items() if fmt == first_format
        )
    check_counts(manifest, totals, report)
    if masking.masking == "span":
        _check_spans(manifest, report)
    return report


def main(argv) -> int:
    parser = CliParser(prog="mlmprep verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="An mlmprep output directory (with manifest.json).")
    args = parser.parse_args(argv)
    phases = _phases(args.output_dir)
    if phases:  # a build of phases: each phase's folder is an output
        failed = 0
        for name, folder in phases:
            print(f"== phase {name} ({folder})")
            failed += _report(verify(folder))
        return 1 if failed else 0
    return _report(verify(args.output_dir))


def _phases(output_dir: str) -> list[tuple[str, str]]:
    """A build of phases' (name, folder) of each phase; [] for any other output."""
    try:
        index = manifest_lib.read(output_dir, build_index=True)
    except Exception:  # verify says what is wrong with it
        return []
    if not manifest_lib.is_build_index(index):
        return []
    return [(p["name"], manifest_lib.join(output_dir, p["folder"])) for p in index["phases"]]


def _report(report: Report) -> int:
    """Prints what verify found; the exit status."""
    total = sum(report.outcomes.values())
    fractions = {k: report.outcomes[k] / total if total else 0.0 for k in ("mask", "random", "same")}
    print(f"checked {report.shards} shard files, {report.records:,} records, {total:,} predictions")
    if total:
        print("replacements: " + ", ".join(f"{k} {v:.4f}" for k, v in fractions.items()))
    else:
        print("no predictions: the output is unmasked (--masking none), its word starts checked")
    if report.runs:
        print(f"span masking: {max(report.runs.values()):,} runs of consecutive predictions")
    if sum(report.pair_labels):
        zero, one = report.pair_labels
        print(f"sentence pairs: label 0 {zero:,}, label 1 {one:,} ({one / (zero + one):.4f})")
    if report.problems:
        for line in report.problems[:MAX_REPORTED]:
            print(f"FAIL {line}")
        if len(report.problems) > MAX_REPORTED:
            print(f"... and {len(report.problems) - MAX_REPORTED} more")
        return 1
    print("OK: shards match the manifest and every masking invariant holds")
    return 0
