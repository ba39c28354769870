import pathlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from mlmprep.transforms.beam.read import BATCH_CHARS, ReadDocuments
from mlmprep.transforms.documents import BLOCK_BYTES
from mlmprep.transforms.text_input import iter_text_documents
from mlmprep.transforms.tokenize import (
    TokenizerError,
    encode_batch,
    load_tokenizer,
    tokenizer_json,
    vocabulary,
)


@pytest.fixture(scope="module")
def both(bert_vocab, bert_tokenizer_json):
    return [
        load_tokenizer(tokenizer_json(pathlib.Path(path).read_bytes()))
        for path in (bert_vocab, bert_tokenizer_json)
    ]


def test_vocab_txt_and_tokenizer_json_encode_alike(both, real_data):
    text = (real_data / "corpora" / "tiny" / "fortunes_en.txt").read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    a, b = (encode_batch(t, docs) for t in both)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(len(x) > 0 for x in a)


def test_no_truncation_padding_or_special_tokens(both):
    long_text = "word " * 1000
    for tokenizer in both:
        ids = encode_batch(tokenizer, [long_text, "a"])
        assert len(ids[0]) == 1000 and len(ids[1]) == 1  # file's truncation/padding (128) off
        assert 101 not in ids[0] and 102 not in ids[0]


def test_special_token_text_is_ordinary_text(both):
    for tokenizer in both:
        (ids,) = encode_batch(tokenizer, ["hello [MASK] [SEP] [CLS] world"])
        assert not set(ids.tolist()) & {101, 102, 103}


def test_vocabulary_specials(both):
    vocab = vocabulary(both[0])
    assert (vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (0, 100, 101, 102, 103)
    assert vocab.size == 30522
    # 30522 minus 5 specials minus 994 [unusedN]: bracketed placeholders are never random picks.
    assert vocab.random_ids.size == 30522 - 5 - 994


def test_cased_vocab_keeps_case(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "world"]))
    tokenizer = load_tokenizer(tokenizer_json(vocab.read_bytes()))
    assert encode_batch(tokenizer, ["Hello world"])[0].tolist() == [5, 7]


def test_unusable_tokenizers():
    with pytest.raises(TokenizerError, match="UTF-8"):
        tokenizer_json(b"\xff\xfe\x00")
    with pytest.raises(TokenizerError, match="cannot load"):
        tokenizer_json(b'{"version": 1}')
    with pytest.raises(TokenizerError, match="UNK"):
        tokenizer_json(b"[PAD]\nhello\n")


def test_batches_of_documents_are_bounded_by_their_text(real_data):
    # Documents of every size: KJV's books, the Jargon File's entries, one-line definitions.
    small = real_data / "corpora" / "small"
    paths = [str(small / name) for name in ("kjv.txt", "jargon.txt", "devils_dictionary.txt")]
    docs = []
    for path in paths:
        with open(path, "rb") as f:
            docs += ["".join(pieces) for pieces in iter_text_documents(f, "text")]

    def check(batches):
        read = sorted(doc for texts, _ in batches for doc in texts)
        assert read == sorted(docs)  # every document once
        assert len(batches) > 3
        for _, chars in batches:  # a batch ends once it reached BATCH_CHARS, at a block's end
            assert chars < BATCH_CHARS + BLOCK_BYTES
        assert min(len(texts) for texts, _ in batches) > 16  # small documents do share batches

    options = dict(readers=(("text", "text"),), range_bytes=1 << 20, dedup=False)
    with TestPipeline() as p:
        batches = (
            p
            | beam.Create([(0, path) for path in paths])
            | ReadDocuments(**options, with_keys=False, dedup_bits=0)
        )["batches"] | beam.Map(
            lambda b: (["".join(d) for d in b.docs], sum(len(piece) for d in b.docs for piece in d))
        )
        assert_that(batches, check)
