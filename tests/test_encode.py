"""The hand-written tf.train.Example encoding, checked by TensorFlow itself."""

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmprep.transforms import decode, encode, records, shards
from mlmprep.transforms.beam import groups, write
from mlmprep.transforms.records import MaskedBatch

from conftest import bert_feature_spec

tf = pytest.importorskip("tensorflow")


def _batch():
    rng = np.random.default_rng(0)
    input_ids = np.zeros((5, 16), np.int32)
    lengths = np.array([16, 3, 9, 12, 5], np.int32)
    for row, n in enumerate(lengths):
        # Ids that need 1, 2, 3 and 5 varint bytes.
        input_ids[row, :n] = rng.choice([5, 200, 30000, 2**28 + 3], size=n)
    counts = np.array([3, 1, 2, 0, 1], np.int32)
    positions = np.zeros((5, 4), np.int32)
    ids = np.zeros((5, 4), np.int32)
    for row, k in enumerate(counts):
        positions[row, :k] = np.sort(rng.choice(np.arange(1, lengths[row] - 1), k, replace=False))
        ids[row, :k] = rng.integers(1, 30000, k)
    return MaskedBatch(input_ids, lengths, positions, ids, counts)


def test_examples_parse_with_the_bert_feature_spec():
    batch = _batch()
    spec = bert_feature_spec(16, 4)
    for row, serialized in enumerate(encode.tf_examples(batch).to_pylist()):
        parsed = tf.io.parse_single_example(serialized, spec)
        np.testing.assert_array_equal(parsed["input_ids"], batch.input_ids[row])
        np.testing.assert_array_equal(parsed["input_mask"], np.arange(16) < batch.lengths[row])
        np.testing.assert_array_equal(parsed["segment_ids"], np.zeros(16))
        np.testing.assert_array_equal(parsed["masked_lm_positions"], batch.masked_lm_positions[row])
        np.testing.assert_array_equal(parsed["masked_lm_ids"], batch.masked_lm_ids[row])
        np.testing.assert_array_equal(parsed["masked_lm_weights"], batch.masked_lm_weights[row])
        assert parsed["next_sentence_labels"].numpy().tolist() == [0]
        # Byte-identical to TensorFlow's own (deterministic) serialization.
        example = tf.train.Example.FromString(serialized)
        assert example.SerializeToString(deterministic=True) == serialized


def test_piece_lengths_are_a_variable_length_list_in_both_formats():
    """Each row's pieces' lengths (what varlen kernels take as cu_seqlens), unpadded: TensorFlow reads them
    as a VarLenFeature, lengths of one and of two varint bytes alike, and Parquet holds the same lists."""
    width = 400
    lengths = np.array([400, 300, 7], np.int32)
    pieces, piece_lengths = np.array([2, 2, 1], np.int32), np.array([200, 200, 130, 170, 7], np.int32)
    n = len(lengths)
    batch = MaskedBatch(
        input_ids=np.where(np.arange(width)[None, :] < lengths[:, None], 7, 0).astype(np.int32),
        lengths=lengths,
        masked_lm_positions=np.zeros((n, 2), np.int32),
        masked_lm_ids=np.zeros((n, 2), np.int32),
        num_predictions=np.zeros(n, np.int32),
        pieces=pieces,
        piece_lengths=piece_lengths,
    )
    want = [[200, 200], [130, 170], [7]]
    spec = {"piece_lengths": tf.io.VarLenFeature(tf.int64)}
    for row, serialized in enumerate(encode.tf_examples(batch).to_pylist()):
        parsed = tf.io.parse_single_example(serialized, spec)
        assert parsed["piece_lengths"].values.numpy().tolist() == want[row]
        example = tf.train.Example.FromString(serialized)
        assert example.SerializeToString(deterministic=True) == serialized
    assert encode.parquet_table(batch).column("piece_lengths").to_pylist() == want


def test_tfrecord_framing_reads_back_with_tensorflow(tmp_path):
    examples = encode.tf_examples(_batch()).to_pylist()
    path = tmp_path / "x.tfrecord"
    path.write_bytes(encode.tfrecord_bytes(examples))
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert read == examples
    assert decode.read_tfrecords(path.read_bytes()) == examples


def test_parquet_carries_the_same_facts():
    batch = _batch()
    sink = io.BytesIO()
    shard = encode.ParquetShard(sink)
    shard.add(batch)
    shard.close()
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.schema == encode.PARQUET_SCHEMA
    rows = table.to_pylist()
    for row, got in enumerate(rows):
        assert got["input_ids"] == batch.input_ids[row].tolist()
        assert got["attention_mask"] == (np.arange(16) < batch.lengths[row]).astype(int).tolist()
        k = batch.num_predictions[row]
        labels = np.full(16, -100)
        labels[batch.masked_lm_positions[row, :k]] = batch.masked_lm_ids[row, :k]
        assert got["labels"] == labels.tolist()
        assert got["masked_lm_weights"] == batch.masked_lm_weights[row].tolist()


