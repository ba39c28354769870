"""The same job on 1 core with 1 worker and on 2 cores with 2 workers, side by side.

  python bench/scaling.py [--input GLOB ...] [--repeats 3]

Runs ``mlmprep run`` (default options, both formats) with the DirectRunner's
worker processes (``--direct_running_mode multi_processing``): 1 worker with
the whole process tree held to one core (``sched_setaffinity``), then 2
workers on the machine's 2 cores. A worker gets a core of its own, as
Dataflow runs one SDK process per vCPU: unpinned, one worker already keeps
about 1.7 of 2 cores busy, because the tokenizer and the Parquet writer run
on helper threads beside it. For reference it also runs the unpinned
in-process worker (what ``mlmprep run`` picks for inputs under 32 MB), and
each mode on a one-line input to show its fixed start-up cost.

It also measures the machine's own ceiling: the bare tokenizer over the same
documents in 1 process on 1 core, then their halves in 2 processes on 2 cores
at once. Two vCPUs of a virtual machine seldom give twice the work of one.
And in one more 2-worker run, sampled from /proc, how long the job keeps at
most one core busy: Python's and Beam's start-up, the shuffles that pass
through the runner's own process, stage tails. With the ceiling, Amdahl's
law turns that into an estimate of the best speedup the runner allows.

Prints medians and the speedup (target: >= 1.7). The default corpus is the
whole bench folder: 76 MB in 34 files, English and 26 other languages.
Absolute times vary by machine; compare the ratios.
"""

import argparse
import glob
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import memory  # this folder is on the path of a script run from it
import throughput

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
BENCH = SHARED / "corpora" / "bench"
ENV = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
_CORES = sorted(os.sched_getaffinity(0))
ONE_CORE, TWO_CORES = set(_CORES[:1]), set(_CORES[:2])
MODES = {  # name: (flags, cores)
    "1 worker process, 1 core": (
        ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
        ONE_CORE,
    ),
    "2 worker processes, 2 cores": (
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        TWO_CORES,
    ),
    "1 in-process worker, 1 core": (["--direct_running_mode=in_memory"], ONE_CORE),
    "1 in-process worker, 2 cores": (["--direct_running_mode=in_memory"], TWO_CORES),
}


def run(inputs: list[str], vocab: str, flags: list[str], cores: set[int], *, sample=False):
    """Wall seconds of a whole ``mlmprep run`` process tree, its manifest, and its one-core seconds.

    The last is None unless ``sample``: sampling takes a little CPU beside the run.
    """
    with tempfile.TemporaryDirectory() as work:  # gone before the next run, not flushed during it
        out = pathlib.Path(work, "out")
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *(f"--input={i}" for i in inputs),
             f"--output={out}", f"--tokenizer={vocab}", *flags],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),  # the worker processes inherit it
        )  # fmt: skip
        one_core = one_core_seconds(proc) if sample else None
        if proc.wait():
            raise subprocess.CalledProcessError(proc.returncode, proc.args)
        return time.perf_counter() - start, json.loads((out / "manifest.json").read_text()), one_core


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds so far of a process and of each of its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        pid: (int(f[11]) + int(f[12])) / tick for pid, f in memory.tree_stat(root).items()
    }  # utime + stime


def one_core_seconds(proc: subprocess.Popen, interval: float = 0.1) -> float:
    """Seconds, until ``proc`` ends, in which its process tree used under 1.5 cores (sampled).

    A process that ends between two samples loses its last CPU time, which
    can only add to the count.
    """
    seconds, last, then = 0.0, {}, time.perf_counter()
    while proc.poll() is None:
        time.sleep(interval)
        cpu, now = tree_cpu(proc.pid), time.perf_counter()
        if sum(cpu[pid] - last.get(pid, 0.0) for pid in cpu) < 1.5 * (now - then):
            seconds += now - then
        last, then = cpu, now
    return seconds


