"""Reading an output's shard files, whichever format: a slice of rows at a time, hashed as read.

For the tools that read an output (``verify``, ``inspect``, ``report``);
what a reader holds does not grow with the shard.
"""

import contextlib
import hashlib

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.settings import Settings
from mlmprep.transforms import decode, encode

READ_BYTES = 8 << 20


class HashingReader:
    """A file read front to back, hashed as it is read."""

    def __init__(self, f):
        self._f = f
        self._digest = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self._digest.update(data)
        return data

    def sha256(self) -> str:
        """The whole file's hash: what was not read yet is read now."""
        while self.read(READ_BYTES):
            pass
        return self._digest.hexdigest()


def slices(
    output_dir: str,
    manifest: dict,
    shard: dict,
    stack: contextlib.ExitStack,
    frame,
    *,
    settings: Settings | None = None,
    rows: int | None = None,
):
    """(``rows`` of the shard at a time, a function giving its sha256 once they are read): ``(MaskedBatch,
    raw columns)`` pairs as ``decode`` reads them. ``frame``: the tokenizer's, to find a pair's segments;
    ``settings``: the manifest's, where the caller has them."""
    settings = settings or manifest_lib.settings(manifest)
    seq, preds = settings.packing.max_seq_length, settings.masking.max_predictions_per_seq
    pairs = frame if settings.pairs.enabled else None
    unmasked = (settings.masking.unmasked, "sources" in manifest)
    name, fmt = shard["file"], shard["format"]
    rows = rows or encode.slice_rows(seq)
    if fmt in ("tfrecord", "mds"):
        stream = HashingReader(stack.enter_context(manifest_lib.open_file(output_dir, name)))
        if fmt == "tfrecord":
            return decode.tfrecord_slices(stream, seq, preds, rows, pairs, *unmasked), stream.sha256
        config = manifest.get("mds", {}).get("config")
        compression = None if config is None else config["compression"]
        read = decode.mds_slices(
            stream, compression, seq, preds, rows, pairs, *unmasked, expected_config=config
        )
        return read, stream.sha256

    def sha256():  # Parquet is read from its footer, ArrayRecord by path: the hash takes a pass of its own
        with manifest_lib.open_file(output_dir, name) as f:
            return HashingReader(f).sha256()

    if fmt == "arrayrecord":
        path = stack.enter_context(manifest_lib.local_copy(output_dir, name))
        return decode.arrayrecord_slices(path, seq, preds, rows, pairs, *unmasked), sha256
    parquet = stack.enter_context(manifest_lib.open_file(output_dir, name, seekable=True))
    return decode.parquet_slices(parquet, seq, preds, rows, pairs, *unmasked), sha256
