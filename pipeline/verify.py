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
import hashlib

import numpy as np
import pyarrow as pa

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import decode, encode, profile, records
from mlmprep.transforms.mask import MaskingConfig, prediction_counts
from mlmprep.transforms.pairs import WITHOUT_OTHER_DOCUMENT
from mlmprep.transforms.records import MaskedBatch

MAX_REPORTED = 20
READ_BYTES = 8 << 20
_FIELDS = ("input_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_predictions")
_PAIR_FIELDS = ("segment_starts", "next_sentence_labels")
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


class _HashingReader:
    """A file read front to back, hashed as it is read."""

    def __init__(self, f):
        self._f = f
        self._digest = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self._digest.update(data)
        return data

    def sha256(self) -> str:
        """The whole file's hash: what was not read yet is read now."""
        while self.read(READ_BYTES):
            pass
        return self._digest.hexdigest()


def _check_frame(batch: MaskedBatch, extra: dict, vocab, fail, several_pieces: bool = False):
    """The tokenizer's frame around the body (pairs: its pair frame; best-fit packing: around each
    piece), position ids, padding, the masks and segments, and ids inside the vocabulary."""
    n, seq = batch.input_ids.shape
    cols, lengths = np.arange(seq)[None, :], batch.lengths[:, None]
    fail(np.any(extra["input_mask"] != (cols < lengths), axis=1), "input_mask is not ones then zeros")
    frame = vocab.frame
    if batch.next_sentence_labels is None:
        fail(np.any(extra["segment_ids"] != 0, axis=1), "segment_ids not all 0")
        if "next_sentence_labels" in extra:  # TFRecord's, always 0 without pairs
            fail(np.any(extra["next_sentence_labels"] != 0, axis=1), "next_sentence_labels not 0")
        prefix, suffix = frame.prefix, frame.suffix
    else:
        _check_pair(batch, extra, vocab, fail)
        prefix, suffix = frame.pair_prefix, frame.pair_suffix
    fail(
        np.any(batch.input_ids[:, : prefix.size] != prefix, axis=1),
        f"does not start with {_text(vocab, prefix)}",
    )
    ends = batch.lengths[:, None] - suffix.size + np.arange(suffix.size)[None, :]
    last = np.take_along_axis(batch.input_ids, np.clip(ends, 0, seq - 1), axis=1)
    fail(np.any(last != suffix, axis=1), f"does not end with {_text(vocab, suffix)}")
    fail(
        np.any((cols >= lengths) & (batch.input_ids != vocab.pad_id), axis=1), "padding is not the pad token"
    )
    if prefix.size and not several_pieces:
        fail(np.sum(batch.input_ids == prefix[0], axis=1) != 1, f"{_text(vocab, prefix[:1])} more than once")
    if several_pieces:
        _check_pieces(batch, vocab, fail)
    if "position_ids" in extra:  # outputs from before position_ids have none
        expected = records.position_ids(batch.input_ids, batch.lengths, frame.first_id)
        fail(
            np.any(extra["position_ids"] != expected, axis=1),
            "position_ids do not restart at 0 at each piece's first token and count up by one inside it "
            "(0 on padding)",
        )
    fail(np.any((batch.input_ids < 0) | (batch.input_ids >= vocab.size), axis=1), "id outside the vocabulary")


def _check_pieces(batch: MaskedBatch, vocab, fail):
    """Best-fit packing: every piece framed on its own, each with a token at least, none crossing a
    sequence (a piece is the run of real tokens from one start to the next)."""
    frame = vocab.frame
    n, seq = batch.input_ids.shape
    starts = records.piece_starts(batch.input_ids, batch.lengths, frame.first_id)
    rows, cols = np.nonzero(starts)
    ends = np.append(cols[1:], 0)
    last_of_row = np.append(rows[1:] != rows[:-1], True)
    ends[last_of_row] = batch.lengths[rows[last_of_row]]
    bad = np.zeros(n, dtype=bool)
    bad[rows[ends - cols < frame.specials + 1]] = True
    for k, token in enumerate(frame.prefix):
        bad[rows[batch.input_ids[rows, np.minimum(cols + k, seq - 1)] != token]] = True
    for k, token in enumerate(frame.suffix):
        at = np.clip(ends - frame.suffix.size + k, 0, seq - 1)
        bad[rows[batch.input_ids[rows, at] != token]] = True
    fail(bad, f"a piece is not framed on its own as {vocab.frames['single']}")


