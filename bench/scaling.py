"""The same job with 1 and 2 DirectRunner worker processes, side by side.

  python bench/scaling.py [--input GLOB] [--repeats 3]

Runs ``mlmprep run`` (default options, both formats) over the corpus with
``--direct_running_mode multi_processing`` and 1, then 2, worker processes:
the same runner and the same job, only the worker count differs. Also runs
the one in-process worker (``in_memory``, what ``mlmprep run`` picks for
small inputs) for reference, and each mode on a one-line input to show its
fixed start-up cost. Prints medians and the speedups (target: >= 1.7 on 2
cores). The default corpus is every text file of the bench folder: about
50 MB in 8 files, several languages. Absolute times vary by machine;
compare the ratios.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
ENV = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
MODES = {
    "in-process, 1 worker": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "1 worker process": ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
    "2 worker processes": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def run(inputs: str, vocab: str, mode: list[str]) -> tuple[float, dict]:
    """Wall seconds of a whole ``mlmprep run`` process, and its manifest."""
    out = pathlib.Path(tempfile.mkdtemp(), "out")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--input={inputs}", f"--output={out}",
         f"--tokenizer={vocab}", *mode],
        check=True, env=ENV, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start, json.loads((out / "manifest.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(SHARED / "corpora" / "bench" / "*.txt"))
    parser.add_argument("--vocab", default=str(SHARED / "vocab" / "bert-base-uncased" / "vocab.txt"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tiny = pathlib.Path(tempfile.mkdtemp(), "one.txt")
    tiny.write_text("one short document\n")

    seconds = {name: [] for name in MODES}
    startup = {name: [] for name in MODES}
    shards = {}
    for _ in range(args.repeats):
        for name, mode in MODES.items():
            startup[name].append(run(str(tiny), args.vocab, mode)[0])
            took, manifest = run(args.input, args.vocab, mode)
            seconds[name].append(took)
            shards[name] = sorted((s["file"], s["sha256"]) for s in manifest["shards"])
    if len({tuple(s) for s in shards.values()}) != 1:
        raise SystemExit("the runs wrote different shards")

    counts = manifest["counts"]
    megabytes = counts["counters"]["characters_read"] / 1e6
    tokens = sum(s["tokens"] for s in counts["splits"].values())
    print(f"input: {args.input}: {counts['counters']['files_read']} files, {megabytes:.1f} M characters,")
    print(f"  {tokens / 1e6:.1f} M tokens; {args.repeats} repetitions (medians); {os.cpu_count()} cores")
    print("identical shards from every mode")
    med = {name: statistics.median(v) for name, v in seconds.items()}
    fixed = {name: statistics.median(v) for name, v in startup.items()}
    for name in MODES:
        print(f"  {name:22} {med[name]:7.2f} s  (start-up {fixed[name]:.2f} s)")
    one, two, inproc = med["1 worker process"], med["2 worker processes"], med["in-process, 1 worker"]
    steady = (one - fixed["1 worker process"]) / (two - fixed["2 worker processes"])
    print(f"speedup 1 -> 2 worker processes: {one / two:.2f}  (without start-up {steady:.2f}; target >= 1.7)")
    print(f"speedup in-process 1 worker -> 2 worker processes: {inproc / two:.2f}")


if __name__ == "__main__":
    main()
