"""Peak memory of the whole process tree for 1x and 4x the same corpus, side by side.

  python bench/memory.py [--corpus FILE] [--runner_args ...]

Runs ``mlmprep run --nodedup`` (so the 4 copies are all processed) on the
corpus and on four copies of it, samples the resident memory of the job's
process and all its descendants every 20 ms (and takes the kernel's exact
peak of the job's own process), and prints both peaks and their ratio
(target: at most 1.3).

Both runs use the same runner mode (one in-process worker; otherwise the
DirectRunner's default would start worker processes for the larger input
only) and the same shard size (``--target_shard_mb 8``): the final write
holds one shard's records, which is bounded by the shard size, not the
corpus. Any other run flags given are passed on and override these.

Then, in a process of its own, what writing the largest shard the default
``--target_shard_mb 128`` makes at the default length 128 holds beyond its
records.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


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


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant."""
    return sum(int(fields[21]) for fields in tree_stat(root).values()) * os.sysconf("SC_PAGE_SIZE")


def peak_rss(argv: list[str]) -> tuple[int, float]:
    """Peak resident bytes of the job's process tree (sampled every 20 ms), and its wall seconds.

    The root process's own peak is exact (the kernel's, from ``wait4``):
    sampling alone can miss a short one, such as a shard being encoded.
    """
    start = time.perf_counter()
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while True:
        pid, status, usage = os.wait4(job.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(job.pid))
        time.sleep(0.02)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed with {os.waitstatus_to_exitcode(status)}")
    return max(peak, usage.ru_maxrss * 1024), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(SHARED / "corpora" / "bench" / "perl_docs.txt"))
    parser.add_argument("--vocab", default=str(SHARED / "vocab" / "bert-base-uncased" / "vocab.txt"))
    parser.add_argument("--shard_write", action="store_true", help=argparse.SUPPRESS)
    args, runner_args = parser.parse_known_args()
    if args.shard_write:
        print(shard_write())
        return
    defaults = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--target_shard_mb=8"]
    given = {a.split("=")[0] for a in runner_args}
    runner_args = [d for d in defaults if d.split("=")[0] not in given] + runner_args
    results = {}
    for copies in (1, 4):
        with tempfile.TemporaryDirectory() as tmp:
            work = pathlib.Path(tmp)
            for i in range(copies):
                shutil.copyfile(args.corpus, work / f"copy{i}.txt")
            cli = [sys.executable, "-m", "mlmprep.pipeline.cli", "run"]
            flags = [f"--input={work}/*.txt", f"--output={work}/out", f"--tokenizer={args.vocab}"]
            argv = [*cli, *flags, "--nodedup", *runner_args]
            results[copies] = peak_rss(argv)
    mb = os.path.getsize(args.corpus) / 1e6
    for copies, (peak, seconds) in results.items():
        print(
            f"{copies}x ({copies * mb:6.1f} MB of text): peak RSS {peak / 2**20:8.1f} MiB in {seconds:5.1f} s"
        )
    print(f"ratio 4x/1x: {results[4][0] / results[1][0]:.2f}  (target <= 1.3)")
    # A fresh process: its peak is the write's alone.
    shard = subprocess.run(
        [sys.executable, __file__, "--shard_write"], check=True, capture_output=True, text=True
    )
    print(shard.stdout, end="")


def shard_write(target_mb=128, length=128, predictions=20) -> str:
    """Writes one shard of random records through the job's writer; its peak over the records."""
    import numpy as np

    from mlmprep.transforms import records, write

    num_records = (target_mb << 20) // write.estimated_record_bytes(length, predictions)
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(0, num_records, 4096):
        n = min(4096, num_records - len(payloads))
        lengths = rng.integers(length // 2, length + 1, n).astype(np.int32)
        positions = np.sort(rng.integers(1, length // 2 - 1, (n, predictions)), axis=1).astype(np.int32)
        batch = records.MaskedBatch(
            rng.integers(1000, 30000, (n, length)).astype(np.int32), lengths, positions,
            rng.integers(1000, 30000, (n, predictions)).astype(np.int32), np.full(n, predictions, np.int32),
        )  # fmt: skip
        payloads += records.to_payloads(batch)
    keyed = list(enumerate(payloads))
    del payloads, batch
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here
    held = _status_mib("VmRSS")  # glibc may keep what was freed above for the write to reuse
    with tempfile.TemporaryDirectory() as out:
        writer = write._WriteShard(
            output_dir=out, formats=("tfrecord", "parquet"), max_seq_length=length,
            max_predictions_per_seq=predictions, pad_id=0,
        )  # fmt: skip
        writer.setup()
        try:
            infos = list(writer.process(((0, 0), [keyed]), layout={0: (num_records, 1, {})}))
        finally:
            writer.teardown()
        sizes = {info["format"]: os.path.getsize(os.path.join(out, info["file"])) for info in infos}
    peak = _status_mib("VmHWM")
    files = ", ".join(f"{fmt} {size / 1e6:.0f} MB" for fmt, size in sizes.items())
    return (
        f"one {num_records:,}-record shard ({files}) written: peak {peak:.0f} MiB, "
        f"{peak - held:.0f} MiB over the {held:.0f} MiB holding its records"
    )


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(f"{field}:")[1].split()[0]) / 1024


if __name__ == "__main__":
    main()
