"""manifest.json: what a run wrote, and how, for the tools that read it.

It is written last, after every shard, so its presence marks a complete
output (as TFDS writes its info files after the shards).
"""

import importlib.metadata
import json
import platform

from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import encode
from mlmprep.transforms.tokenize import SPLITS
from mlmprep.transforms.write import TEMP_SUFFIX

FORMAT_VERSION = 1
# Every reason a document can be dropped for, listed (with 0) even when none was.
DROP_REASONS = (
    "binary",
    "duplicate",
    "empty",
    "malformed_json",
    "no_text_field",
    "no_tokens",
    "too_short",
    "unreadable_file",
)
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    names = ("mlmprep", "apache-beam", "tokenizers", "pyarrow", "numpy")
    return {**{n: _version(n) for n in names}, "python": platform.python_version()}


def build(
    *,
    config: dict,
    tokenizer_json: str,
    vocab,
    shards: list[dict],
    counts: dict,
    formats,
    input_files: int = 0,
    input_fingerprint: str | None = None,
) -> dict:
    """The manifest of a run, from its shard infos and its summed counts."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    dropped.update({k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("documents_dropped.")})
    splits = {}
    for split in SPLITS:
        files = [s for s in shards if s["split"] == split and s["format"] == formats[0]]
        if not files and not counts.get(f"documents.{split}"):
            continue
        splits[split] = {
            "documents": counts.get(f"documents.{split}", 0),
            "sequences": sum(s["records"] for s in files),
            "tokens": sum(s["tokens"] for s in files),
            "predictions": sum(s["predictions"] for s in files),
            "shards": len(files),
        }
    return {
        "format_version": FORMAT_VERSION,
        "config": config,
        "tokenizer": {
            "file": TOKENIZER,
            "sha256": encode.sha256(tokenizer_json.encode("utf-8")),
            **vocab.manifest_entry(),
        },
        "versions": versions(),
        "input_files": input_files,
        "input_fingerprint": input_fingerprint,
        "counts": {
            "documents_read": counts.get("documents_read", 0),
            "documents_written": sum(s["documents"] for s in splits.values()),
            "documents_dropped": dropped,
            "splits": splits,
            "counters": counts,
        },
        "shards": sorted(shards, key=lambda s: s["file"]),
    }


def write(output_dir: str, manifest: dict, tokenizer_json: str):
    """Writes tokenizer.json, then manifest.json, and clears failed attempts' files."""
    for name, text in ((TOKENIZER, tokenizer_json), (MANIFEST, json.dumps(manifest, indent=2) + "\n")):
        with FileSystems.create(FileSystems.join(output_dir, name)) as f:
            f.write(text.encode("utf-8"))
    leftovers = FileSystems.match([FileSystems.join(output_dir, f"*{TEMP_SUFFIX}")])[0].metadata_list
    if leftovers:
        FileSystems.delete([m.path for m in leftovers])


def read(output_dir: str) -> dict:
    with FileSystems.open(FileSystems.join(output_dir, MANIFEST)) as f:
        return json.loads(f.read())
