"""``mlmprep report OUT``: one self-contained HTML page of what an output holds, and what looks wrong with it.

The counts, drop reasons, [UNK] rate and fill ratio come from manifest.json;
the 80/10/10 replacement shares are observed on the first records of each
split (as ``verify`` classifies them); a few examples are decoded with their
masks marked (as ``inspect`` shows them). Plots are drawn with matplotlib
(``pip install 'mlmprep[report]'``) and embedded as PNG, so the page needs
nothing beside it. Needs no Beam and no TensorFlow.
"""

import base64
import collections
import contextlib
import datetime
import html
import io

from mlmprep.pipeline import inspect, recipes, record_checks, shard_files, summary, verify
from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.transforms import mixture, profile

SAMPLE_RECORDS = 20_000  # per split: what the observed replacement shares are counted on
EXAMPLES = 3
COLORS = {"train": "#1f77b4", "validation": "#ff7f0e", "configured": "#9a9a9a"}  # matplotlib's first two


def observed_replacements(
    output_dir: str, manifest: dict, split: str, vocab
) -> tuple[collections.Counter, int]:
    """(mask/random/same counts, records read) over the first SAMPLE_RECORDS records of a split."""
    settings = manifest_lib.settings(manifest)
    first_format = settings.output.formats[0]
    shards = [
        s for s in manifest["shards"] if s["split"] == split and s["format"] == first_format and s["records"]
    ]
    report, read = verify.Report(), 0
    masking = settings.masking.config()
    for shard in shards:
        with contextlib.ExitStack() as stack:
            slices, _ = shard_files.slices(output_dir, manifest, shard, stack, vocab.frame, settings=settings)
            for batch, extra in slices:
                record_checks.check_batch(
                    batch, extra, vocab=vocab, masking=masking, report=report, where=shard["file"],
                    several_pieces=settings.packing.best_fit,
                )  # fmt: skip
                read += len(batch.lengths)
                if read >= SAMPLE_RECORDS:
                    return report.outcomes, read
    return report.outcomes, read


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(title: str, labels: list[str], series: dict[str, list[float]], ylabel: str) -> str:
    """A grouped bar chart as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: draw into memory
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 3.2))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        x = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        axes.bar(x, values, width=width, label=name, color=COLORS.get(name))
    axes.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 8 else 0, ha="right")
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.spines[["top", "right"]].set_visible(False)
    uri = _png(figure)
    pyplot.close(figure)
    return uri


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [100 * n / total if total else 0.0 for n in counts]


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _split_rows(manifest: dict) -> list[list]:
    rows = []
    for name, split in manifest["counts"]["splits"].items():
        labels = split.get("next_sentence_labels")
        rows.append(
            [
                name,
                f"{split['documents']:,}",
                f"{split['sequences']:,}",
                f"{split['tokens']:,}",
                f"{split['predictions']:,}",
                split["shards"],
                f"{summary.unk_rate(split):.2%}",
                f"{summary.fill_ratio(split):.1%}",
                ""
                if summary.pieces_per_sequence(split) is None
                else f"{summary.pieces_per_sequence(split):.2f}",
                "" if labels is None else f"{labels[1] / max(1, sum(labels)):.1%} of 1",
            ]
        )
    return rows


def _recipe(recipe: dict) -> str:
    """What ``--recipe`` set, what the flags given kept instead, what training takes, where it differs."""
    rows = [[f"--{k}", v, "the recipe"] for k, v in recipe["set"].items()]
    rows += [[f"--{k}", v, "your flag"] for k, v in recipe["kept"].items()]
    differs = "".join(f"<li>{html.escape(d)}</li>" for d in recipe["differs"])
    train = recipes.flags_text(recipe["train"])
    return (
        f"<h2>Recipe</h2><p><b>{html.escape(recipe['name'])}</b> ({html.escape(recipe['title'])}): "
        f"{html.escape(recipe['source'])}</p>"
        + _table(["setting", "value", "set by"], rows)
        + f"<p>mlmprep train --recipe {html.escape(recipe['name'])} sets {html.escape(train)}</p>"
        + (f"<p>Where these tools differ from it:</p><ul>{differs}</ul>" if differs else "")
    )


def _near_dedup(manifest: dict) -> list[str]:
    """What near-duplicate removal and decontamination removed, with examples of each."""
    shown = []
    near = manifest.get("near_dedup")
    if near is not None:
        shown.append(
            "<h2>Near-duplicates</h2>"
            + _table(
                [
                    "removed",
                    "clusters",
                    "documents in clusters",
                    "candidate pairs",
                    "confirmed pairs",
                    "rounds",
                ],
                [
                    [
                        f"{near['removed']:,}",
                        f"{near['clusters']:,}",
                        f"{near['documents_in_clusters']:,}",
                        f"{near['comparisons']:,}",
                        f"{near['confirmed_pairs']:,}",
                        f"{near['rounds']}" + ("" if near["converged"] else " (not settled)"),
                    ]
                ],
            )  # fmt: skip
            + _table(["source", "removed"], [[name, f"{n:,}"] for name, n in near["by_source"].items()])
            + _table(
                ["estimated Jaccard", "removed", "a near copy of"],
                [[f"{e['jaccard']:.2f}", e["removed"], e["near_copy_of"]] for e in near["examples"]],
            )
            + _table(
                ["largest clusters", "the document kept"],
                [[c["size"], c["kept"]] for c in near["largest_clusters"]],
            )
        )
    found = manifest.get("decontamination")
    if found is not None:
        shown.append(
            f"<h2>Decontamination</h2><p>{found['removed']:,} documents shared a {found['ngram']}-word "
            f"n-gram with an item of {html.escape(found['pattern'])}.</p>"
            + _table(
                ["evaluation item", "its text", "the document removed"],
                [[e["item"], e["item_text"], e["document"]] for e in found["examples"]],
            )
        )
    return shown


def build(output_dir: str) -> str:
    """The report's HTML."""
    manifest = manifest_lib.read(output_dir)
    with manifest_lib.open_file(output_dir, manifest["tokenizer"]["file"]) as f:
        tokenizer, vocab = manifest_lib.vocabulary(manifest, f.read().decode("utf-8"))
    settings, counts, splits = (
        manifest_lib.settings(manifest),
        manifest["counts"],
        manifest["counts"]["splits"],
    )
    sections = []

    warnings = summary.warnings(manifest)
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(f'<div class="warnings"><h2>Warnings</h2><ul>{items}</ul></div>')
    else:
        sections.append('<p class="ok">No warnings: [UNK] rate, fill ratio and shards look sound.</p>')
    if "recipe" in manifest:
        sections.append(_recipe(manifest["recipe"]))

    dropped = sorted(((r, n) for r, n in counts["documents_dropped"].items() if n), key=lambda x: -x[1])
    sections.append(
        "<h2>Counts</h2>"
        + _table(
            ["documents read", "written", "dropped"],
            [
                [
                    f"{counts['documents_read']:,}",
                    f"{counts['documents_written']:,}",
                    f"{sum(n for _, n in dropped):,}",
                ]
            ],
        )
        + (_table(["dropped because", "documents"], [[r, f"{n:,}"] for r, n in dropped]) if dropped else "")
        + _table(
            [
                "split",
                "documents",
                "sequences",
                "tokens",
                "predictions",
                "shards",
                "[UNK] rate",
                "slot utilization",
                "pieces / sequence",
                "pair labels",
            ],
            _split_rows(manifest),
        )  # fmt: skip
    )

    sections += _near_dedup(manifest)

    utilization = {
        n: [100 * summary.fill_ratio(s)] for n, s in splits.items() if "padding" in s and s["sequences"]
    }
    if utilization:
        uri = _bars(
            "Slot utilization: real tokens / slots (the rest is padding a step computes for nothing)",
            [
                f"--packing {settings.packing.mode}"
                + (f" --sentence_pairs {settings.pairs.mode}" if settings.pairs.enabled else "")
            ],
            utilization,
            "% of slots",
        )
        sections.append(f'<h2>Slot utilization</h2><img alt="slot utilization" src="{uri}">')

    edges = profile.length_bucket_edges(settings.packing.max_seq_length)
    present = [i for i, (first, last) in enumerate(edges) if first <= last]
    lengths = {
        n: [_shares(s["sequence_lengths"])[i] for i in present] for n, s in splits.items() if "padding" in s
    }
    if lengths:
        uri = _bars(
            "Sequences by real length (tokens, [CLS] and [SEP] included)",
            [f"{edges[i][0]}–{edges[i][1]}" for i in present],
            lengths,
            "% of sequences",
        )
        sections.append(f'<h2>Sequence lengths</h2><img alt="sequence lengths" src="{uri}">')
    documents = {n: _shares(s["document_tokens"]) for n, s in splits.items() if "document_tokens" in s}
    if documents:
        last = max(max((i for i, n in enumerate(v) if n), default=0) for v in documents.values())
        labels = ["1"] + [f"{2**i}–{2 ** (i + 1) - 1}" for i in range(1, profile.BUCKETS - 1)] + [f"{2**15}+"]
        uri = _bars(
            "Documents by tokens",
            labels[: last + 1],
            {n: v[: last + 1] for n, v in documents.items()},
            "% of documents",
        )
        sections.append(f'<h2>Document lengths</h2><img alt="document lengths" src="{uri}">')

    mix = [row for row in manifest.get("mixture", ()) if row["split"] == "train"]
    if mix:
        uri = _bars(
            "Train tokens per source: the mixture's target and what the phase took",
            [row["source"] for row in mix],
            {
                "natural": [row["natural_tokens"] for row in mix],
                "target": [row["target_tokens"] for row in mix],
                "achieved": [row["achieved_tokens"] for row in mix],
            },
            "tokens",
        )
        rows = [
            [r["source"], f"{r['natural_tokens']:,}", f"{r['target_tokens']:,}", f"{r['achieved_tokens']:,}",
             f"{r['epochs']:.2f}", f"{mixture.share_error(r):.2%}"]
            for r in mix
        ]  # fmt: skip
        sections.append(
            f'<h2>Sources</h2><img alt="sources" src="{uri}">'
            + _table(["source", "natural", "target", "achieved", "epochs", "error"], rows)
        )

    expected = [settings.masking.mask_token_ratio, settings.masking.random_token_ratio]
    observed, read = {}, {}
    for name in splits:
        outcomes, read[name] = observed_replacements(output_dir, manifest, name, vocab)
        if sum(outcomes.values()):
            observed[name] = _shares([outcomes[k] for k in ("mask", "random", "same")])
    if observed:
        uri = _bars(
            "Selected tokens: replaced by [MASK], by a random token, or kept",
            ["[MASK]", "random", "kept"],
            {"configured": [100 * expected[0], 100 * expected[1], 100 * (1 - sum(expected))], **observed},
            "% of predictions",
        )
        rows = [[n, f"{read[n]:,}", *(f"{v:.2f}%" for v in observed[n])] for n in observed]
        sections.append(
            f'<h2>Replacements</h2><img alt="replacements" src="{uri}">'
            + _table(["split", "records read", "[MASK]", "random", "kept"], rows)
        )

    spans = counts.get("spans")
    if spans:
        uri = _bars(
            "Masked spans by length (every split and copy): in words, as drawn (less where a span met its "
            "piece's end or the budget), and in tokens",
            [str(k) for k in range(1, max(len(spans["words"]), len(spans["tokens"])) + 1)],
            {unit: _shares(n + [0] * (len(spans["tokens"]) - len(n))) for unit, n in sorted(spans.items())},
            "% of spans",
        )
        means = {unit: sum(k * c for k, c in enumerate(n, 1)) / max(1, sum(n)) for unit, n in spans.items()}
        sections.append(
            f'<h2>Span lengths</h2><img alt="span lengths" src="{uri}"><p>{sum(spans["words"]):,} spans, '
            f"{means['words']:.2f} words and {means['tokens']:.2f} tokens on average (--span_p "
            f"{settings.masking.span_p}, --max_span_words {settings.masking.max_span_words}, --span_lengths "
            f"{settings.masking.span_lengths})</p>"
        )

    examples = []
    for name in splits:
        for i, row in enumerate(inspect.first_rows(output_dir, manifest, name, EXAMPLES, vocab.frame)):
            label = row.get("next_sentence_label")
            title = f"{name} example {i}" + ("" if label is None else f", pair label {label}")
            words = inspect.example_words(tokenizer, row, vocab.mask_id)
            examples.append(f"<h3>{html.escape(title)}</h3><pre>{_marked(words)}</pre>")
    if examples:
        mask = html.escape(tokenizer.id_to_token(vocab.mask_id))
        sections.append(
            f"<h2>Examples</h2><p>frame {html.escape(vocab.frames['single'])}; [{mask}→original]: replaced "
            f"by {mask}; {{random→original}}: replaced at random; &lt;token&gt;: kept</p>" + "".join(examples)
        )

    tokenizer_file = manifest["tokenizer"]["file"]
    flat = settings.flat()
    options = ", ".join(
        f"{k} {flat[k]}"
        for k in (
            "max_seq_length",
            "masking",
            "max_predictions_per_seq",
            "masked_lm_prob",
            "packing",
            "sentence_pairs",
        )
    )
    return PAGE.format(
        title=html.escape(f"mlmprep report: {output_dir}"),
        subtitle=html.escape(
            f"{options}; tokenizer {tokenizer_file} ({vocab.size:,} tokens); "
            f"mlmprep {manifest['versions'].get('mlmprep')}; reported {datetime.date.today()}"
        ),
        body="\n".join(sections),
    )


