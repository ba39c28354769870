"""ArrayRecord shards for Grain and other JAX loaders: one ``tf.train.Example`` a record, as in TFRecord.

``array_record``'s writer (and the Beam sink it ships) writes only to a local
path, so a shard is written to a local temporary file and then copied into
its destination, a file of Beam's FileSystems as every other format's.
"""

import os
import shutil
import tempfile

import pyarrow as pa

# One record a group: Grain's random access reads a record without decoding its neighbours (its
# ArrayRecordDataSource warns on any other group size). Each record is then compressed alone: snappy
# takes a third of the default zstd's CPU here for files 3% larger (ids barely compress).
OPTIONS = "group_size:1,snappy"
EXTRA = "arrayrecord"  # the setup.py extra that installs the library


def module():
    """array_record's writer and reader; ImportError names the extra that installs them."""
    try:
        from array_record.python import array_record_module
    except ImportError as e:
        raise ImportError(f"--formats arrayrecord needs array_record: pip install 'mlmprep[{EXTRA}]'") from e
    return array_record_module


class ArrayRecordShard:
    """An ArrayRecord file of serialized records, copied into ``sink`` (anything with ``write``) at close."""

    def __init__(self, sink):
        self._sink = sink
        self._dir = tempfile.mkdtemp(prefix="mlmprep-arrayrecord-")
        self._path = os.path.join(self._dir, "shard.array_record")
        self._writer = module().ArrayRecordWriter(self._path, OPTIONS)

    def add(self, records: pa.BinaryArray) -> None:
        for record in records.to_pylist():
            self._writer.write(record)

    def close(self) -> None:
        self._writer.close()
        with open(self._path, "rb") as f:
            while chunk := f.read(1 << 22):
                self._sink.write(chunk)
        shutil.rmtree(self._dir, ignore_errors=True)

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # already closed, or failed: the file is being deleted either way
            pass
        shutil.rmtree(self._dir, ignore_errors=True)
