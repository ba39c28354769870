"""manifest.json: what a run wrote, and how, for the tools that read it.

It is written last, after every shard, so its presence marks a complete
output (as TFDS writes its info files after the shards). Replacing it is
how a build over an earlier one commits: the new build's files have names
of their own (``shards.generation_tag``), the old build stays whole until the
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
from mlmprep.transforms.shards import FORMATS, TEMP_SUFFIX, generation_tag
from mlmprep.transforms.tokenize import SPLITS

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
# The files a build writes; "generation" is absent in a build that replaced none.
SHARD_FILE = re.compile(
    rf"(?:{'|'.join(SPLITS)})-\d{{5,}}-of-\d{{5,}}(?:\.g(?P<generation>\d+))?\.(?:{'|'.join(FORMATS)})"
)
TOKENIZER_FILE = re.compile(r"tokenizer(?:\.g(?P<generation>\d+))?\.json")
TEMP_FILE = re.compile(rf"(?P<name>.+)\.[0-9a-f]{{32}}{re.escape(TEMP_SUFFIX)}")  # while being written


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
    tokenizer_file: str | None = None,
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
            "file": tokenizer_file or tokenizer_name(generation),
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


def generation_of(name: str) -> int | None:
    """The generation of a shard or tokenizer file name a build writes, finished or being written
    (0: untagged); None: not one."""
    temp = TEMP_FILE.fullmatch(name)
    name = temp["name"] if temp else name
    match = SHARD_FILE.fullmatch(name) or TOKENIZER_FILE.fullmatch(name)
    return None if match is None else int(match["generation"] or 0)


def stale_files(names, keep, replaces: list[str] | None) -> list[str]:
    """What a committed build removes from its output: every other build's files, and nothing else.

    That is: the files of the build it replaced (``replaces``, the old manifest's list; None where
    there was no finished build), files of other generations (tagged, so none can be a user's), and
    what attempts that died left under temporary names. An untagged shard name is taken for a failed
    attempt's only when no finished build was there; an untagged tokenizer.json that no manifest
    lists is kept: it may be the very tokenizer the user gave.
    """
    stale = []
    for name in names:
        if name in keep:
            continue
        temp = TEMP_FILE.fullmatch(name)
        if temp and (temp["name"] == MANIFEST or generation_of(temp["name"]) is not None):
            stale.append(name)
        elif replaces is not None and name in replaces:
            stale.append(name)
        elif not temp and (generation_of(name) or (replaces is None and SHARD_FILE.fullmatch(name))):
            stale.append(name)
    return stale


def _delete(paths: list[str]):
    """Deletes what is still there: a second attempt at the same commit may have been first."""
    for path in paths:
        try:
            FileSystems.delete([path])
        except Exception:
            if FileSystems.exists(path):
                raise


def write(output_dir: str, manifest: dict, tokenizer_json: str, replaces: list[str] | None = None):
    """Commits a build: its tokenizer, then manifest.json in one step; then removes ``stale_files``."""
    _write_whole(FileSystems.join(output_dir, manifest["tokenizer"]["file"]), tokenizer_json.encode("utf-8"))
    text = json.dumps(manifest, indent=2) + "\n"
    _write_whole(FileSystems.join(output_dir, MANIFEST), text.encode("utf-8"))
    keep = {s["file"] for s in manifest["shards"]} | {manifest["tokenizer"]["file"], MANIFEST}
    present = FileSystems.match([FileSystems.join(output_dir, "*")])[0].metadata_list
    names = {posixpath.basename(m.path): m.path for m in present}
    _delete([names[name] for name in stale_files(names, keep, replaces)])


def read(output_dir: str) -> dict:
    with FileSystems.open(FileSystems.join(output_dir, MANIFEST)) as f:
        return json.loads(f.read())