def _text(vocab, ids) -> str:
    return " ".join(vocab.name(int(i)) for i in ids) or "nothing"


def _check_pair(batch: MaskedBatch, extra: dict, vocab, fail):
    """Two segments framed as the tokenizer frames pairs; segment ids 0 up to B, B's type id from B on."""
    n, seq = batch.input_ids.shape
    frame = vocab.frame
    cols, lengths = np.arange(seq)[None, :], batch.lengths[:, None]
    separators = np.concatenate([frame.middle, frame.pair_suffix])
    seps = np.isin(batch.input_ids, separators) & (cols < lengths)
    fail(seps.sum(axis=1) != separators.size, f"a pair without exactly {separators.size} separators")
    starts = frame.segment_starts(batch.input_ids)
    middle = starts[:, None] - frame.middle.size + np.arange(frame.middle.size)[None, :]
    found = np.take_along_axis(batch.input_ids, np.clip(middle, 0, seq - 1), axis=1)
    fail(np.any(found != frame.middle, axis=1), "segments not separated as the pair frame says")
    segment_ids = extra["segment_ids"]
    expected = ((cols >= starts[:, None]) & (cols < lengths)) * frame.b_type
    fail(np.any(segment_ids != expected, axis=1), f"segment_ids are not 0, then {frame.b_type} from B on")
    a_first = frame.pair_prefix.size
    fail(
        (starts - frame.middle.size <= a_first) | (starts >= batch.lengths - frame.pair_suffix.size),
        "an empty segment",
    )
    labels = batch.next_sentence_labels
    fail((labels != 0) & (labels != 1), "next_sentence_labels not 0 or 1")


def _check_predictions(batch: MaskedBatch, extra: dict, vocab, fail) -> np.ndarray:
    """The masked_lm_* layout: weights, 0 padding, positions inside and ascending, no special token
    selected, labels that agree. Returns which prediction slots are in use."""
    seq = batch.input_ids.shape[1]
    slot = np.arange(batch.masked_lm_positions.shape[1])[None, :]
    valid = slot < batch.num_predictions[:, None]
    positions = batch.masked_lm_positions
    fail(np.any(extra["masked_lm_weights"] != valid, axis=1), "masked_lm_weights is not ones then zeros")
    padding = ~valid & ((positions != 0) | (batch.masked_lm_ids != 0))
    fail(np.any(padding, axis=1), "masked_lm padding is not 0")
    body_end = batch.lengths[:, None] - vocab.frame.suffix.size
    outside = valid & ((positions < vocab.frame.prefix.size) | (positions >= body_end))
    fail(np.any(outside, axis=1), "position outside the sequence")
    ascending = np.diff(np.where(valid, positions, seq + slot), axis=1) > 0
    fail(~np.all(ascending, axis=1), "positions not strictly ascending")
    originals = np.clip(batch.masked_lm_ids, 0, vocab.size - 1)
    fail(np.any(valid & vocab.special_lookup()[originals], axis=1), "a special token was selected")
    blank = np.isin(originals, vocab.blank_ids)
    fail(np.any(valid & blank, axis=1), "a blank token (whitespace alone) was selected")
    if "labels" in extra:
        inside = dataclasses.replace(batch, masked_lm_positions=np.clip(positions, 0, seq - 1))  # as reported
        fail(np.any(records.labels(inside) != extra["labels"], axis=1), "labels disagree with masked_lm_*")
    return valid


