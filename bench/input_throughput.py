"""Sequences/s that the trainer's tf.data reader delivers on this CPU, without a model.

So we know the input side will not starve a GPU: compare with the model's
sequences/s from bench/model_throughput.py on the accelerator.

  python bench/input_throughput.py --data OUT_DIR [--batch_size 256]

On an unmasked output (--masking none) it measures the trainer's token, word
and span masking. Without --data it first builds shards from ../shared/data/corpora/small/kjv.txt
with the bert-base-uncased vocabulary.
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlmprep.trainer import data  # noqa: E402
from mlmprep.trainer.masking import resolve  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def measure(data_dir, *, batch_size, masking, batches) -> float:
    dataset = data.make_dataset(data_dir, "train", batch_size=batch_size, masking=masking)
    iterator = iter(dataset)
    for _ in range(5):  # fill the prefetch and shuffle buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="An mlmprep output directory.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    data_dir = args.data
    if data_dir is None:
        from mlmprep.pipeline import job

        data_dir = os.path.join(tempfile.mkdtemp(), "kjv")
        job.run(
            [
                f"--input={SHARED / 'corpora' / 'small' / 'kjv.txt'}",
                f"--output={data_dir}",
                f"--tokenizer={SHARED / 'vocab' / 'bert-base-uncased' / 'vocab.txt'}",
                "--num_shards=8",
            ]
        )
    print(f"cores: {os.cpu_count()}, batch {args.batch_size}, {args.batches} batches")
    manifest = data.read_manifest(data_dir)
    if data.is_unmasked(manifest):  # --masking none: the trainer masks every batch, by any mode
        modes = {
            f"{m} masking": resolve(manifest, {"masking": m}, dynamic=True) for m in ("token", "word", "span")
        }
    else:
        modes = {"stored masks": None, "dynamic masking": resolve(manifest, {}, dynamic=True)}
    for name, masking in modes.items():
        rate = measure(data_dir, batch_size=args.batch_size, masking=masking, batches=args.batches)
        print(f"{name:<16} {rate:>10,.0f} sequences/s")


if __name__ == "__main__":
    main()
