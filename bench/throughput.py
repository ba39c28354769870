"""mlmprep's whole job against its limit, the bare tokenizer, and the Hugging Face way, side by side.

  python bench/throughput.py [--corpus long short] [--scale 1 4] [--repeats 3] [--no_hf] [--scrambled]
                             [--tokenizer bpe unigram PATH ...] [--variant FLAGS ...]

On each corpus of bench/corpora.py at each scale, in repetitions whose order
of runs rotates:

L1  ``Tokenizer.encode_batch_fast`` over the documents mlmprep keeps (read,
    cleaned and deduplicated as it does), in batches of its size, one thread;
L2  the same on every thread of the tokenizer's pool: the machine's ceiling;
M1  ``mlmprep run`` with default options, held to one core;
M2  ``mlmprep run`` with default options on every core (with ``--pairs nsp sop``,
    also with ``--sentence_pairs`` in each mode: what pairs cost beside it);
H   the Hugging Face way, one process (bench/hf_baseline.py; needs
    ``pip install -e '.[bench]'``).

With ``--tokenizer``, L1 and M1 also run with each other tokenizer in the same
rotation (``bpe`` and ``unigram``: RoBERTa's and XLM-R's families, trained by
``mlmprep train-tokenizer`` on the corpus at 30,522 tokens; or a file), and the
report compares M1/L1 with each to M1/L1 with WordPiece: what a tokenizer
family costs the job beyond the tokenizer itself. Each ``--variant`` (run
flags in one string, e.g. ``"--packing=best_fit --max_seq_length=2048"``) is
M1 with those flags in the same rotation, reported as its CPU per token
against M1's: what a mode costs beside the default it extends.

L times its tokenizer calls only. M and H are timed as whole process trees:
wall seconds, and the CPU seconds of every process in the tree (the rusage
of the reaped children). M's start-up, the same command on a one-line input
in the same worker mode, is reported beside it and taken out for the
"steady" ratios. Prints medians of tokens per wall-second and per
CPU-second, and the targets: M1/L1 per CPU-second >= 0.7, M2/L2 per
wall-second >= 0.7. Absolute times vary by machine; compare the ratios.
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import corpora  # this folder is on the path of a script run from it

HERE = pathlib.Path(__file__).resolve().parent
ONE_CORE = sorted(os.sched_getaffinity(0))[:1]
CORES = len(os.sched_getaffinity(0))


def _limit_main(tokenizer_path: str, paths: list[str], out: str):
    """L, in a process of its own (the thread count is fixed when tokenizers starts its pool)."""
    from apache_beam.io.filesystems import FileSystems

    from mlmprep.transforms.beam.read import BATCH_CHARS
    from mlmprep.transforms.documents import document_keys
    from mlmprep.transforms.sources import DocumentSource, FileRange
    from mlmprep.transforms.tokenize import load_tokenizer, tokenizer_json

    tokenizer = load_tokenizer(tokenizer_json(pathlib.Path(tokenizer_path).read_bytes()))
    source, seen, batches, batch, chars = DocumentSource(FileSystems.open), set(), [], [], 0
    for path in paths:
        for docs in source.batches(FileRange(path)):
            for key, doc in zip(document_keys(docs)[0].tolist(), docs):
                if key not in seen:  # the copies mlmprep keeps: one per key
                    seen.add(key)
                    batch += doc
                    chars += sum(map(len, doc))
                    if chars >= BATCH_CHARS:
                        batches.append(batch)
                        batch, chars = [], 0
    batches.append(batch)
    wall, cpu, tokens = time.perf_counter(), time.process_time(), 0
    for texts in batches:
        tokens += sum(len(e.ids) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False))
    result = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "tokens": tokens}
    pathlib.Path(out).write_text(json.dumps(result))


def _tree(command: list[str], *, cores=None) -> tuple[float, float, str]:
    """Wall and CPU seconds of a command's whole process tree, and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    affinity = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    done = subprocess.run(command, check=True, preexec_fn=affinity, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def serial_seconds(command: list[str], interval: float = 0.1) -> tuple[float, float]:
    """A command's wall seconds, and those its process tree spent with under 1.5 cores busy (sampled)."""
    from memory import tree_stat

    tick = os.sysconf("SC_CLK_TCK")
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serial, last_cpu, last = 0.0, 0.0, start
    while proc.poll() is None:
        time.sleep(interval)
        stats = tree_stat(proc.pid).values()
        cpu = sum(int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]) for f in stats) / tick
        now = time.perf_counter()
        if cpu - last_cpu < 1.5 * (now - last):
            serial += now - last
        last_cpu, last = cpu, now
    return time.perf_counter() - start, serial