def ceiling(inputs: list[str], vocab: str) -> tuple[float, float]:
    """Tokenizer seconds for all documents on 1 core, and for their halves on 2 cores at once."""

    def start(part, parts, cores):
        argv = [f"--input={pattern}" for pattern in inputs] + [f"--vocab={vocab}"]
        return subprocess.Popen(
            [sys.executable, __file__, *argv, f"--tokenize_part={part}/{parts}"],
            env=ENV, stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )  # fmt: skip

    def seconds(procs):
        return max(float(p.communicate()[0]) for p in procs)

    one = seconds([start(0, 1, ONE_CORE)])
    two = seconds([start(k, 2, {core}) for k, core in enumerate(sorted(TWO_CORES))])
    return one, two


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", help="file pattern; repeat for more (default: bench/)")
    parser.add_argument("--vocab", default=str(SHARED / "vocab" / "bert-base-uncased" / "vocab.txt"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenize_part", help=argparse.SUPPRESS)  # K/N: one process of ceiling()
    args = parser.parse_args()
    inputs = args.input or [str(BENCH / "*.txt"), str(BENCH / "debian_handbook" / "*.txt")]
    if args.tokenize_part:
        part, parts = map(int, args.tokenize_part.split("/"))
        files = sorted(path for pattern in inputs for path in glob.glob(pattern))
        print(throughput.limit(files, args.vocab, part, parts)[0])
        return
    if len(TWO_CORES) < 2:
        raise SystemExit("scaling from 1 to 2 cores needs a machine with 2 cores or more")
    tiny = pathlib.Path(tempfile.mkdtemp(), "one.txt")
    tiny.write_text("one short document\n")

    seconds = {name: [] for name in MODES}
    startup = {name: [] for name in MODES}
    shards = {}
    machine, sampled = [], []
    two_workers = MODES["2 worker processes, 2 cores"]
    names = list(MODES)
    for repeat in range(args.repeats):
        machine.append(ceiling(inputs, args.vocab))
        # Each repetition starts one mode later, so no mode always follows the same one.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            flags, cores = MODES[name]
            startup[name].append(run([str(tiny)], args.vocab, flags, cores)[0])
            took, manifest, _ = run(inputs, args.vocab, flags, cores)
            seconds[name].append(took)
            shards[name] = sorted((s["file"], s["sha256"]) for s in manifest["shards"])
        took, _, one_core = run(inputs, args.vocab, *two_workers, sample=True)
        sampled.append((took, one_core))
    if len({tuple(s) for s in shards.values()}) != 1:
        raise SystemExit("the runs wrote different shards")

    counts = manifest["counts"]
    tokens = sum(s["tokens"] for s in counts["splits"].values())
    print(f"input: {' '.join(inputs)}: {counts['counters']['files_read']} files,")
    print(f"  {counts['counters']['characters_read'] / 1e6:.1f} M characters, {tokens / 1e6:.1f} M tokens")
    print(f"{args.repeats} repetitions (medians); every run wrote the same shards")
    med = {name: statistics.median(v) for name, v in seconds.items()}
    fixed = {name: statistics.median(v) for name, v in startup.items()}
    for name in MODES:
        low, high = min(seconds[name]), max(seconds[name])
        print(f"  {name:30} {med[name]:7.2f} s  ({low:.2f} to {high:.2f}; start-up {fixed[name]:.2f} s)")
    one, two = "1 worker process, 1 core", "2 worker processes, 2 cores"
    steady = (med[one] - fixed[one]) / (med[two] - fixed[two])
    alone, pair = (statistics.median(m[k] for m in machine) for k in (0, 1))
    bound = statistics.median(a / b for a, b in machine)
    print(f"the machine's ceiling, the bare tokenizer on the same documents: {alone:.2f} s on 1 core,")
    print(f"  {pair:.2f} s for their halves on 2 cores at once: {bound:.2f}x")
    speedup = med[one] / med[two]
    print(f"speedup, 1 worker on 1 core -> 2 workers on 2 cores: {speedup:.2f}")
    print(f"  (target >= 1.7; without start-up {steady:.2f}; {speedup / bound:.2f} of the ceiling)")
    took, serial = (statistics.median(s[k] for s in sampled) for k in (0, 1))
    amdahl = med[one] / (serial + (med[one] - serial) / bound)
    print(f"sampled 2-worker runs: {serial:.2f} s of {took:.2f} s used under 1.5 cores (start-up, shuffles")
    print(
        f"  through the runner's process, stage tails); Amdahl with the ceiling: about {amdahl:.2f}x at best"
    )
    base = "1 in-process worker, 2 cores"
    print(f"2 worker processes against 1 unpinned in-process worker: {med[base] / med[two]:.2f}")


if __name__ == "__main__":
    main()
