"""Human-readable views of an output: the manifest's counts, one decoded example."""

import numpy as np

from mlmprep.transforms.tokenize import load_tokenizer


def format_manifest(output_dir: str, manifest: dict) -> str:
    counts = manifest["counts"]
    lines = [
        f"wrote {len(manifest['shards'])} shard files to {output_dir}",
        f"  documents read     {counts['documents_read']:>12,}",
        f"  documents written  {counts['documents_written']:>12,}",
    ]
    for reason, n in sorted(counts["documents_dropped"].items()):
        lines.append(f"  dropped: {reason:<10}{n:>12,}")
    for split, c in counts["splits"].items():
        lines.append(
            f"  {split:<11} {c['sequences']:>10,} sequences {c['tokens']:>13,} tokens "
            f"{c['predictions']:>11,} predictions in {c['shards']} shards"
        )
    return "\n".join(lines)


def describe_example(tokenizer_json: str, row: dict) -> str:
    """One record as text: masked positions in brackets, with the original token.

    ``row`` has the Parquet columns (``input_ids``, ``attention_mask``,
    ``labels``); a selected position shows as ``[MASK→orig]`` when replaced by
    [MASK], ``{random→orig}`` when replaced at random, ``<same>`` when kept.
    """
    tokenizer = load_tokenizer(tokenizer_json)
    n = int(np.sum(row["attention_mask"]))
    words = []
    for token_id, label in zip(row["input_ids"][:n], row["labels"][:n]):
        token = tokenizer.id_to_token(int(token_id))
        if label < 0:
            words.append(token)
            continue
        original = tokenizer.id_to_token(int(label))
        if token == "[MASK]":
            words.append(f"[MASK→{original}]")
        elif token_id == label:
            words.append(f"<{original}>")
        else:
            words.append(f"{{{token}→{original}}}")
    return " ".join(words)
