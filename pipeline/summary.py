"""The manifest's counts as a table, as ``mlmprep run`` and the demo print them."""


def format_manifest(output_dir: str, manifest: dict) -> str:
    counts = manifest["counts"]
    lines = [
        f"wrote {len(manifest['shards'])} shard files to {output_dir}",
        f"  documents read     {counts['documents_read']:>12,}",
        f"  documents written  {counts['documents_written']:>12,}",
    ]
    for reason, n in sorted((r, n) for r, n in counts["documents_dropped"].items() if n):
        lines.append(f"  dropped: {reason:<10}{n:>12,}")
    for split, c in counts["splits"].items():
        lines.append(
            f"  {split:<11} {c['sequences']:>10,} sequences {c['tokens']:>13,} tokens "
            f"{c['predictions']:>11,} predictions in {c['shards']} shards"
        )
        if "next_sentence_labels" in c:
            zero, one = c["next_sentence_labels"]
            share = one / max(1, zero + one)
            lines.append(f"  {'':<11} pair labels: {zero:,} of 0, {one:,} of 1 ({share:.1%} of 1)")
    return "\n".join(lines)