def _marked(words: list[tuple[str, str | None]]) -> str:
    """An example's words (``inspect.example_words``), escaped, the selected positions highlighted."""
    return " ".join(
        html.escape(text, quote=False)
        if kind is None
        else f'<span class="{kind}">{html.escape(text, quote=False)}</span>'
        for text, kind in words
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
.warnings {{ background: #fff4e5; border-left: 6px solid #e8890c; padding: 0.5em 1em; }}
.ok {{ background: #eaf7ea; border-left: 6px solid #2e9b2e; padding: 0.5em 1em; }}
pre {{ white-space: pre-wrap; background: #f8f8f8; padding: 0.6em; }}
.mask {{ background: #d6e6ff; }} .random {{ background: #ffe0e0; }} .kept {{ background: #e2f5e2; }}
img {{ max-width: 100%; }}
</style></head>
<body><h1>{title}</h1><p>{subtitle}</p>
{body}
</body></html>
"""


def main(argv):
    parser = CliParser(prog="mlmprep report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="An mlmprep output directory (with manifest.json).")
    parser.add_argument("--output", default="report.html", help="The HTML file to write.")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("mlmprep report draws with matplotlib: pip install 'mlmprep[report]'") from None
    try:
        page = build(args.output_dir)
    except manifest_lib.ManifestError as e:
        raise UsageError(str(e)) from None
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e}") from None
    print(f"wrote {args.output}")
    for warning in summary.warnings(manifest_lib.read(args.output_dir)):
        print(f"WARNING: {warning}")