def limit(paths, threads: int | None, tokenizer=corpora.VOCAB) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/limit.json"
        command = [sys.executable, __file__, "--_limit", out, str(tokenizer), *map(str, paths)]
        subprocess.run(command, check=True, env=env)
        return json.loads(pathlib.Path(out).read_text())


def mlmprep(inputs: list[str], *, cores=None, flags=(), tokenizer=corpora.VOCAB) -> dict:
    """A whole ``mlmprep run``: wall and CPU seconds, tokens tokenized."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *(f"--input={i}" for i in inputs),
                   f"--output={tmp}/out", f"--tokenizer={tokenizer}", *flags]  # fmt: skip
        wall, cpu, _ = _tree(command, cores=cores)
        manifest = json.loads(pathlib.Path(tmp, "out", "manifest.json").read_text())
    return {"wall": wall, "cpu": cpu, "tokens": manifest["counts"]["counters"].get("tokens", 0)}


def huggingface(paths) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(HERE / "hf_baseline.py"),
            str(corpora.TOKENIZER_JSON),
            tmp,
            *map(str, paths),
        ]
        try:
            wall, cpu, printed = _tree(command)
        except subprocess.CalledProcessError:
            return None  # no datasets or transformers here
    return {"wall": wall, "cpu": cpu, "tokens": json.loads(printed.strip().splitlines()[-1])["tokens"]}


def measure(paths, repeats: int, with_hf: bool, pair_modes=(), tokenizers=None, variants=()) -> dict:
    from mlmprep.pipeline.job import worker_mode

    size = sum(p.stat().st_size for p in paths)
    folder = paths[0].parent
    tiny = folder / "one-line" / "one.txt"
    tiny.parent.mkdir(exist_ok=True)
    tiny.write_text("one short document\n")
    glob = [str(folder / "*.txt")]
    mode, workers = worker_mode(size, CORES)  # what a default run picks for this input, on every core
    m2_startup_flags = [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    runs = {
        "L1": lambda: limit(paths, 1),
        "L2": lambda: limit(paths, None),
        "M1": lambda: mlmprep(glob, cores=ONE_CORE),
        "M2": lambda: mlmprep(glob),
        "M1 start-up": lambda: mlmprep([str(tiny)], cores=ONE_CORE),
        "M2 start-up": lambda: mlmprep([str(tiny)], flags=m2_startup_flags),
    }
    for mode in pair_modes:
        runs[f"M2 {mode}"] = lambda mode=mode: mlmprep(glob, flags=[f"--sentence_pairs={mode}"])
    for flags in variants:
        runs[f"M1 {flags}"] = lambda flags=flags: mlmprep(glob, cores=ONE_CORE, flags=flags.split())
    for name, path in (tokenizers or {}).items():
        runs[f"L1 {name}"] = lambda path=path: limit(paths, 1, path)
        runs[f"M1 {name}"] = lambda path=path: mlmprep(glob, cores=ONE_CORE, tokenizer=path)
    if with_hf and huggingface(paths[:1]) is not None:
        runs["H"] = lambda: huggingface(paths)
    with tempfile.TemporaryDirectory() as tmp:  # where M2's time goes: sampled, once
        command = [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *(f"--input={i}" for i in glob),
                   f"--output={tmp}/out", f"--tokenizer={corpora.VOCAB}"]  # fmt: skip
        wall, serial = serial_seconds(command)
    results = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            results[name].append(runs[name]())
            print(f"  {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    medians["M2 sampled"] = {"wall": wall, "serial": serial}
    return medians


def report(name: str, scale: int, size: int, medians: dict) -> None:
    print(f"\n{name} x{scale} ({size / 1e6:.0f} MB, {medians['L1']['tokens'] / 1e6:.1f} M tokens), "
          f"{CORES} cores; medians")  # fmt: skip
    print(f"{'run':14s} {'wall s':>8s} {'CPU s':>8s} {'M tok/wall-s':>13s} {'M tok/CPU-s':>12s}")
    for run, m in medians.items():
        if run == "M2 sampled":
            continue
        if "start-up" in run:
            print(f"{run:14s} {m['wall']:8.2f} {m['cpu']:8.2f}")
            continue
        print(f"{run:14s} {m['wall']:8.2f} {m['cpu']:8.2f} {m['tokens'] / m['wall'] / 1e6:13.3f} "
              f"{m['tokens'] / m['cpu'] / 1e6:12.3f}")  # fmt: skip

    def rate(run, per, startup=None):
        m = medians[run]
        seconds = m[per] - (medians[startup][per] if startup else 0)
        return m["tokens"] / seconds

    m1 = rate("M1", "cpu") / rate("L1", "cpu")
    m1_steady = rate("M1", "cpu", "M1 start-up") / rate("L1", "cpu")
    m2 = rate("M2", "wall") / rate("L2", "wall")
    m2_steady = rate("M2", "wall", "M2 start-up") / rate("L2", "wall")
    print(f"M1/L1 per CPU-second:  {m1:.2f}  (without start-up {m1_steady:.2f}; target >= 0.7)")
    print(f"M2/L2 per wall-second: {m2:.2f}  (without start-up {m2_steady:.2f}; target >= 0.7)")
    print(f"M2 CPU per token / L1's: {rate('L1', 'cpu') / rate('M2', 'cpu'):.2f}")
    sampled, cores = medians["M2 sampled"], CORES
    # Amdahl: the serial seconds run as they are, the rest on every core at M2's CPU per token.
    best = sampled["serial"] + (medians["M2"]["cpu"] - sampled["serial"]) / cores
    print(f"M2 sampled once: {sampled['wall']:.1f} s, {sampled['serial']:.1f} s of it under 1.5 cores busy; "
          f"with every other second on all {cores} cores, M2/L2 would be at most "
          f"{medians['M2']['tokens'] / best / rate('L2', 'wall'):.2f}")  # fmt: skip
    for run in (r for r in medians if r.startswith("M2 ") and r.split()[1] in ("nsp", "sop")):
        cpu, wall = rate("M2", "cpu") / rate(run, "cpu"), rate("M2", "wall") / rate(run, "wall")
        print(f"{run} against M2 (single segments): CPU per token {cpu:.2f}x, wall per token {wall:.2f}x")
    for run in (r for r in medians if r.startswith("M1 --")):
        print(f"{run} against M1: CPU per token {rate('M1', 'cpu') / rate(run, 'cpu'):.2f}x")
    for run in (r for r in medians if r.startswith("L1 ")):
        name = run.split(" ", 1)[1]
        ratio = rate(f"M1 {name}", "cpu") / rate(run, "cpu")
        print(f"M1/L1 per CPU-second with {name}: {ratio:.2f}, with WordPiece {m1:.2f}: {ratio / m1:.2f}x "
              "WordPiece's ratio (target >= 0.9)")  # fmt: skip
    if "H" in medians:
        print(f"M2/H per wall-second: {rate('M2', 'wall') / rate('H', 'wall'):.2f}; "
              f"M1/H per CPU-second: {rate('M1', 'cpu') / rate('H', 'cpu'):.2f}")  # fmt: skip


def _tokenizer(name: str, paths, folder: pathlib.Path) -> pathlib.Path:
    """A tokenizer file: ``bpe`` or ``unigram`` trained on the corpus's files, or a path as it is."""
    if name not in ("bpe", "unigram"):
        return pathlib.Path(name)
    from mlmprep.pipeline import train_tokenizer

    path = folder / f"{name}.json"
    if not path.exists():
        tokenizer = train_tokenizer.train([str(p) for p in paths[:6]], model=name, vocab_size=30522)
        path.write_text(tokenizer.to_str(), encoding="utf-8")
    return path


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--_limit":
        _limit_main(sys.argv[3], sys.argv[4:], sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", default=["long", "short"], choices=sorted(corpora.BASE))
    parser.add_argument("--scale", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_hf", dest="hf", action="store_false", help="Skip the Hugging Face run.")
    parser.add_argument(
        "--scrambled",
        action="store_true",
        help="Copies not near-duplicates of each other (for --near_dedup).",
    )
    parser.add_argument(
        "--pairs", nargs="*", default=[], choices=("nsp", "sop"), help="Also M2 with --sentence_pairs MODE."
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='Also M1 with these run flags (one string), e.g. "--packing=best_fit"; repeat for more.',
    )
    parser.add_argument(
        "--tokenizer",
        nargs="*",
        default=[],
        help="Also L1 and M1 with these: bpe or unigram (trained on the corpus), or a tokenizer file.",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpus:
            for scale in args.scale:
                folder = pathlib.Path(tmp, f"{name}-{scale}")
                paths = corpora.build(name, scale, folder, args.scrambled)
                tokenizers = {t: _tokenizer(t, paths, pathlib.Path(tmp)) for t in args.tokenizer}
                print(f"{name} x{scale}: running", file=sys.stderr, flush=True)
                medians = measure(paths, args.repeats, args.hf, args.pairs, tokenizers, args.variant)
                report(name, scale, sum(p.stat().st_size for p in paths), medians)
                shutil.rmtree(folder)


if __name__ == "__main__":
    main()
