"""Human-readable views of an output: the manifest's counts, one decoded example."""

import itertools

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import encode
from mlmprep.transforms.tokenize import load_tokenizer


def format_manifest(output_dir: str, manifest: dict) -> str:
    counts = manifest["counts"]
    lines = [
        f"wrote {len(manifest['shards'])} shard files to {output_dir}",
        f"  documents read     {counts['documents_read']:>12,}",
        f"  documents written  {counts['documents_written']:>12,}",
    ]
    for reason, n in sorted((r, n) for r, n in counts["documents_dropped"].items() if n):
        lines.append(f"  dropped: {reason:<10}{n:>12,}")
    for split, c in counts["splits"].items():
        lines.append(
            f"  {split:<11} {c['sequences']:>10,} sequences {c['tokens']:>13,} tokens "
            f"{c['predictions']:>11,} predictions in {c['shards']} shards"
        )
    return "\n".join(lines)


def describe_example(tokenizer, row: dict) -> str:
    """One record as text: masked positions in brackets, with the original token.

    ``row`` has the Parquet columns (``input_ids``, ``attention_mask``,
    ``labels``); a selected position shows as ``[MASK→orig]`` when replaced by
    [MASK], ``{random→orig}`` when replaced at random, ``<same>`` when kept.
    """
    n = int(np.sum(row["attention_mask"]))
    words = []
    for token_id, label in zip(row["input_ids"][:n], row["labels"][:n]):
        token = tokenizer.id_to_token(int(token_id))
        if label < 0:
            words.append(token)
            continue
        original = tokenizer.id_to_token(int(label))
        if token == "[MASK]":
            words.append(f"[MASK→{original}]")
        elif token_id == label:
            words.append(f"<{original}>")
        else:
            words.append(f"{{{token}→{original}}}")
    return " ".join(words)


def _rows(output_dir: str, manifest: dict, split: str, n: int) -> list[dict]:
    """The first ``n`` records of a split, from Parquet when written, else TFRecord."""
    shards = sorted(
        (s for s in manifest["shards"] if s["split"] == split and s["records"]),
        key=lambda s: (s["format"] != "parquet", s["file"]),
    )
    rows = []
    for shard in shards:
        if shard["format"] != shards[0]["format"] or len(rows) >= n:
            break
        path = FileSystems.join(output_dir, shard["file"])
        with FileSystems.open(path, compression_type="uncompressed") as f:  # only what the n rows need
            if shard["format"] == "parquet":
                for batch in pq.ParquetFile(f).iter_batches(batch_size=n - len(rows)):
                    rows += batch.to_pylist()[: n - len(rows)]
                    if len(rows) >= n:
                        break
                continue
            for record in itertools.islice(encode.iter_tfrecords(f), n - len(rows)):
                example = encode.parse_example(record)
                labels = np.full(example["input_ids"].shape, encode.LABEL_IGNORE)
                k = int(example["masked_lm_weights"].sum())
                labels[example["masked_lm_positions"][:k]] = example["masked_lm_ids"][:k]
                rows.append(
                    {
                        "input_ids": example["input_ids"],
                        "attention_mask": example["input_mask"],
                        "labels": labels,
                    }
                )
    return rows


def inspect_main(argv):
    from mlmprep.pipeline import manifest as manifest_lib
    from mlmprep.pipeline.errors import CliParser, UsageError

    parser = CliParser(prog="mlmprep inspect", description="Show decoded examples, masks marked.")
    parser.add_argument("output_dir", help="An mlmprep output directory (with manifest.json).")
    parser.add_argument("-n", type=int, default=3, help="How many examples.")
    parser.add_argument("--split", default="train", help="train or validation.")
    args = parser.parse_args(argv)
    try:
        manifest = manifest_lib.read(args.output_dir)
    except Exception as e:
        raise UsageError(f"cannot read {args.output_dir}/manifest.json: {e}") from None
    with FileSystems.open(FileSystems.join(args.output_dir, manifest["tokenizer"]["file"])) as f:
        tokenizer = load_tokenizer(f.read().decode("utf-8"))
    rows = _rows(args.output_dir, manifest, args.split, args.n)
    if not rows:
        raise UsageError(f"split {args.split!r} has no records in {args.output_dir}")
    print("[MASK→original]: replaced by [MASK]; {random→original}: replaced at random; <token>: kept\n")
    for i, row in enumerate(rows):
        print(f"--- {args.split} example {i}")
        print(describe_example(tokenizer, row) + "\n")
