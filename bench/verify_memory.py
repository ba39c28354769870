"""Peak memory of ``mlmprep verify`` on an output of four shards of 64 MB or more.

  python bench/verify_memory.py [--scale 2] [--work DIR]

Builds the output once (the bench corpus at ``--scale``, ``--num_shards 4``,
TFRecord and Parquet) into ``--work``, then runs ``mlmprep verify`` on it and
prints its peak resident memory (the kernel's own peak of the process), the
output's size, and their ratio. Target: under 500 MiB, whatever the output's
size: verify streams each shard a slice of rows at a time.
"""

import argparse
import pathlib
import sys
import tempfile

import corpora  # this folder is on the path of a script run from it
import memory

MIB = 1 << 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=2, help="copies of the bench corpus")
    parser.add_argument("--work", type=pathlib.Path, default=None, help="where to keep the corpus and output")
    args = parser.parse_args()
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="mlmprep-verify-bench-"))
    output = work / f"out-x{args.scale}"
    if not (output / "manifest.json").exists():
        inputs = [str(p) for p in corpora.build("bench", args.scale, work / f"corpus-x{args.scale}")]
        _, _, seconds = memory.run(inputs, output, ["--num_shards=4", "--overwrite"])
        print(f"built {output} in {seconds:.0f} s")
    shards = sorted(output.glob("train-*.tfrecord"))
    sizes = [p.stat().st_size / MIB for p in shards]
    total = sum(p.stat().st_size for p in output.iterdir() if p.is_file()) / MIB
    print(f"output: {len(shards)} TFRecord shards of {min(sizes):.0f}-{max(sizes):.0f} MiB, "
          f"with Parquet {total:.0f} MiB in all")  # fmt: skip
    if len(shards) < 4 or min(sizes) < 64:
        sys.exit("the output needs 4 shards of 64 MiB or more: raise --scale")
    peak, _, seconds = memory.peak_rss([sys.executable, "-m", "mlmprep.pipeline.cli", "verify", str(output)])
    print(f"verify: peak RSS {peak / MIB:.0f} MiB (target < 500) in {seconds:.0f} s; "
          f"{peak / MIB / total:.2f} bytes of memory per byte of output")  # fmt: skip


if __name__ == "__main__":
    main()
