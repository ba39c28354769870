"""manifest.json: what a run wrote, and how, for the tools that read it.

It is written last, after every shard, so its presence marks a complete
output (as TFDS writes its info files after the shards). Replacing it is
how a build over an earlier one commits: the new build's files have names
of their own (``write.generation_tag``), the old build stays whole until the
new manifest.json takes the old one's place in one step, and only then are
the old build's files removed. A run that fails or is killed before that
leaves the previous build as it was.
"""

import importlib.metadata
import json
import platform
import posixpath
import re
import uuid

from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms import encode
from mlmprep.transforms.tokenize import SPLITS
from mlmprep.transforms.write import SHARD_FILE, TEMP_SUFFIX, generation_tag

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
TOKENIZER_FILE = re.compile(rf"tokenizer(\.g\d+)?\.json(\.[0-9a-f]+{re.escape(TEMP_SUFFIX)})?")


def tokenizer_name(generation: int = 0) -> str:
    return f"tokenizer{generation_tag(generation)}.json"


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
    generation: int = 0,
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
        "generation": generation,
        "tokenizer": {
            "file": tokenizer_name(generation),
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


def _write_whole(path: str, data: bytes):
    """Writes a file under a temporary name and renames it: it is replaced in one step, never half written."""
    temp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with FileSystems.create(temp) as f:
        f.write(data)
    FileSystems.rename([temp], [path])


def is_build_file(name: str) -> bool:
    """A file mlmprep writes into an output: a shard or tokenizer of any build, finished or not."""
    return bool(SHARD_FILE.fullmatch(name) or TOKENIZER_FILE.fullmatch(name))


def write(output_dir: str, manifest: dict, tokenizer_json: str):
    """Commits a build: its tokenizer, then manifest.json in one step; then removes every other build's
    files (an earlier build's, a failed attempt's), and nothing else."""
    _write_whole(FileSystems.join(output_dir, manifest["tokenizer"]["file"]), tokenizer_json.encode("utf-8"))
    _write_whole(
        FileSystems.join(output_dir, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    )
    keep = {s["file"] for s in manifest["shards"]} | {manifest["tokenizer"]["file"]}
    present = FileSystems.match([FileSystems.join(output_dir, "*")])[0].metadata_list
    stale = [
        m.path
        for m in present
        if is_build_file(posixpath.basename(m.path)) and posixpath.basename(m.path) not in keep
    ]
    if stale:
        FileSystems.delete(stale)


def read(output_dir: str) -> dict:
    with FileSystems.open(FileSystems.join(output_dir, MANIFEST)) as f:
        return json.loads(f.read())
