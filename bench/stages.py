"""Where the CPU goes: each of the job's steps, timed alone on one thread, beside the tokenizer's own time.

  python bench/stages.py [--corpus long short]

Runs the job's own functions (no Beam) over a corpus of bench/corpora.py in
batches of the job's size: both reading passes, tokenizing, reading the ids,
packing, sequence keys, masking, Arrow rows, a sorted run file written and
read back, and both output formats. Prints CPU seconds per step and as a
share of the tokenizer's. What the whole job spends beyond these (Beam,
start-up) is bench/throughput.py's M1 less their sum.
"""

import argparse
import collections
import hashlib
import io
import os
import pathlib
import statistics
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool

import corpora  # noqa: E402  (this folder is on the path of a script run from it)
import numpy as np  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402

from mlmprep.transforms import documents, encode, keys, mask, pack, records, sources, tokenize  # noqa: E402
from mlmprep.transforms.beam import groups, write  # noqa: E402
from mlmprep.transforms.beam.read import BATCH_CHARS  # noqa: E402


def measure(paths, masking: str = "token") -> tuple[collections.Counter, dict]:
    cpu = collections.Counter()

    def timed(step, fn, *args, **kwargs):
        start = time.process_time()
        out = fn(*args, **kwargs)
        cpu[step] += time.process_time() - start
        return out

    ranges = [sources.FileRange(str(p)) for p in paths]
    source = sources.DocumentSource(FileSystems.open)
    for file_range in ranges:
        for docs in timed("read, first pass (digests)", lambda r: list(source.batches(r)), file_range):
            timed("read, first pass (digests)", documents.document_keys, docs)
    source = sources.DocumentSource(FileSystems.open)
    docs = [
        d for r in ranges for b in timed("read, second pass", lambda r: list(source.batches(r)), r) for d in b
    ]
    tokenizer = tokenize.load_tokenizer(tokenize.tokenizer_json(corpora.VOCAB.read_bytes()))
    vocab = tokenize.vocabulary(tokenizer)
    special, ids_type = vocab.unselectable_lookup(), records.id_type(vocab.size, 128)
    config = mask.MaskingConfig(masking=masking)
    starts_of = tokenize.id_word_starts(vocab, vocab.word_source)  # WordPiece: words read off the ids
    shape = dict(max_seq_length=128, frame=vocab.frame, pad_id=vocab.pad_id)
    rows, batch, chars, counts = [], [], 0, collections.Counter()
    for i, doc in enumerate(docs):
        batch.append(doc)
        chars += sum(map(len, doc))
        if chars < BATCH_CHARS and i < len(docs) - 1:
            continue
        texts = [piece for pieces in batch for piece in pieces]
        encodings = timed("tokenize", tokenizer.encode_batch_fast, texts, add_special_tokens=False)
        ids = timed(
            "token ids from encodings", lambda es: [np.asarray(e.ids, dtype=np.int32) for e in es], encodings
        )
        input_ids, lengths, _, _ = timed("pack", pack.pack_documents, ids, **shape)
        sequence_keys = timed("sequence keys", pack.sequence_keys, input_ids, lengths)
        rng_keys = keys.record_keys(sequence_keys, seed=12345, dupe=0)
        word_starts = None if masking == "token" else timed("word starts", starts_of.__getitem__, input_ids)
        if masking == "none":
            masked = timed("mask", records.unmasked, input_ids, lengths, word_starts)
        else:
            masked = timed(
                "mask", mask.mask_batch, input_ids, lengths, rng_keys, config=config, is_special=special,
                mask_id=vocab.mask_id, random_ids=vocab.random_ids, word_starts=word_starts,
            )  # fmt: skip
        splits = np.zeros(len(lengths), np.int8)
        rows.append(timed("Arrow rows", records.to_rows, splits, rng_keys >> np.uint64(1), masked, ids_type))
        counts["tokens"] += sum(x.size for x in ids)
        counts["sequences"] += len(lengths)
        batch, chars = [], 0
    counts["documents"] = len(docs)
    with tempfile.TemporaryDirectory() as tmp:
        writer = groups.WriteRuns(write.RECORD_ORDER, tmp)
        writer.start_bundle()
        runs = [
            r for b in rows for r in timed("run files: sort, write", lambda b: list(writer.process(b)), b)
        ]
        runs += [out.value for out in timed("run files: sort, write", lambda: list(writer.finish_bundle()))]
        parts = [(run.path, 0, run.rows) for run in runs]
        merged = groups.MergedGroup(parts, write.RECORD_ORDER).slices(encode.slice_rows(128))
        parquet = encode.ParquetShard(io.BytesIO(), unmasked=masking == "none")
        while (rows_slice := timed("run files: merge, read", next, merged, None)) is not None:
            predictions = config.max_predictions_per_seq
            batch = timed(
                "padded batch", records.to_masked, rows_slice,
                max_seq_length=128, max_predictions_per_seq=predictions, pad_id=vocab.pad_id,
            )  # fmt: skip
            data = timed("TFRecord", lambda b: encode.tfrecord_bytes(encode.tf_examples(b)), batch)
            timed("sha256", hashlib.sha256, data)
            timed("Parquet", parquet.add, batch)
        timed("Parquet", parquet.close)
    return cpu, counts


def compare(paths, modes: list[str], repeats: int) -> None:
    """Each mode's CPU seconds in the steps after the tokenizer (reading, tokenizing and the ids cost
    every mode the same), medians of interleaved rounds, and the ratio to token masking's."""
    after = collections.defaultdict(list)
    for _ in range(repeats):
        for mode in modes:
            cpu, counts = measure(paths, mode)
            shared = (
                "read, first pass (digests)",
                "read, second pass",
                "tokenize",
                "token ids from encodings",
            )
            after[mode].append(sum(v for k, v in cpu.items() if k not in shared))
            print(f"  {mode}: {after[mode][-1]:.2f} s after the tokenizer", flush=True)
    base = statistics.median(after["token"])
    print(f"\nCPU seconds after the tokenizer, medians of {repeats} ({counts['tokens'] / 1e6:.1f} M tokens):")
    for mode in modes:
        median = statistics.median(after[mode])
        print(f"  --masking {mode:6s} {median:7.2f}  {median / base:5.2f}x token's")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", default=["long", "short"], choices=sorted(corpora.BASE))
    parser.add_argument(
        "--masking",
        nargs="+",
        default=[],
        choices=mask.MASKINGS,
        help="Also time the steps with these --masking modes, interleaved with token masking: the steps "
        "each mode changes (masking, rows, run files, the writers), side by side.",
    )
    parser.add_argument("--repeats", type=int, default=1, help="With --masking: rounds of all modes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpus:
            paths = corpora.build(name, 1, pathlib.Path(tmp, name))
            if args.masking:
                compare(paths, ["token", *args.masking], args.repeats)
                continue
            cpu, counts = measure(paths)
            size = sum(p.stat().st_size for p in paths)
            print(
                f"\n{name} ({size / 1e6:.0f} MB, {counts['documents']:,} documents, "
                f"{counts['tokens'] / 1e6:.1f} M tokens, {counts['sequences']:,} sequences): "
                "CPU seconds on one thread"
            )
            for step, seconds in cpu.items():
                print(f"  {step:30s} {seconds:7.2f}  {seconds / cpu['tokenize']:6.1%}")
            rest = sum(s for step, s in cpu.items() if step != "tokenize")
            print(f"  {'all but the tokenizer':30s} {rest:7.2f}  {rest / cpu['tokenize']:6.1%}")


if __name__ == "__main__":
    main()
