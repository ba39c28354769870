"""What a build of several phases costs: against its phases built alone, and against a plain run.

  python bench/phases.py [--corpus short] [--scale 1] [--repeats 1] [--memory]

The corpus (bench/corpora.py) becomes three sources by language (de, ru and
the rest as en). Runs, interleaved, each measured as the CPU seconds of the
whole process tree:

- ``plain``: ``mlmprep run --input ...`` as before builds of sources existed;
- ``one phase``: the same as a build of the three sources, natural mix, no budget;
- ``plain bf`` and ``one bf``: the same two with ``--packing best_fit``;
- ``build``: three phases (512 best fit, 1,024 concat unmasked, 128 by
  document with word masking), each with its own budget no larger than the
  corpus, from one reading;
- ``alone``: each of those phases as a build of its own.

It prints each run's CPU and wall seconds and the tokens the tokenizer
encoded (the counter ``tokens``: once per document read), the build's CPU
over the sum of the phases alone (target: at most 0.6), and a one-phase
build's over the plain run's. ``--memory``: the peak memory summed over the
process tree of the three-phase build at 1x and 16x the corpus (target: at
most 1.3).
"""

import argparse
import json
import pathlib
import sys
import tempfile

import corpora  # this folder is on the path of a script run from it
from memory import peak_rss
from throughput import _tree

PHASES = [
    "{{name: p512, max_seq_length: 512, packing: best_fit, tokens: {a}, temperature: 0.7}}",
    "{{name: p1024, max_seq_length: 1024, packing: concat, masking: none, tokens: {b}, "
    "weights: {{en: 1, de: 1, ru: 1}}}}",
    "{{name: p128, max_seq_length: 128, masking: word, masked_lm_prob: 0.05, tokens: {c}, temperature: 0.3}}",
]


def _sources(files) -> dict[str, list[str]]:
    by = {"en": [], "de": [], "ru": []}
    for f in files:
        by["de" if "fortunes_de" in f.name else "ru" if "fortunes_ru" in f.name else "en"].append(str(f))
    return by


def _build_file(
    folder: pathlib.Path, name: str, sources: dict, phases: list[str] | None, top=()
) -> pathlib.Path:
    lines = [f"tokenizer: {corpora.VOCAB}", "validation_fraction: 0.01", *top, "sources:"]
    lines += [f"  - {{name: {s}, input: {json.dumps(paths)}}}" for s, paths in sources.items()]
    if phases is not None:
        lines += ["phases:", *(f"  - {p}" for p in phases)]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(args: list[str], out: pathlib.Path) -> dict:
    command = [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *args, f"--output={out}", "--overwrite"]
    wall, cpu, _ = _tree(command)
    index = json.loads((out / "manifest.json").read_text())
    first = out / index["phases"][0]["folder"] if index.get("kind") == "build" else out
    counters = json.loads((first / "manifest.json").read_text())["counts"]["counters"]
    return {"wall": wall, "cpu": cpu, "tokens": counters.get("tokens", 0), "index": index}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="short", choices=sorted(corpora.BASE))
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="Also the build's peak memory at 1x and 16x.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        files = corpora.build(args.corpus, args.scale, tmp / "corpus")
        size = sum(f.stat().st_size for f in files)
        sources = _sources(files)
        natural = _run(["--config", str(_build_file(tmp, "natural", sources, None))], tmp / "out-natural")
        tokens = sum(r["natural_tokens"] for r in natural["index"]["mixture"] if r["split"] == "train")
        budgets = dict(a=int(0.9 * tokens), b=int(0.5 * tokens), c=int(0.3 * tokens))
        phases = [p.format(**budgets) for p in PHASES]
        plain = [f"--input={f}" for f in files] + [
            f"--tokenizer={corpora.VOCAB}",
            "--validation_fraction=0.01",
        ]
        runs = {
            "plain": plain,
            "one phase": ["--config", str(_build_file(tmp, "one", sources, None))],
            "plain bf": [*plain, "--packing=best_fit"],
            "one bf": ["--config", str(_build_file(tmp, "onebf", sources, None, ["packing: best_fit"]))],
            "build": ["--config", str(_build_file(tmp, "build", sources, phases))],
            **{
                f"alone {i + 1}": ["--config", str(_build_file(tmp, f"alone{i}", sources, [p]))]
                for i, p in enumerate(phases)
            },
        }
        print(f"corpus {args.corpus} x{args.scale}: {size / 1e6:.0f} MB, {tokens:,} train tokens; budgets "
              f"{budgets['a']:,} / {budgets['b']:,} / {budgets['c']:,}")  # fmt: skip
        seen = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run_args in runs.items():  # interleaved: each repeat runs every variant once
                seen[name].append(_run(run_args, tmp / f"out-{name.replace(' ', '-')}"))
        cpu = {name: min(r["cpu"] for r in rs) for name, rs in seen.items()}
        for name, rs in seen.items():
            best = min(rs, key=lambda r: r["cpu"])
            print(f"  {name:<10} cpu {best['cpu']:7.1f} s  wall {best['wall']:6.1f} s  "
                  f"tokenized {best['tokens']:>12,} tokens")  # fmt: skip
        alone = sum(cpu[f"alone {i + 1}"] for i in range(len(phases)))
        print(
            f"build / phases alone: {cpu['build'] / alone:.2f} (target <= 0.6); "
            f"the tokenizer encoded {seen['build'][0]['tokens']:,} tokens for the build, "
            f"{sum(seen[f'alone {i + 1}'][0]['tokens'] for i in range(3)):,} for the phases alone"
        )
        print(
            f"one-phase build / plain run: {cpu['one phase'] / cpu['plain']:.2f} (document packing), "
            f"{cpu['one bf'] / cpu['plain bf']:.2f} (best fit)"
        )
        if args.memory:
            mib = 1 << 20
            peaks = {}
            for scale in (1, 16):
                big = corpora.build(args.corpus, args.scale * scale, tmp / f"corpus{scale}")
                path = _build_file(tmp, f"mem{scale}", _sources(big), phases)
                command = [sys.executable, "-m", "mlmprep.pipeline.cli", "run", "--config", str(path),
                           f"--output={tmp / f'mem-{scale}'}"]  # fmt: skip
                peaks[scale], each, seconds = peak_rss(command)
                size = sum(f.stat().st_size for f in big)
                print(
                    f"  build, {scale}x ({size / 1e6:.0f} MB): peak {peaks[scale] / mib:.0f} MiB over "
                    f"{len(each)} processes, {seconds:.0f} s"
                )
            print(f"build memory 16x/1x: {peaks[16] / peaks[1]:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
