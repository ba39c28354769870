"""The manifest's counts as a table, as ``mlmprep run`` and the demo print them, and the warnings they call
for (also in ``mlmprep report``)."""

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import recipes
from mlmprep.transforms.pairs import WITHOUT_OTHER_DOCUMENT

UNK_RATE_LIMIT = 0.01  # more [UNK] than this: the tokenizer does not fit the text
FILL_RATIO_LIMIT = 0.7  # sequences less full than this with document packing: concat would fill them


def unk_rate(split: dict) -> float:
    """The share of a split's tokens that are [UNK] (before masking)."""
    return split.get("unk_tokens", 0) / max(1, split["tokens"])


def fill_ratio(split: dict) -> float:
    """Slot utilization: the share of a split's positions that hold a real token rather than padding."""
    return split["tokens"] / max(1, split["tokens"] + split.get("padding", 0))


def pieces_per_sequence(split: dict) -> float | None:
    """Documents or parts of one per sequence (one but with best-fit packing); None before it was counted."""
    return split["pieces"] / max(1, split["sequences"]) if "pieces" in split else None


def warnings(manifest: dict) -> list[str]:
    """What looks wrong in an output's numbers, in words, with what to do about it."""
    out = []
    settings = manifest_lib.settings(manifest)
    for name, split in manifest["counts"]["splits"].items():
        if not split["sequences"]:
            continue
        if unk_rate(split) > UNK_RATE_LIMIT:
            out.append(
                f"[UNK] is {unk_rate(split):.1%} of the {name} tokens (over {UNK_RATE_LIMIT:.0%}): "
                "the tokenizer does not fit this text; train one on it with mlmprep train-tokenizer"
            )
        # Pairs are packed by BERT's rules, not concat.
        by_document = settings.packing.mode == "document" and not settings.pairs.enabled
        if fill_ratio(split) < FILL_RATIO_LIMIT and by_document:
            out.append(
                f"the {name} sequences are {fill_ratio(split):.0%} full (under {FILL_RATIO_LIMIT:.0%}): "
                f"{1 - fill_ratio(split):.0%} of every step would be padding; --packing best_fit fills them "
                "and keeps attention inside each document"
            )
        forced = manifest["counts"].get("counters", {}).get(f"{WITHOUT_OTHER_DOCUMENT}.{name}", 0)
        if forced:
            out.append(
                f"{forced:,} {name} pairs drew IsRandom where the split had no other document to draw from "
                "and are IsNext: the split has too few documents for next-sentence pairs"
            )
        if split["sequences"] < split["shards"]:
            out.append(
                f"{name} has {split['sequences']:,} sequences for {split['shards']} shards: some shards are "
                "empty; ask for fewer with --num_shards"
            )
    return out


def format_sources(table: list[dict]) -> list[str]:
    """A phase's sources table: per source and split, natural, target and achieved tokens and epochs."""
    lines = [
        f"  {'source':<14}{'split':<11}{'natural':>14}{'target':>14}{'achieved':>14}{'epochs':>8}{'error':>8}"
    ]
    for row in table:
        error = abs(row["achieved_tokens"] - row["target_tokens"]) / max(1, row["target_tokens"])
        lines.append(
            f"  {row['source']:<14}{row['split']:<11}{row['natural_tokens']:>14,}{row['target_tokens']:>14,}"
            f"{row['achieved_tokens']:>14,}{row['epochs']:>8.2f}{error:>8.2%}"
        )
    return lines


def format_build(output_dir: str, index: dict) -> str:
    """A build of phases: each phase's folder, sequences and sources table."""
    n = len(index["phases"])
    lines = [f"built {n} phase{'s' if n > 1 else ''} in {output_dir}"]
    for phase in index["phases"]:
        splits = ", ".join(f"{c['sequences']:,} {split} sequences" for split, c in phase["splits"].items())
        lines += [f"phase {phase['name']} ({phase['folder']}/): {splits}", *format_sources(phase["mixture"])]
    return "\n".join(lines)


def format_manifest(output_dir: str, manifest: dict) -> str:
    if manifest_lib.is_build_index(manifest):
        return format_build(output_dir, manifest)
    counts = manifest["counts"]
    lines = [
        f"wrote {len(manifest['shards'])} shard files to {output_dir}",
        f"  documents read     {counts['documents_read']:>12,}",
        f"  documents written  {counts['documents_written']:>12,}",
    ]
    recipe = manifest.get("recipe")
    if recipe:
        kept = f"; yours kept: {recipes.flags_text(recipe['kept'])}" if recipe["kept"] else ""
        lines.insert(1, f"  recipe {recipe['name']} ({recipe['title']}){kept}")
    for reason, n in sorted((r, n) for r, n in counts["documents_dropped"].items() if n):
        lines.append(f"  dropped: {reason:<14}{n:>8,}")
    near = manifest.get("near_dedup")
    if near and near["clusters"]:
        largest = near["largest_clusters"][0]["size"] if near["largest_clusters"] else 0
        lines.append(
            f"  near-duplicates: {near['clusters']:,} clusters of {near['documents_in_clusters']:,} "
            f"documents (the largest {largest:,}), settled in {near['rounds']} rounds"
            + ("" if near["converged"] else " (not settled: some clusters keep more than one)")
        )
    for split, c in counts["splits"].items():
        lines.append(
            f"  {split:<11} {c['sequences']:>10,} sequences {c['tokens']:>13,} tokens "
            f"{c['predictions']:>11,} predictions in {c['shards']} shards"
        )
        if "padding" in c:
            pieces = pieces_per_sequence(c)
            lines.append(
                f"  {'':<11} [UNK] {unk_rate(c):.2%} of the tokens, sequences {fill_ratio(c):.1%} full"
                + ("" if pieces is None else f", {pieces:.2f} pieces per sequence")
            )
        if "next_sentence_labels" in c:
            zero, one = c["next_sentence_labels"]
            share = one / max(1, zero + one)
            lines.append(f"  {'':<11} pair labels: {zero:,} of 0, {one:,} of 1 ({share:.1%} of 1)")
    if "mixture" in manifest:
        lines += format_sources(manifest["mixture"])
    lines += [f"WARNING: {warning}" for warning in warnings(manifest)]
    return "\n".join(lines)
