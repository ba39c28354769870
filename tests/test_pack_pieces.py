"""Where pieces lie travels with the sequences: every packing says where each row's pieces are, the record
rows carry it through masking and grouping, and the writer numbers position_ids from it. The pieces
agree with what a reader finds from the tokens alone (each piece opens with the frame's first token)."""

import numpy as np
import pyarrow as pa
import pytest

from mlmprep.transforms import records
from mlmprep.transforms.frames import A, B, Frame, bert_frame
from mlmprep.transforms.pack import BestFitPacker, ConcatPacker, pack_documents
from mlmprep.transforms.pairs import Documents, PairConfig, make_pairs

CLS, SEP, PAD = 101, 102, 0
FRAMES = {
    "bert": bert_frame(CLS, SEP),
    # RoBERTa's: <s> A </s>, <s> A </s> </s> B </s>, B's type id 0.
    "roberta": Frame(((CLS, 0), (A, 0), (SEP, 0)), ((CLS, 0), (A, 0), (SEP, 0), (SEP, 0), (B, 0), (SEP, 0))),
}


def _documents(n: int, seed: int = 0, longest: int = 90) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1000, 2000, size=int(k), dtype=np.int32) for k in rng.integers(1, longest, size=n)]


def _joined(parts) -> list:
    """Packers' outputs (``pack.Packed``) joined column by column (all but the pieces' sources)."""
    return [None if column[0] is None else np.concatenate(column) for column in list(zip(*parts))[:5]]


def _agrees_with_the_tokens(input_ids, lengths, pieces, piece_lengths, frame: Frame):
    """The pieces tile each row's real tokens and start where the frame's first token stands."""
    assert pieces.dtype == np.int32 and piece_lengths.dtype == np.int32
    assert len(pieces) == len(lengths) and pieces.sum() == len(piece_lengths)
    np.testing.assert_array_equal(np.add.reduceat(piece_lengths, np.cumsum(pieces) - pieces), lengths)
    found = records.piece_starts(input_ids, lengths, frame.first_id)
    np.testing.assert_array_equal(found.sum(axis=1), pieces)
    np.testing.assert_array_equal(
        records.piece_position_ids(piece_lengths, lengths, input_ids.shape[1]),
        records.position_ids(input_ids, lengths, frame.first_id),
    )


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES)
@pytest.mark.parametrize("window", [1, 16])
def test_best_fit_says_where_every_piece_lies(frame, window):
    docs = _documents(400)
    packer = BestFitPacker(max_seq_length=32, frame=frame, pad_id=PAD, window=window)
    parts = [packer.add(docs[i : i + 50]) for i in range(0, len(docs), 50)] + [packer.finish()]
    input_ids, lengths, _, pieces, piece_lengths = _joined(parts)
    assert pieces.max() > 2  # several short documents to a row
    _agrees_with_the_tokens(input_ids, lengths, pieces, piece_lengths, frame)


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES)
def test_document_concat_and_pairs_are_one_piece_a_row(frame):
    docs = _documents(60)
    input_ids, lengths, _, _ = pack_documents(docs, max_seq_length=32, frame=frame, pad_id=PAD)
    _agrees_with_the_tokens(input_ids, lengths, *records.one_piece_each(lengths), frame)

    packer = ConcatPacker(max_seq_length=32, frame=frame, joiner_id=SEP, pad_id=PAD)
    for packed in (packer.add(docs), packer.finish()):
        _agrees_with_the_tokens(packed.input_ids, packed.lengths, packed.pieces, packed.piece_lengths, frame)

    rng = np.random.default_rng(1)
    sentences = [rng.integers(2, 12, size=int(rng.integers(1, 8))) for _ in range(60)]
    pool = Documents(
        [rng.integers(1000, 2000, size=int(s.sum()), dtype=np.int32) for s in sentences],
        [np.cumsum(s).astype(np.int32) for s in sentences],
        np.arange(1, 61, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15),
    )
    pairs = make_pairs(pool, 0, PairConfig(mode="nsp", max_seq_length=32), frame=frame, pad_id=PAD)
    assert len(pairs.lengths) > len(pool)
    _agrees_with_the_tokens(pairs.input_ids, pairs.lengths, pairs.pieces, pairs.piece_lengths, frame)


