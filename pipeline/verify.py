"""``mlmprep verify DIR``: re-reads every shard and checks it against manifest.json.

Checks, per shard: it exists, its sha256 and record count match the
manifest, its schema is the contract's; per record: the [CLS] ... [SEP]
[PAD] frame, the masking invariants (specials never selected, positions
inside the sequence and ascending, the prediction count rule, every
selected token replaced by [MASK], a random ordinary token, or kept); that
TFRecord and Parquet shards of the same name hold the same rows; and that
the manifest's per-split counts add up. Needs no TensorFlow.
"""

import collections
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.options import CliParser, UsageError
from mlmprep.transforms import encode
from mlmprep.transforms.mask import MaskingConfig, prediction_counts
from mlmprep.transforms.records import MaskedBatch
from mlmprep.transforms.tokenize import load_tokenizer, vocabulary

MAX_REPORTED = 20


@dataclasses.dataclass
class Report:
    problems: list = dataclasses.field(default_factory=list)
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    records: int = 0
    shards: int = 0

    def problem(self, where: str, what: str):
        self.problems.append(f"{where}: {what}")


def _read(path: str) -> bytes:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def _masked_batch(input_ids, input_mask, positions, ids, weights) -> MaskedBatch:
    """The batch as read; lengths and counts from the masks, so they are checked, not trusted."""
    return MaskedBatch(
        input_ids=input_ids.astype(np.int64),
        lengths=input_mask.sum(axis=1).astype(np.int32),
        masked_lm_positions=positions.astype(np.int64),
        masked_lm_ids=ids.astype(np.int64),
        num_predictions=weights.sum(axis=1).astype(np.int32),
    )


def _tfrecord_batch(data: bytes, seq: int, preds: int) -> tuple[MaskedBatch, dict]:
    examples = [encode.parse_example(r) for r in encode.read_tfrecords(data)]
    expected = {
        name: (preds if name.startswith("masked_lm") else 1 if name == "next_sentence_labels" else seq)
        for name, _ in encode.TFRECORD_FEATURES
    }
    for i, example in enumerate(examples):
        shapes = {k: v.size for k, v in example.items()}
        if shapes != expected:
            raise encode.CorruptRecordError(f"record {i}: features {shapes}, expected {expected}")
        if example["masked_lm_weights"].dtype != np.float32:
            raise encode.CorruptRecordError(f"record {i}: masked_lm_weights is not float")
    stack = {
        k: np.stack([e[k] for e in examples]) if examples else np.zeros((0, expected[k]), np.int64)
        for k in expected
    }
    batch = _masked_batch(
        stack["input_ids"],
        stack["input_mask"],
        stack["masked_lm_positions"],
        stack["masked_lm_ids"],
        stack["masked_lm_weights"],
    )
    return batch, stack


def _parquet_batch(data: bytes, seq: int, preds: int) -> tuple[MaskedBatch, dict]:
    table = pq.read_table(pa.BufferReader(data))
    if table.schema != encode.PARQUET_SCHEMA:
        raise encode.CorruptRecordError(f"schema {table.schema} is not the contract's")
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        width = preds if name.startswith("masked_lm") else seq
        if any(len(v) != width for v in values):
            raise encode.CorruptRecordError(f"column {name}: lists not all of length {width}")
        columns[name] = np.array(values).reshape(len(values), width)
    labels = columns["labels"]
    batch = _masked_batch(
        columns["input_ids"],
        columns["attention_mask"],
        columns["masked_lm_positions"],
        columns["masked_lm_ids"],
        columns["masked_lm_weights"],
    )
    return batch, {
        "input_mask": columns["attention_mask"],
        "segment_ids": columns["token_type_ids"],
        "masked_lm_weights": columns["masked_lm_weights"],
        "labels": labels,
    }