def _check_replacements(batch: MaskedBatch, valid, vocab, masking: MaskingConfig, fail) -> dict:
    """The prediction count rule, and each selected token's replacement; returns the replacement counts."""
    n, seq = batch.input_ids.shape
    special = vocab.unselectable_lookup()
    # The original sequence, to count candidates and classify replacements.
    original = batch.input_ids.copy()
    r, c = np.nonzero(valid)
    safe = np.clip(batch.masked_lm_positions[r, c], 0, seq - 1)
    replaced = batch.input_ids[r, safe]
    original[r, safe] = batch.masked_lm_ids[r, c]
    in_sequence = np.arange(seq)[None, :] < batch.lengths[:, None]
    candidates = np.sum(~special[np.clip(original, 0, vocab.size - 1)] & in_sequence, axis=1)
    expected = prediction_counts(batch.lengths, candidates, masking)
    if masking.mask_count == "exact" and masking.masking != "word":  # a word that does not fit is skipped
        fail(batch.num_predictions != expected, "prediction count breaks min(max_pred, max(1, round(n*p)))")
    else:
        limit = expected if masking.mask_count == "exact" else masking.max_predictions_per_seq
        fail(batch.num_predictions > limit, "more predictions than the count rule allows")
    is_mask = replaced == vocab.mask_id
    is_same = (replaced == batch.masked_lm_ids[r, c]) & ~is_mask
    is_random = ~is_mask & ~is_same
    bad = np.zeros(n, dtype=bool)
    bad[r[is_random & ~np.isin(replaced, vocab.random_ids)]] = True
    fail(bad, "a selected token was replaced by a special or reserved token")
    return {"mask": int(is_mask.sum()), "random": int(is_random.sum()), "same": int(is_same.sum())}


def check_batch(
    batch: MaskedBatch,
    extra: dict,
    *,
    vocab,
    masking: MaskingConfig,
    report: Report,
    where: str,
    first: int = 0,
    several_pieces: bool = False,
):
    """The frame and masking invariants of every record of a slice of a shard, which starts at record
    ``first``; ``extra`` has the raw columns."""

    def fail(mask, what):
        for i in np.nonzero(mask)[0][:3]:
            report.problem(where, f"record {first + i}: {what}")

    _check_frame(batch, extra, vocab, fail, several_pieces)
    if batch.unmasked:
        _check_word_starts(batch, vocab, fail)
        return
    valid = _check_predictions(batch, extra, vocab, fail)
    report.outcomes.update(_check_replacements(batch, valid, vocab, masking, fail))
    if masking.masking == "span":
        report.runs[where.rsplit(".", 1)[-1]] += masked_runs(batch.masked_lm_positions, valid)


def masked_runs(positions: np.ndarray, valid: np.ndarray) -> int:
    """How many runs of consecutive positions the predictions make (abutting spans make one run)."""
    follows = np.zeros_like(valid)
    follows[:, 1:] = valid[:, 1:] & (np.diff(positions, axis=1) == 1)
    return int((valid & ~follows).sum())


def _check_word_starts(batch: MaskedBatch, vocab, fail):
    """An unmasked output's word starts: 0 or 1, and 1 only at a real token of text (not the frame's)."""
    starts = batch.word_starts
    fail(np.any((starts != 0) & (starts != 1), axis=1), "word_starts not 0 or 1")
    real = np.arange(starts.shape[1])[None, :] < batch.lengths[:, None]
    framing = np.isin(batch.input_ids, [vocab.pad_id, *vocab.frame.pair_ids()])
    fail(
        np.any((starts == 1) & (~real | framing), axis=1), "a word starts at padding or at the frame's tokens"
    )


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


def _shard_slices(output_dir: str, shard: dict, config: dict, stack: contextlib.ExitStack, vocab):
    """(slices of the shard's rows, a function giving its sha256 once they are read)."""
    seq, preds = config["max_seq_length"], config["max_predictions_per_seq"]
    pairs = vocab.frame if pairs_mode(config) else None
    unmasked = config.get("masking") == "none"
    name = shard["file"]
    rows = encode.slice_rows(seq)
    if shard["format"] == "tfrecord":
        stream = _HashingReader(stack.enter_context(manifest_lib.open_file(output_dir, name)))
        return decode.tfrecord_slices(stream, seq, preds, rows, pairs, unmasked), stream.sha256
    # Parquet is read from its footer: the hash takes a pass of its own.
    digest = _HashingReader(stack.enter_context(manifest_lib.open_file(output_dir, name))).sha256()
    parquet = stack.enter_context(manifest_lib.open_file(output_dir, name, seekable=True))
    return decode.parquet_slices(parquet, seq, preds, rows, pairs, unmasked), lambda: digest