def test_a_frame_that_no_token_opens_writes_one_piece_a_row():
    """``A [SEP]``: readers cannot find where pieces start, so best fit writes each row as one piece."""
    frame = Frame(((A, 0), (SEP, 0)), ((A, 0), (SEP, 0), (B, 1), (SEP, 1)))
    packer = BestFitPacker(max_seq_length=32, frame=frame, pad_id=PAD, window=8)
    input_ids, lengths, _, pieces, piece_lengths = _joined([packer.add(_documents(100)), packer.finish()])
    assert np.sum(input_ids == SEP) > len(lengths)  # several pieces to a row, one piece each written
    _agrees_with_the_tokens(input_ids, lengths, pieces, piece_lengths, frame)


def test_position_ids_restart_at_each_piece_and_are_zero_on_padding():
    lengths = np.array([5, 4, 5, 0])
    expected = [
        [0, 1, 2, 0, 1, 0, 0],
        [0, 1, 2, 3, 0, 0, 0],
        [0, 1, 2, 3, 4, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    positions = records.piece_position_ids(np.array([3, 2, 4, 5], np.int32), lengths, 7)
    assert positions.dtype == np.int32 and positions.tolist() == expected
    assert records.piece_position_ids(np.zeros(0, np.int32), np.zeros(0, np.int32), 7).shape == (0, 7)


def test_a_slice_of_rows_takes_its_own_pieces():
    pieces, piece_lengths = np.array([2, 1, 3, 1], np.int32), np.arange(1, 8, dtype=np.int32)
    for rows, expected in (
        (slice(0, 2), [1, 2, 3]),
        (slice(1, 3), [3, 4, 5, 6]),
        (slice(2, 100), [4, 5, 6, 7]),
        (slice(4, 8), []),
    ):
        got_pieces, got_lengths = records.piece_rows(pieces, piece_lengths, rows)
        assert got_pieces.tolist() == pieces[rows].tolist() and got_lengths.tolist() == expected


def _masked(n: int, frame: Frame, seed: int = 0) -> records.MaskedBatch:
    packer = BestFitPacker(max_seq_length=48, frame=frame, pad_id=PAD, window=4)
    packed = [packer.add(_documents(n, seed, longest=60)), packer.finish()]
    input_ids, lengths, _, pieces, piece_lengths = _joined(packed)
    rows = len(lengths)
    return records.MaskedBatch(
        input_ids=input_ids,
        lengths=lengths,
        masked_lm_positions=np.tile(np.array([[1, 2]], np.int32), (rows, 1)),
        masked_lm_ids=input_ids[:, 1:3].copy(),
        num_predictions=np.full(rows, 2, np.int32),
        pieces=pieces,
        piece_lengths=piece_lengths,
    )


@pytest.mark.parametrize("ids", [pa.uint16(), pa.int32()])
def test_pieces_travel_in_the_record_rows_through_any_order_and_chunking(ids):
    batches = [_masked(80, FRAMES["bert"], seed) for seed in (1, 2)]
    rows = [
        records.to_rows(np.zeros(len(b.lengths), np.int8), np.arange(len(b.lengths), dtype=np.uint64), b, ids)
        for b in batches
    ]
    table = pa.Table.from_batches(rows)  # two chunks, as a group's rows arrive
    order = np.random.default_rng(0).permutation(table.num_rows)
    back = records.to_masked(table.take(order), max_seq_length=48, max_predictions_per_seq=2, pad_id=PAD)
    originals = [b.input_ids for b in batches]
    expected = np.concatenate([b.position_ids for b in batches])[order]
    np.testing.assert_array_equal(back.input_ids, np.concatenate(originals)[order])
    np.testing.assert_array_equal(back.position_ids, expected)
    assert back.piece_lengths.dtype == np.int32 and len(back.piece_lengths) == sum(
        len(b.piece_lengths) for b in batches
    )
    _agrees_with_the_tokens(back.input_ids, back.lengths, back.pieces, back.piece_lengths, FRAMES["bert"])


def test_a_batch_that_says_nothing_is_one_piece_a_row():
    batch = _masked(20, FRAMES["bert"])
    batch.pieces = batch.piece_lengths = None
    pieces, piece_lengths = batch.piece_layout()
    assert pieces.tolist() == [1] * len(batch.lengths) and piece_lengths.tolist() == batch.lengths.tolist()
    cols = np.arange(48)[None, :]
    np.testing.assert_array_equal(batch.position_ids, np.where(cols < batch.lengths[:, None], cols, 0))


@pytest.mark.parametrize("masking", ["token", "none"])
def test_masking_hands_each_slice_of_rows_its_own_pieces(bert_vocab, masking):
    """MaskSequences masks a batch a slice of rows at a time, ``dupe_factor`` copies each; every record row
    keeps its sequence's pieces."""
    from mlmprep.transforms import mask, tokenize
    from mlmprep.transforms.beam.mask import MaskSequences
    from mlmprep.transforms.pack import SequenceBatch, sequence_keys

    with open(bert_vocab, "rb") as f:
        vocab = tokenize.vocabulary(tokenize.load_tokenizer(tokenize.tokenizer_json(f.read())))
    packer = BestFitPacker(max_seq_length=48, frame=vocab.frame, pad_id=vocab.pad_id, window=4)
    input_ids, lengths, _, pieces, piece_lengths = _joined(
        [packer.add(_documents(90, 3, 60)), packer.finish()]
    )
    batch = SequenceBatch(
        input_ids=input_ids,
        lengths=lengths,
        keys=sequence_keys(input_ids, lengths),
        splits=np.zeros(len(lengths), np.int8),
        pieces=pieces,
        piece_lengths=piece_lengths,
        word_starts=np.ones(input_ids.shape, bool) if masking == "none" else None,
    )
    step = MaskSequences(
        config=mask.MaskingConfig(masking=masking, max_predictions_per_seq=7),
        vocab=vocab,
        seed=5,
        dupe_factor=2,
        max_seq_length=48,
    )
    step.setup()
    step._rows = 7  # slices of 7 rows (the job's are of MASK_POSITIONS tokens)
    rows = pa.Table.from_batches(list(step.process(batch)))
    assert rows.num_rows == 2 * len(lengths)
    back = records.to_masked(rows, max_seq_length=48, max_predictions_per_seq=7, pad_id=vocab.pad_id)
    # Slice by slice, the two copies of its rows one after the other.
    order = np.concatenate(
        [np.tile(np.arange(a, min(a + 7, len(lengths))), 2) for a in range(0, len(lengths), 7)]
    )
    np.testing.assert_array_equal(back.lengths, lengths[order])
    expected = records.piece_position_ids(piece_lengths, lengths, 48)[order]
    np.testing.assert_array_equal(back.position_ids, expected)
    np.testing.assert_array_equal(back.pieces, pieces[order])


def test_the_trainer_reads_position_ids_alike_for_every_packing():
    """One feature spec for every packing; records written before position_ids were read as one piece a
    row; the model inputs hold them for a model that takes them."""
    tf = pytest.importorskip("tensorflow")
    from mlmprep.trainer import data
    from mlmprep.transforms import encode

    batch = _masked(30, FRAMES["bert"])  # best-fit rows of several pieces
    serialized = encode.tf_examples(batch).to_pylist()
    spec = data.feature_spec(48, 2)
    parsed = tf.io.parse_example(serialized, spec)
    np.testing.assert_array_equal(parsed["position_ids"].numpy(), batch.position_ids)
    example = tf.train.Example.FromString(serialized[0])
    del example.features.feature["position_ids"]
    old = tf.io.parse_example([example.SerializeToString()], spec)
    assert old["position_ids"].numpy().tolist() == [list(range(48))]
    x, _, _ = data.to_model_inputs(parsed)
    assert "position_ids" not in x  # a model of one piece a row takes none
    x, _, _ = data.to_model_inputs(parsed, positions=True)
    np.testing.assert_array_equal(x["position_ids"].numpy(), batch.position_ids)
