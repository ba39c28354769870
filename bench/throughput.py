"""mlmprep's whole job against its limit (the bare tokenizer) and the Hugging Face way, side by side.

  python bench/throughput.py [--corpus FILE] [--repeats 3]

L  the limit: ``Tokenizer.encode_batch_fast`` over the same documents, one thread;
M  ``mlmprep run``, DirectRunner, one worker, both formats, default options,
   timed as a whole process (start-up reported separately);
H  ``datasets`` map + ``group_texts`` + ``DataCollatorForLanguageModeling`` +
   Parquet, one process (bench/hf_baseline.py; needs ``pip install -e '.[bench]'``);
M2 ``mlmprep run`` with 2 DirectRunner worker processes.

Prints medians over the repetitions and the ratios M/L, M/H and M2/M
(tokens/s). Absolute times depend on the machine; compare the ratios.
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

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
ENV = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def limit(paths: list[str], tokenizer_path: str, part: int = 0, parts: int = 1) -> tuple[float, int]:
    """Seconds and tokens of the bare tokenizer over the files' documents (every ``parts``-th one)."""
    from mlmprep.transforms.documents import iter_documents
    from mlmprep.transforms.tokenize import load_tokenizer, tokenizer_json

    tokenizer = load_tokenizer(tokenizer_json(pathlib.Path(tokenizer_path).read_bytes()))
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs += list(iter_documents(f, "text"))
    docs = docs[part::parts]
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(docs), 256):
        tokens += sum(
            len(e.ids) for e in tokenizer.encode_batch_fast(docs[i : i + 256], add_special_tokens=False)
        )
    return time.perf_counter() - start, tokens


def mlmprep(corpus: str, tokenizer: str, workers: int) -> tuple[float, int]:
    """Wall seconds of a whole ``mlmprep run`` process, and the tokens it wrote."""
    mode = "in_memory" if workers == 1 else "multi_processing"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--input={corpus}", f"--output={out}/o",
             f"--tokenizer={tokenizer}", f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"],
            check=True, env=ENV, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        manifest = json.loads(pathlib.Path(out, "o", "manifest.json").read_text())
    return seconds, manifest["counts"]["counters"]["tokens"]


def huggingface(corpus: str, tokenizer_json_path: str) -> tuple[float, int] | None:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, str(HERE / "hf_baseline.py"), corpus, tokenizer_json_path, out],
            env=ENV, capture_output=True, text=True,
        )  # fmt: skip
    if done.returncode:
        print(f"H skipped: {done.stderr.strip().splitlines()[-1]}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["tokens"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(SHARED / "corpora" / "bench" / "linux_docs_en.txt"))
    parser.add_argument("--vocab", default=str(SHARED / "vocab" / "bert-base-uncased" / "vocab.txt"))
    parser.add_argument(
        "--tokenizer_json", default=str(SHARED / "vocab" / "bert-base-uncased" / "tokenizer.json")
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    megabytes = os.path.getsize(args.corpus) / 1e6

    tiny = pathlib.Path(tempfile.mkdtemp(), "one.txt")
    tiny.write_text("one short document\n")
    results = {"L": [], "M": [], "H": [], "M2": [], "startup": []}
    for _ in range(args.repeats):
        results["L"].append(limit([args.corpus], args.vocab))
        results["startup"].append(mlmprep(str(tiny), args.vocab, 1))
        results["M"].append(mlmprep(args.corpus, args.vocab, 1))
        hf = huggingface(args.corpus, args.tokenizer_json)
        if hf:
            results["H"].append(hf)
        results["M2"].append(mlmprep(args.corpus, args.vocab, 2))

    def rate(name):  # median tokens/s
        runs = results[name]
        return statistics.median(t / s for s, t in runs) if runs else None

    seconds = {k: statistics.median(s for s, _ in v) for k, v in results.items() if v}
    print(f"corpus: {args.corpus} ({megabytes:.1f} MB), {args.repeats} repetitions (medians)")
    print(f"cores: {os.cpu_count()}; absolute times vary by machine, compare the ratios")
    print(f"L  bare tokenizer, 1 thread     {seconds['L']:7.2f} s  {rate('L') / 1e6:6.3f} M tokens/s")
    m_rate = f"{seconds['M']:7.2f} s  {rate('M') / 1e6:6.3f} M tokens/s  {megabytes / seconds['M']:5.2f} MB/s"
    print(f"M  mlmprep run, 1 worker        {m_rate}  (start-up {seconds['startup']:.2f} s included)")
    if results["H"]:
        print(f"H  datasets + collator, 1 proc  {seconds['H']:7.2f} s  {rate('H') / 1e6:6.3f} M tokens/s")
    print(f"M2 mlmprep run, 2 workers       {seconds['M2']:7.2f} s  {rate('M2') / 1e6:6.3f} M tokens/s")
    steady = rate("M") * seconds["M"] / max(seconds["M"] - seconds["startup"], 1e-9)
    print(f"M/L  = {rate('M') / rate('L'):.2f}   (without start-up: {steady / rate('L'):.2f}; target >= 0.7)")
    if results["H"]:
        print(f"M/H  = {rate('M') / rate('H'):.2f}   (target >= 1.5)")
    print(f"M2/M = {rate('M2') / rate('M'):.2f}   (1 -> 2 workers speedup; target >= 1.7)")


if __name__ == "__main__":
    main()