def check_batch(
    batch: MaskedBatch, extra: dict, *, vocab, masking: MaskingConfig, report: Report, where: str
):
    """The frame and masking invariants of every record of a shard; ``extra`` has the raw columns."""
    n, seq = batch.input_ids.shape
    cols = np.arange(seq)[None, :]
    lengths = batch.lengths[:, None]
    rows = np.arange(n)

    def fail(mask, what):
        for i in np.nonzero(mask)[0][:3]:
            report.problem(where, f"record {i}: {what}")

    fail(np.any(extra["input_mask"] != (cols < lengths), axis=1), "input_mask is not ones then zeros")
    fail(np.any(extra["segment_ids"] != 0, axis=1), "segment_ids not all 0")
    fail(batch.input_ids[:, 0] != vocab.cls_id, "does not start with [CLS]")
    fail(batch.input_ids[rows, np.maximum(batch.lengths - 1, 0)] != vocab.sep_id, "does not end with [SEP]")
    fail(np.any((cols >= lengths) & (batch.input_ids != vocab.pad_id), axis=1), "padding is not [PAD]")
    fail(np.sum(batch.input_ids == vocab.cls_id, axis=1) != 1, "[CLS] more than once")
    fail(np.any((batch.input_ids < 0) | (batch.input_ids >= vocab.size), axis=1), "id outside the vocabulary")

    preds = batch.masked_lm_positions.shape[1]
    k = batch.num_predictions[:, None]
    slot = np.arange(preds)[None, :]
    weights = extra["masked_lm_weights"]
    fail(np.any(weights != (slot < k), axis=1), "masked_lm_weights is not ones then zeros")
    valid = slot < k
    positions = batch.masked_lm_positions
    fail(
        np.any(~valid & ((positions != 0) | (batch.masked_lm_ids != 0)), axis=1), "masked_lm padding is not 0"
    )
    fail(
        np.any(valid & ((positions <= 0) | (positions >= lengths - 1)), axis=1),
        "position outside the sequence",
    )
    ascending = np.diff(np.where(valid, positions, seq + slot), axis=1) > 0
    fail(~np.all(ascending, axis=1), "positions not strictly ascending")
    special = vocab.special_lookup()
    originals = np.clip(batch.masked_lm_ids, 0, vocab.size - 1)
    fail(np.any(valid & special[originals], axis=1), "a special token was selected")
    if "labels" in extra:
        labels = np.full((n, seq), -100)
        r, c = np.nonzero(valid)
        labels[r, np.clip(positions[r, c], 0, seq - 1)] = batch.masked_lm_ids[r, c]
        fail(np.any(labels != extra["labels"], axis=1), "labels disagree with masked_lm_*")

    # The original sequence, to count candidates and classify replacements.
    original = batch.input_ids.copy()
    r, c = np.nonzero(valid)
    safe = np.clip(positions[r, c], 0, seq - 1)
    replaced = batch.input_ids[r, safe]
    original[r, safe] = batch.masked_lm_ids[r, c]
    candidates = np.sum(~special[np.clip(original, 0, vocab.size - 1)] & (cols < lengths), axis=1)
    expected = prediction_counts(batch.lengths, candidates, masking)
    if masking.mask_count == "exact" and not masking.whole_word_masking:
        fail(batch.num_predictions != expected, "prediction count breaks min(max_pred, max(1, round(n*p)))")
    else:
        limit = expected if masking.mask_count == "exact" else masking.max_predictions_per_seq
        fail(batch.num_predictions > limit, "more predictions than the count rule allows")
    is_mask = replaced == vocab.mask_id
    is_same = (replaced == batch.masked_lm_ids[r, c]) & ~is_mask
    is_random = ~is_mask & ~is_same
    random_ok = np.isin(replaced, vocab.random_ids)
    bad = np.zeros(n, dtype=bool)
    bad[r[is_random & ~random_ok]] = True
    fail(bad, "a selected token was replaced by a special or reserved token")
    report.outcomes.update(mask=int(is_mask.sum()), random=int(is_random.sum()), same=int(is_same.sum()))


