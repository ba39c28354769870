"""One run per recipe on the same real corpus: what each recipe's data is, slot utilization and masked share.

  python bench/recipes.py [--corpus small/jargon.txt] [--recipe bert roberta ...]

Each recipe runs as ``mlmprep run --recipe NAME`` (bert-base-uncased, one shard). Utilization is the
share of the sequences' slots that hold real tokens. The masked share is predictions over real
tokens: counted in the output where the job masks; where it writes unmasked rows (``--masking none``),
the trainer's own masker (``trainer.data.DynamicMasker``, the job's masking code) masks the rows once
with the recipe's training flags, as ``mlmprep train --recipe NAME`` would (needs TensorFlow).
"""

import argparse
import contextlib
import io
import json
import pathlib
import sys
import tempfile
import time

import corpora  # this folder is on the path of a script run from it
import numpy as np
import pyarrow.parquet as pq

from mlmprep.pipeline import manifest as manifest_lib


def _trainer_masked_share(out: pathlib.Path, manifest: dict, name: str) -> tuple[int, int]:
    """(predictions, real tokens) of the train split's rows as the trainer masks them, batch 0."""
    from mlmprep.trainer import data, masking
    from mlmprep.trainer import flags as train_flags

    with contextlib.redirect_stdout(io.StringIO()):
        args = train_flags.parse("train", [f"--recipe={name}", f"--data={out}", "--output=unused"])
    config = masking.resolve(manifest, {f: getattr(args, f) for f in masking.FIELDS}, args.dynamic_masking)
    masker = data.DynamicMasker(str(out), manifest, args.seed, config)
    predictions = tokens = 0
    for shard in manifest["shards"]:
        if shard["split"] != "train" or shard["format"] != "parquet":
            continue
        table = pq.read_table(out / shard["file"])
        ids = np.array(table.column("input_ids").to_pylist(), dtype=np.int32)
        lengths = np.array(table.column("attention_mask").to_pylist()).sum(axis=1)
        starts = np.array(table.column("word_starts").to_pylist(), dtype=bool)
        _, _, _, weights = masker.mask(0, ids, lengths, starts)
        predictions += int(weights.sum())
        tokens += int(lengths.sum())
    return predictions, tokens


def run(name: str, corpus: pathlib.Path, work: pathlib.Path) -> dict:
    from mlmprep.pipeline import cli

    out = work / name
    argv = ["run", f"--recipe={name}", f"--input={corpus}", f"--tokenizer={corpora.VOCAB}", f"--output={out}"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        status = cli.main([*argv, "--num_shards=1"])
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"{name}: exit {status}\n{printed.getvalue()}")
    manifest = json.loads((out / "manifest.json").read_text())
    made, train = manifest_lib.settings(manifest), manifest["counts"]["splits"]["train"]
    slots = train["sequences"] * made.packing.max_seq_length
    if made.masking.unmasked:
        predictions, tokens = _trainer_masked_share(out, manifest, name)
        where = "in training"
    else:
        predictions, tokens = train["predictions"], train["tokens"]
        where = f"in the data (x{made.masking.dupe_factor})"
    return {
        "recipe": name,
        "length": made.packing.max_seq_length,
        "packing": made.packing.mode,
        "pairs": made.pairs.mode,
        "masking": made.masking.mode,
        "sequences": train["sequences"],
        "utilization": train["tokens"] / slots,
        "masked": predictions / tokens,
        "where": where,
        "seconds": seconds,
    }


def main():
    from mlmprep.pipeline import recipes

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="small/jargon.txt", help="A file under the shared corpora.")
    parser.add_argument("--recipe", nargs="*", default=list(recipes.RECIPES))
    args = parser.parse_args()
    corpus = corpora.CORPORA / args.corpus
    print(f"corpus {args.corpus} ({corpus.stat().st_size / 1e6:.1f} MB), bert-base-uncased, train split")
    print("| recipe | length | packing | pairs | masking | sequences | utilization | masked share | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name in args.recipe:
            r = run(name, corpus, pathlib.Path(work))
            print(
                f"| {r['recipe']} | {r['length']} | {r['packing']} | {r['pairs']} | {r['masking']} | "
                f"{r['sequences']:,} | {r['utilization']:.1%} | {r['masked']:.2%} {r['where']} | "
                f"{r['seconds']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