@pytest.mark.parametrize("vocab_size", [30522, 2**29])
def test_rows_round_trip(vocab_size):
    batch = _batch()  # ids up to 2**28: 32-bit rows
    if vocab_size < 2**16:
        batch.input_ids = np.minimum(batch.input_ids, 30000)
    ids = records.id_type(vocab_size, 16)
    assert ids == (pa.uint16() if vocab_size < 2**16 else pa.int32())
    rows = records.to_rows(np.zeros(5, np.int8), np.arange(5, dtype=np.uint64), batch, ids)
    assert rows.column("input_ids").to_pylist()[1] == batch.input_ids[1, :3].tolist()  # no padding
    back = records.to_masked(rows, max_seq_length=16, max_predictions_per_seq=4, pad_id=0)
    for field in ("input_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_predictions"):
        np.testing.assert_array_equal(getattr(back, field), getattr(batch, field))


def _write_shard(out, batch):
    """Writes ``batch`` as shard 0 of 1 through the job's writer: {format: (info dict, file bytes)}."""
    out.mkdir()
    writer = write.WriteShard(
        output_dir=str(out),
        formats=("tfrecord", "parquet"),
        max_seq_length=16,
        max_predictions_per_seq=4,
        pad_id=0,
    )
    n = len(batch.lengths)
    rows = pa.Table.from_batches(  # record keys in row order
        [records.to_rows(np.zeros(n, np.int8), np.arange(n, dtype=np.uint64), batch, pa.int32())]
    )
    # Two pieces, out of order, as a shuffle hands them over.
    pieces = [groups.to_ipc(rows.take(np.arange(1, n, 2))), groups.to_ipc(rows.take(np.arange(0, n, 2)))]
    writer.setup()
    try:
        shard = groups.ShuffledGroup(pieces, write.RECORD_ORDER)
        infos = list(writer.process((0, shard), layout={0: (n, 1, {})}))
    finally:
        writer.teardown()
    assert not list(out.glob("*" + shards.TEMP_SUFFIX))
    return {info["format"]: (info, (out / info["file"]).read_bytes()) for info in infos}


def test_shard_written_in_slices_of_rows(tmp_path, monkeypatch):
    small = _batch()
    batch = MaskedBatch(
        **{
            f.name: np.concatenate([getattr(small, f.name)] * 40)
            for f in dataclasses.fields(small)
            if isinstance(getattr(small, f.name), np.ndarray)
        }
    )
    whole = _write_shard(tmp_path / "whole", batch)  # 200 rows: one slice
    monkeypatch.setattr(encode, "_SLICE_POSITIONS", 64 * 16)  # slices of 64 rows of 16
    sliced = _write_shard(tmp_path / "sliced", batch)

    tfrecord = encode.tfrecord_bytes(encode.tf_examples(batch)).to_pybytes()
    assert sliced["tfrecord"][1] == whole["tfrecord"][1] == tfrecord
    parquet = {
        name: pq.ParquetFile(io.BytesIO(files["parquet"][1]))
        for name, files in [("whole", whole), ("sliced", sliced)]
    }
    assert {name: f.num_row_groups for name, f in parquet.items()} == {"whole": 1, "sliced": 4}
    assert parquet["sliced"].read().equals(parquet["whole"].read())
    stats = {
        "records": 200,
        "tokens": int(batch.lengths.sum()),
        "predictions": int(batch.num_predictions.sum()),
    }
    for info, data in [*whole.values(), *sliced.values()]:
        assert {k: info[k] for k in stats} == stats
        assert info["sha256"] == encode.sha256(data)


def test_a_shard_write_that_fails_leaves_no_file(tmp_path, monkeypatch):
    small = _batch()
    batch = MaskedBatch(
        **{
            f.name: np.concatenate([getattr(small, f.name)] * 40)
            for f in dataclasses.fields(small)
            if isinstance(getattr(small, f.name), np.ndarray)
        }
    )
    monkeypatch.setattr(encode, "_SLICE_POSITIONS", 64 * 16)  # 4 slices
    add = encode.ParquetShard.add_table
    calls = []

    def fail_on_the_second_slice(shard, table):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full")
        add(shard, table)

    monkeypatch.setattr(encode.ParquetShard, "add_table", fail_on_the_second_slice)
    with pytest.raises(OSError, match="disk full"):
        _write_shard(tmp_path / "out", batch)
    assert calls == [64, 64]  # stopped at the failing slice
    assert list((tmp_path / "out").iterdir()) == []  # neither a shard nor a temporary file