def verify(output_dir: str) -> Report:
    report = Report()
    try:
        manifest = manifest_lib.read(output_dir)
        config = manifest["config"]
        seq, preds = config["max_seq_length"], config["max_predictions_per_seq"]
        tokenizer_data = _read(FileSystems.join(output_dir, manifest["tokenizer"]["file"]))
    except Exception as e:  # missing or malformed: nothing to verify against
        raise UsageError(f"{output_dir} has no usable manifest.json and tokenizer: {e!r}") from None
    masking = MaskingConfig(
        masked_lm_prob=config["masked_lm_prob"],
        max_predictions_per_seq=preds,
        mask_token_ratio=config["mask_token_ratio"],
        random_token_ratio=config["random_token_ratio"],
        whole_word_masking=config.get("whole_word_masking", False),
        mask_count=config.get("mask_count", "exact"),
    )
    if encode.sha256(tokenizer_data) != manifest["tokenizer"]["sha256"]:
        report.problem("tokenizer.json", "sha256 differs from the manifest")
    vocab = vocabulary(load_tokenizer(tokenizer_data.decode("utf-8")))

    batches = {}
    totals = collections.defaultdict(collections.Counter)
    for shard in manifest["shards"]:
        name = shard["file"]
        try:
            data = _read(FileSystems.join(output_dir, name))
        except Exception as e:
            report.problem(name, f"cannot be read ({e.__class__.__name__})")
            continue
        report.shards += 1
        if encode.sha256(data) != shard["sha256"]:
            report.problem(name, "sha256 differs from the manifest")
        try:
            reader = _tfrecord_batch if shard["format"] == "tfrecord" else _parquet_batch
            batch, extra = reader(data, seq, preds)
        except (encode.CorruptRecordError, pa.ArrowException, ValueError) as e:
            report.problem(name, f"does not decode: {e}")
            continue
        records = len(batch.lengths)
        if records != shard["records"]:
            report.problem(name, f"{records} records, the manifest says {shard['records']}")
        check_batch(batch, extra, vocab=vocab, masking=masking, report=report, where=name)
        totals[(shard["split"], shard["format"])].update(
            sequences=records, tokens=int(batch.lengths.sum()), predictions=int(batch.num_predictions.sum())
        )
        if shard["format"] == "tfrecord":
            report.records += records
        batches[name] = batch

    for name, batch in batches.items():
        if name.endswith(".tfrecord"):
            twin = name[: -len(".tfrecord")] + ".parquet"
            other = batches.get(twin)
            if other is not None and not all(
                np.array_equal(getattr(batch, f), getattr(other, f))
                for f in ("input_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_predictions")
            ):
                report.problem(name, f"TFRecord and {twin} hold different rows")

    for split, counts in manifest["counts"]["splits"].items():
        for (s, fmt), seen in totals.items():
            if s == split:
                for field in ("sequences", "tokens", "predictions"):
                    if counts.get(field) != seen[field]:
                        report.problem(
                            f"{split} ({fmt})",
                            f"{field} {seen[field]}, the manifest says {counts.get(field)}",
                        )
    counts = manifest["counts"]
    if counts["documents_read"] != counts["documents_written"] + sum(counts["documents_dropped"].values()):
        report.problem("manifest", "documents_read != documents_written + documents dropped")
    return report


def main(argv) -> int:
    parser = CliParser(prog="mlmprep verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="An mlmprep output directory (with manifest.json).")
    args = parser.parse_args(argv)
    report = verify(args.output_dir)
    total = sum(report.outcomes.values())
    fractions = {k: report.outcomes[k] / total if total else 0.0 for k in ("mask", "random", "same")}
    print(f"checked {report.shards} shard files, {report.records:,} records, {total:,} predictions")
    print("replacements: " + ", ".join(f"{k} {v:.4f}" for k, v in fractions.items()))
    if report.problems:
        for line in report.problems[:MAX_REPORTED]:
            print(f"FAIL {line}")
        if len(report.problems) > MAX_REPORTED:
            print(f"... and {len(report.problems) - MAX_REPORTED} more")
        return 1
    print("OK: shards match the manifest and every masking invariant holds")
    return 0
