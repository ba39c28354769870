"""Peak memory of the job's whole process tree, for 1x and Nx a corpus, side by side.

  python bench/memory.py [--corpus bench] [--scale 4] [--scrambled] [run flags ...]

Runs ``mlmprep run`` with default options on the corpus (bench/corpora.py)
and on N (``--scale``, 4 by default) distinct copies of it, samples the
resident memory of the job's process and all its descendants every 20 ms,
and prints the peaks of their sum, their ratio (target: at most 1.3) and
what the Nx run holds beyond the 1x run per extra byte of input (target: at
most 0.5). Then the same with a fixed ``--num_shards 8``, and what each
process holds before any data (a run on a one-line input in the worker mode
the Nx run gets). Any run flags given are passed on; with ``--near_dedup``,
``--scrambled`` copies keep it from removing the copies.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import corpora  # this folder is on the path of a script run from it

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_stat(root: int) -> dict[int, list[str]]:
    """The /proc stat fields (after the command name) of ``root`` and of each of its descendants."""
    children, stats = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # gone since the listing
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
            stats[int(entry)] = fields
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            tree[pid] = stats[pid]
            todo += children.get(pid, [])
    return tree


def peak_rss(argv: list[str]) -> tuple[int, dict[int, int], float]:
    """Peak of the tree's summed resident bytes (sampled every 20 ms), each process's peak, wall seconds.

    The root process's own peak is exact (the kernel's, from ``wait4``):
    sampling alone can miss a short one.
    """
    start = time.perf_counter()
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, each = 0, {}
    while True:
        pid, status, usage = os.wait4(job.pid, os.WNOHANG)
        if pid:
            break
        rss = {p: int(fields[21]) * PAGE for p, fields in tree_stat(job.pid).items()}
        peak = max(peak, sum(rss.values()))
        for p, n in rss.items():
            each[p] = max(each.get(p, 0), n)
        time.sleep(0.02)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed with {os.waitstatus_to_exitcode(status)}")
    each[job.pid] = max(each.get(job.pid, 0), usage.ru_maxrss * 1024)
    return max(peak, each[job.pid]), each, time.perf_counter() - start


def run(inputs: list[str], output: pathlib.Path, flags: list[str]) -> tuple[int, dict[int, int], float]:
    cli = [sys.executable, "-m", "mlmprep.pipeline.cli", "run"]
    argv = [*cli, *(f"--input={i}" for i in inputs), f"--output={output}", f"--tokenizer={corpora.VOCAB}"]
    return peak_rss([*argv, *flags])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="bench", choices=sorted(corpora.BASE))
    parser.add_argument("--scale", type=int, default=4, help="The larger run's copies of the corpus.")
    parser.add_argument(
        "--scrambled",
        action="store_true",
        help="Copies not near-duplicates of each other (for --near_dedup).",
    )
    args, runner_args = parser.parse_known_args()
    from mlmprep.pipeline.job import available_cores, worker_mode

    mib = 1 << 20
    with tempfile.TemporaryDirectory() as tmp:
        sizes, globs = {}, {}
        big = args.scale
        for scale in (1, big):
            folder = pathlib.Path(tmp, f"x{scale}")
            files = corpora.build(args.corpus, scale, folder, args.scrambled)
            sizes[scale] = sum(p.stat().st_size for p in files)
            globs[scale] = [str(folder / "*.txt")]
        print(
            f"corpus {args.corpus}: 1x {sizes[1] / 1e6:.0f} MB, {big}x {sizes[big] / 1e6:.0f} MB (distinct)"
        )
        for name, flags in (("default options", []), ("--num_shards 8", ["--num_shards=8"])):
            peaks = {}
            for scale in (1, big):
                out = pathlib.Path(tmp, f"out-{scale}")
                peaks[scale], each, seconds = run(globs[scale], out, [*flags, *runner_args])
                subprocess.run(["rm", "-rf", str(out)], check=True)
                detail = ", ".join(f"{n / mib:.0f}" for n in sorted(each.values(), reverse=True))
                print(f"  {name}, {scale}x: peak {peaks[scale] / mib:7.0f} MiB summed over "
                      f"{len(each)} processes ({detail} MiB each), {seconds:5.1f} s")  # fmt: skip
            extra = (peaks[big] - peaks[1]) / (sizes[big] - sizes[1])
            print(f"  {name}: {big}x/1x {peaks[big] / peaks[1]:.2f} (target <= 1.3); "
                  f"{extra:.3f} bytes per extra input byte (target <= 0.5)")  # fmt: skip
        one = pathlib.Path(tmp, "one.txt")
        one.write_text("one short document\n")
        mode, workers = worker_mode(sizes[big], available_cores())
        flags = [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}", *runner_args]
        peak, each, _ = run([str(one)], pathlib.Path(tmp, "out-one"), flags)
        detail = ", ".join(f"{n / mib:.0f}" for n in sorted(each.values(), reverse=True))
        print(f"before any data ({mode}, {workers} worker(s)): {peak / mib:.0f} MiB in {len(each)} "
              f"processes ({detail} MiB each)")  # fmt: skip


if __name__ == "__main__":
    main()
