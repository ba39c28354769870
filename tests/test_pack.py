import numpy as np
import pytest

from mlmprep.transforms.frames import bert_frame
from mlmprep.transforms.pack import pack_concat, pack_documents

CLS, SEP, PAD = 101, 102, 0
IDS = dict(frame=bert_frame(CLS, SEP), pad_id=PAD)
CONCAT = dict(IDS, joiner_id=SEP)


def _docs(*lengths, start=1000):
    out, next_id = [], start
    for n in lengths:
        out.append(np.arange(next_id, next_id + n, dtype=np.int32))
        next_id += n
    return out


def _bodies(input_ids, lengths):
    return [row[1 : n - 1] for row, n in zip(input_ids, lengths)]


def _check_frame(input_ids, lengths, max_seq_length):
    assert input_ids.shape[1] == max_seq_length
    for row, n in zip(input_ids, lengths):
        assert row[0] == CLS and row[n - 1] == SEP
        assert np.all(row[n:] == PAD)
        assert np.sum(row == CLS) == 1  # no duplicate [CLS]


def test_document_packing_short_documents_one_sequence_each():
    docs = _docs(3, 5, 1)
    input_ids, lengths, doc, _ = pack_documents(docs, max_seq_length=8, **IDS)
    _check_frame(input_ids, lengths, 8)
    assert lengths.tolist() == [5, 7, 3]
    assert doc.tolist() == [0, 1, 2]
    for body, d in zip(_bodies(input_ids, lengths), docs):
        np.testing.assert_array_equal(body, d)


def test_document_packing_long_document_continues_without_loss():
    docs = _docs(2, 13, 6)  # body of 6 per sequence at length 8
    input_ids, lengths, doc, _ = pack_documents(docs, max_seq_length=8, **IDS)
    _check_frame(input_ids, lengths, 8)
    assert doc.tolist() == [0, 1, 1, 1, 2]
    assert lengths.tolist() == [4, 8, 8, 3, 8]
    bodies = _bodies(input_ids, lengths)
    for d, index in enumerate(docs):
        rebuilt = np.concatenate([b for b, owner in zip(bodies, doc) if owner == d])
        np.testing.assert_array_equal(rebuilt, index)


def test_document_packing_skips_documents_without_tokens():
    input_ids, lengths, doc, _ = pack_documents(_docs(0, 2), max_seq_length=8, **IDS)
    assert doc.tolist() == [1]
    assert pack_documents([], max_seq_length=8, **IDS)[0].shape == (0, 8)


@pytest.mark.parametrize("lengths", [(3, 5, 1), (6, 6, 6), (5, 20, 1, 1, 4), (1,) * 9, (40,)])
def test_concat_packing_fills_sequences_and_keeps_every_token(lengths):
    docs = _docs(*lengths)
    input_ids, seq_lengths, _ = pack_concat(docs, max_seq_length=8, **CONCAT)
    _check_frame(input_ids, seq_lengths, 8)
    assert np.all(seq_lengths[:-1] >= 7), "only the last sequence may be short of a full body"
    stream = np.concatenate(_bodies(input_ids, seq_lengths))
    # Removing the joining [SEP]s gives back the documents in order.
    np.testing.assert_array_equal(stream[stream != SEP], np.concatenate(docs))
    for body in _bodies(input_ids, seq_lengths):
        assert body[0] != SEP and body[-1] != SEP, "no [SEP] right after [CLS] or doubled at the end"
        assert not np.any((body[:-1] == SEP) & (body[1:] == SEP))


def test_concat_packing_joins_documents_with_sep():
    input_ids, lengths, _ = pack_concat(_docs(2, 2), max_seq_length=10, **CONCAT)
    assert input_ids.tolist() == [[CLS, 1000, 1001, SEP, 1002, 1003, SEP, PAD, PAD, PAD]]
    assert lengths.tolist() == [7]
