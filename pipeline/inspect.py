"""``mlmprep inspect DIR``: decoded examples of an output, the masked positions marked."""

import contextlib

import numpy as np

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import shard_files
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import records


def _bare(token: str) -> str:
    """The mask token as a mark shows it: [MASK→orig] in BERT's vocabulary, [<mask>→orig] in RoBERTa's."""
    return token[1:-1] if token.startswith("[") and token.endswith("]") else token


def example_words(tokenizer, row: dict, mask_id: int) -> list[tuple[str, str | None]]:
    """One record as (text, kind) per position: kind None for a position not selected, else "mask",
    "random" or "kept", with the text as ``describe_example`` shows it.

    ``row`` has the Parquet columns (``input_ids``, ``attention_mask``,
    ``labels``; ``first_rows`` gives them from either format).
    """
    n = int(np.sum(row["attention_mask"]))
    words = []
    for token_id, label in zip(row["input_ids"][:n], row["labels"][:n]):
        token = tokenizer.id_to_token(int(token_id))
        if label < 0:
            words.append((token, None))
            continue
        original = tokenizer.id_to_token(int(label))
        if token_id == mask_id:
            words.append((f"[{_bare(token)}→{original}]", "mask"))
        elif token_id == label:
            words.append((f"<{original}>", "kept"))
        else:
            words.append((f"{{{token}→{original}}}", "random"))
    return words


def describe_example(tokenizer, row: dict, mask_id: int) -> str:
    """One record as text: a selected position shows as ``[MASK→orig]`` when replaced by the mask token
    (``[<mask>→orig]`` in RoBERTa's vocabulary), ``{random→orig}`` when replaced at random, ``<orig>``
    when kept."""
    return " ".join(text for text, _ in example_words(tokenizer, row, mask_id))


def first_rows(
    output_dir: str, manifest: manifest_lib.Manifest, split: str, n: int, frame=None
) -> list[dict]:
    """The first ``n`` records of a split, from Parquet when written, else the first format: only what
    they need is read; ``frame``, the tokenizer's (``Vocabulary.frame``), finds a pair's segments."""
    settings = manifest_lib.settings(manifest)
    seq = settings.packing.max_seq_length
    pairs = settings.pairs.enabled
    sources = "sources" in manifest
    shards = sorted(
        (s for s in manifest["shards"] if s["split"] == split and s["records"]),
        key=lambda s: (s["format"] != "parquet", s["file"]),
    )
    rows = []
    for shard in shards:
        if shard["format"] != shards[0]["format"] or len(rows) >= n:
            break
        with contextlib.ExitStack() as stack:
            read, _ = shard_files.slices(
                output_dir, manifest, shard, stack, frame, settings=settings, rows=n - len(rows)
            )
            batch, extra = next(read)
        labels = records.labels(batch)
        if sources:
            values, counts = extra["source_ids"]
            per_row = np.split(values, np.cumsum(counts)[:-1])
        for i, length in enumerate(batch.lengths.tolist()):
            mask = (np.arange(seq) < length).astype(np.int64)
            rows.append({"input_ids": batch.input_ids[i], "attention_mask": mask, "labels": labels[i]})
            if sources:
                rows[-1]["source_ids"] = per_row[i].tolist()
            if pairs:
                rows[-1]["next_sentence_label"] = int(batch.next_sentence_labels[i])
    return rows


_PAIR_LABELS = {"nsp": ("IsNext", "IsRandom"), "sop": ("in order", "swapped")}


def main(argv):
    parser = CliParser(prog="mlmprep inspect", description="Show decoded examples, masks marked.")
    parser.add_argument("output_dir", help="An mlmprep output directory (with manifest.json).")
    parser.add_argument("-n", type=int, default=3, help="How many examples.")
    parser.add_argument("--split", default="train", help="train or validation.")
    args = parser.parse_args(argv)
    try:
        manifest = manifest_lib.read(args.output_dir)
        with manifest_lib.open_file(args.output_dir, manifest["tokenizer"]["file"]) as f:
            tokenizer, vocab = manifest_lib.vocabulary(manifest, f.read().decode("utf-8"))
    except Exception as e:
        raise UsageError(f"cannot read the output {args.output_dir}: {e}") from None
    rows = first_rows(args.output_dir, manifest, args.split, args.n, vocab.frame)
    if not rows:
        raise UsageError(f"split {args.split!r} has no records in {args.output_dir}")
    mask = tokenizer.id_to_token(vocab.mask_id)
    print(f"frame: {vocab.frames['single']}; pairs: {vocab.frames['pair']}")
    legend = f"[{_bare(mask)}→original]: replaced by {mask}; {{random→original}}: replaced at random"
    settings = manifest_lib.settings(manifest)
    if settings.masking.unmasked:
        print("unmasked (--masking none): the trainer masks every batch\n")
    else:
        print(f"{legend}; <token>: kept\n")
    for i, row in enumerate(rows):
        label = row.get("next_sentence_label")
        pair = "" if label is None else f" (pair label {label}: {_PAIR_LABELS[settings.pairs.mode][label]})"
        names = [s["name"] for s in manifest.get("sources", ())]
        shown = ""
        if "source_ids" in row:  # the source of each piece, in the order the pieces stand
            shown = f" (source{'s' if len(row['source_ids']) > 1 else ''}: "
            shown += ", ".join(names[i] for i in row["source_ids"]) + ")"
        print(f"--- {args.split} example {i}{pair}{shown}")
        print(describe_example(tokenizer, row, vocab.mask_id) + "\n")
