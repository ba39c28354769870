"""Committing a build: its tokenizer, then manifest.json in one step, then the files of other builds go.

Through Beam's FileSystems, as the shards were written (see ``manifest`` for
why this order keeps the previous build whole until the new one is complete).
"""

import posixpath
import uuid

from apache_beam.io.filesystems import FileSystems

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.transforms.shards import TEMP_SUFFIX


def _write_whole(path: str, data: bytes):
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
    """Writes the tokenizer, then manifest.json in one step; then removes ``manifest.stale_files``."""
    _write_whole(FileSystems.join(output_dir, manifest["tokenizer"]["file"]), tokenizer_json.encode("utf-8"))
    _write_whole(
        FileSystems.join(output_dir, manifest_lib.MANIFEST), manifest_lib.to_json(manifest).encode("utf-8")
    )
    keep = {s["file"] for s in manifest["shards"]} | {manifest["tokenizer"]["file"], manifest_lib.MANIFEST}
    present = FileSystems.match([FileSystems.join(output_dir, "*")])[0].metadata_list
    names = {posixpath.basename(m.path): m.path for m in present}
    _delete([names[name] for name in manifest_lib.stale_files(names, keep, replaces)])
