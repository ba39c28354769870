"""Does the trainer learn out of the box? ``mlmprep train --model tiny --steps 300``, every other flag at
its default, against a unigram model of the same validation labels.

  python bench/learning.py [--steps 300] [--model tiny] [--work DIR]

Builds shards from the first 10 MB of the Linux kernel documentation (technical prose;
``mlmprep run --validation_fraction 0.05 --num_shards 2``), trains, and prints the validation loss at
each evaluation beside the unigram loss (the entropy of the evaluated labels: what a model that ignores
the context scores). Target: the last validation loss below it.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import corpora  # this folder is on the path of a script run from it

CORPUS_BYTES = 10_000_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--work", type=pathlib.Path, default=None)
    args = parser.parse_args()
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="mlmprep-learning-"))
    cli = [sys.executable, "-m", "mlmprep.pipeline.cli"]
    data = work / "data"
    if not (data / "manifest.json").exists():
        corpus = work / "corpus.txt"
        with open(corpora.CORPORA / "bench" / "linux_docs_en.txt", "rb") as f:
            corpus.write_bytes(f.read(CORPUS_BYTES))
        run = [f"--input={corpus}", f"--output={data}", f"--tokenizer={corpora.VOCAB}"]
        subprocess.run([*cli, "run", *run, "--validation_fraction=0.05", "--num_shards=2"], check=True)
    model = work / f"model-{args.model}-{args.steps}"
    train = [f"--data={data}", f"--output={model}", f"--model={args.model}", f"--steps={args.steps}"]
    subprocess.run([*cli, "train", *train], check=True, stdout=subprocess.DEVNULL)
    history = json.loads((model / "history.json").read_text())
    for entry in history:
        loss, unigram = entry["val_loss"], entry["val_unigram_loss"]
        print(f"step {entry['step']:>6}: val_loss {loss:.4f}  unigram {unigram:.4f}")
    loss, unigram = history[-1]["val_loss"], history[-1]["val_unigram_loss"]
    verdict = "below" if loss < unigram else "NOT below"
    print(
        f"{args.model}, {args.steps} steps, defaults: val_loss {loss:.4f}, {verdict} the unigram "
        f"model's {unigram:.4f} (ratio {loss / unigram:.3f})"
    )


if __name__ == "__main__":
    main()
