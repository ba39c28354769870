"""Committing a build: its tokenizer, then manifest.json in one step, then the files of other builds go;
and what a build written into a non-empty output replaces there.

Through Beam's FileSystems, as the shards were written (see ``manifest`` for
why this order keeps the previous build whole until the new one is complete).
"""

import dataclasses
import os
import posixpath
import uuid

from apache_beam.io.filesystems import FileSystems

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.transforms import encode
from mlmprep.transforms.shards import MDS_FOLDER, TEMP_SUFFIX


def write_whole(path: str, data: bytes):
    """Writes a file under a temporary name and renames it: it is replaced in one step, never half written."""
    temp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with FileSystems.create(temp) as f:
        f.write(data)
    FileSystems.rename([temp], [path])


def _delete(paths: list[str]):
    """Deletes what is still there: a second attempt at the same commit may have been first."""
    for path in paths:
        try:
            FileSystems.delete([path])
        except Exception:
            if FileSystems.exists(path):
                raise


def commit(output_dir: str, manifest: manifest_lib.Manifest, tokenizer_json: str, replaces=None):
    """Writes the tokenizer and each MDS split's index.json, then manifest.json in one step; then removes
    ``manifest.stale_files``. (An MDS reader sees the new build from its index.json on, complete.)"""
    write_whole(FileSystems.join(output_dir, manifest["tokenizer"]["file"]), tokenizer_json.encode("utf-8"))
    indexes = manifest_lib.mds_indexes(manifest)
    for name, data in indexes.items():
        write_whole(FileSystems.join(output_dir, name), data)
    write_whole(
        FileSystems.join(output_dir, manifest_lib.MANIFEST), manifest_lib.to_json(manifest).encode("utf-8")
    )
    keep = {s["file"] for s in manifest["shards"]} | {manifest["tokenizer"]["file"], manifest_lib.MANIFEST}
    names = _files(output_dir)
    _delete([names[name] for name in manifest_lib.stale_files(names, keep | set(indexes), replaces)])


def _files(output_dir: str) -> dict[str, str]:
    """The files of an output, by their names relative to it: its own and its MDS splits' folders'."""
    names = {}
    for pattern in ("*", f"{MDS_FOLDER}/*/*"):
        try:
            present = FileSystems.match([FileSystems.join(output_dir, pattern)])[0].metadata_list
        except Exception:  # no MDS folder
            continue
        for m in present:
            relative = (
                posixpath.relpath(m.path, output_dir)
                if "://" not in m.path
                else m.path[len(output_dir.rstrip("/")) + 1 :]
            )
            names[relative] = m.path
    return names


def tokenizer_file(replacing, tokenizer_json: str, generation: int) -> str:
    """The tokenizer's file name: the same tokenizer as the build it replaces keeps that one's file."""
    previous = replacing.tokenizer if replacing else None
    if previous and previous.get("sha256") == encode.sha256(tokenizer_json.encode("utf-8")):
        return previous["file"]
    return manifest_lib.tokenizer_name(generation)


@dataclasses.dataclass(frozen=True)
class Replacing:
    """What a build written into a non-empty output must know of what is there (see ``manifest``)."""

    generation: int  # above every generation there, finished or not
    replaces: tuple[str, ...] | None  # the files of the finished build there; None: none finished
    tokenizer: dict | None  # the finished build's tokenizer entry, whose file a same tokenizer keeps


def replacing(output: str, overwrite: bool) -> Replacing | None:
    """None for an empty output; a non-empty one needs --overwrite. Nothing is deleted here: a build
    replaces another only once it is complete."""
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} is a file, not a directory")
    try:
        existing = FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list
    except Exception:  # nothing there yet
        existing = []
    if not existing:
        return None
    if not overwrite:
        raise UsageError(f"--output {output} exists and is not empty; pass --overwrite to replace it")
    names = [posixpath.basename(m.path) for m in existing]
    generations = [g for g in map(manifest_lib.generation_of, names) if g is not None]
    previous = None
    if manifest_lib.MANIFEST in names:
        try:
            previous = manifest_lib.read(output)
            generations.append(int(previous.get("generation", 0)))
            replaces = tuple(s["file"] for s in previous["shards"]) + (previous["tokenizer"]["file"],)
        except (ValueError, KeyError, TypeError):  # damaged: no finished build is there
            previous = None
        except Exception as e:
            raise UsageError(f"cannot read the manifest.json in --output {output}: {e}") from None
    return Replacing(
        generation=1 + max(generations) if generations or previous else 0,
        replaces=replaces if previous else None,
        tokenizer=previous["tokenizer"] if previous else None,
    )