def _verify_shard(output_dir, files: list[dict], config, *, vocab, masking, report, totals):
    """One shard's files (its TFRecord and Parquet twins), read side by side a slice at a time."""
    seen = {shard["file"]: collections.Counter() for shard in files}
    with contextlib.ExitStack() as stack:
        slices, hashes, failed, unequal = {}, {}, set(), False
        for shard in files:
            try:
                parts = _shard_slices(output_dir, shard, config, stack, vocab)
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
                    first=seen[name]["records"], several_pieces=config.get("packing") == "best_fit",
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
                if batch.next_sentence_labels is not None:
                    seen[name].update(
                        label_0=int(np.sum(batch.next_sentence_labels == 0)),
                        label_1=int(np.sum(batch.next_sentence_labels == 1)),
                    )
                read[name] = batch
            if len(files) == 2 and len(hashes) == 2 and not failed and not unequal:
                first, second = (read.get(shard["file"]) for shard in files)
                if first is None or second is None:
                    unequal = first is not second  # one file has rows the other does not
                else:
                    unequal = not all(np.array_equal(getattr(first, f), getattr(second, f)) for f in _FIELDS)
                    unequal = unequal or (
                        first.unmasked and not np.array_equal(first.word_starts, second.word_starts)
                    )
                    pairs = first.next_sentence_labels is not None
                    unequal = unequal or (
                        pairs
                        and not all(
                            np.array_equal(getattr(first, f), getattr(second, f)) for f in _PAIR_FIELDS
                        )
                    )
                if unequal:
                    report.problem(
                        files[0]["file"], f"{files[0]['format']} and {files[1]['file']} hold different rows"
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
            if pairs_mode(config) and labels != shard.get("next_sentence_labels"):
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
            )


def check_counts(manifest: dict, totals: dict, report: Report):
    """The manifest's counts against what the shards hold, and against each other."""
    counts = manifest["counts"]
    splits = counts["splits"]
    formats = manifest["config"].get("formats") or sorted({fmt for _, fmt in totals})
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
            if pairs_mode(manifest["config"]):
                forced = counts.get("counters", {}).get(f"{WITHOUT_OTHER_DOCUMENT}.{split}", 0)
                copies = manifest["config"].get("dupe_factor", 1)
                _check_labels(split, fmt, listed, [seen["label_0"], seen["label_1"]], copies, forced, report)
        if listed.get("sequences") and not listed.get("documents"):
            report.problem("manifest", f"{split} has {listed['sequences']} sequences from 0 documents")
    written = counts["documents_written"]
    if written != sum(s.get("documents", 0) for s in splits.values()):
        report.problem("manifest", "documents_written is not the sum of the splits' documents")
    if counts["documents_read"] != written + sum(counts["documents_dropped"].values()):
        report.problem("manifest", "documents_read != documents_written + documents dropped")
    if written == 0 and any(seen["sequences"] for seen in totals.values()):
        report.problem("manifest", "documents_written is 0, yet the shards hold sequences")


def pairs_mode(config: dict) -> bool:
    return config.get("sentence_pairs", "none") != "none"


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
        config = manifest["config"]
        masking = manifest_lib.masking_config(manifest)
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

    twins = collections.defaultdict(list)  # a shard's files, by their name without the format
    for shard in manifest["shards"]:
        twins[shard["file"].rsplit(".", 1)[0]].append(shard)
    totals = collections.defaultdict(collections.Counter)
    for files in twins.values():
        _verify_shard(output_dir, files, config, vocab=vocab, masking=masking, report=report, totals=totals)
    first_format = (config.get("formats") or ["tfrecord"])[0]
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
    report = verify(args.output_dir)
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
