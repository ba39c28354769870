"""Sentence pairs (--sentence_pairs nsp|sop): the pairing rules, the shards, determinism, verify."""

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import summary, verify
from mlmprep.transforms import encode, pairs
from mlmprep.transforms.frames import bert_frame
from mlmprep.transforms.tokenize import encode_batch, load_tokenizer, tokenizer_json

from conftest import run_job

BERT_FRAME = bert_frame(101, 102)


def test_fit_cuts_the_longer_side_as_berts_truncate_seq_pair():
    def truncate(a, b, max_tokens):  # BERT's loop, one token at a time
        while a + b > max_tokens:
            if a > b:
                a -= 1
            else:
                b -= 1
        return a, b

    rng = np.random.default_rng(0)
    for a, b, m in rng.integers(1, 300, (2000, 3)):
        assert pairs.fit(int(a), int(b), int(m) + 2) == truncate(int(a), int(b), int(m) + 2)


def test_sentences_are_lines_split_further_where_a_line_holds_several():
    text = "One line, one sentence.\nDr. Smith went home. He slept! Did he?\n\n  \nLast line"
    assert pairs.split_sentences(text, "en") == [
        "One line, one sentence.",
        "Dr. Smith went home. ",
        "He slept! ",
        "Did he?",
        "Last line",
    ]
    assert pairs.split_sentences("我喜欢猫。你呢？", "zh") == ["我喜欢猫。", "你呢？"]


def _documents(rng, count):
    ids, ends = [], []
    for _ in range(count):
        lengths = rng.integers(1, 60, rng.integers(1, 12))
        ids.append(rng.integers(1000, 30000, lengths.sum()).astype(np.int32))
        ends.append(np.cumsum(lengths).astype(np.int32))
    keys = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return pairs.Documents(ids, ends, keys)


def _segments(batch, row):
    start, end = int(batch.segment_starts[row]), int(batch.lengths[row])
    return batch.input_ids[row, 1 : start - 1], batch.input_ids[row, start : end - 1]


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_every_token_of_a_document_is_in_exactly_one_pair_in_order(mode):
    docs = _documents(np.random.default_rng(1), 300)
    config = pairs.PairConfig(mode=mode, max_seq_length=64, short_seq_prob=0.2, seed=7)
    batch = pairs.make_pairs(docs, 0, config, frame=BERT_FRAME, pad_id=0)
    assert batch.without_other_document == 0
    own = []  # each pair's tokens from its own document, in document order
    for row in range(len(batch.lengths)):
        a, b = _segments(batch, row)
        assert a.size and b.size and batch.lengths[row] == a.size + b.size + 3 <= 64
        label = batch.labels[row]
        own.append(
            a if label == pairs.IS_RANDOM and mode == "nsp" else np.concatenate([b, a] if label else [a, b])
        )
    assert np.array_equal(np.concatenate(own), np.concatenate(docs.token_ids))
    share = batch.labels.mean()
    assert abs(share - 0.5) < 4 * 0.5 / np.sqrt(len(batch.labels))
    # Some documents aim at shorter pairs (--short_seq_prob); the rest fill the sequence where they can.
    assert 0.05 < np.mean(batch.lengths < 40) < 0.6
    again = pairs.make_pairs(docs, 0, config, frame=BERT_FRAME, pad_id=0)
    assert np.array_equal(again.input_ids, batch.input_ids) and np.array_equal(again.labels, batch.labels)


def test_a_pair_is_cut_inside_a_sentence_only_where_a_word_starts():
    # One document of one long sentence; ids >= 20000 continue a word (WordPiece's "##" pieces).
    rng = np.random.default_rng(2)
    ids = rng.integers(1000, 30000, 500).astype(np.int32)
    docs = pairs.Documents([ids], [np.array([500], np.int32)], np.array([12345], np.uint64))
    continues = np.zeros(30000, bool)
    continues[20000:] = True
    config = pairs.PairConfig(mode="sop", max_seq_length=32, short_seq_prob=0.0)
    batch = pairs.make_pairs(docs, 0, config, frame=BERT_FRAME, pad_id=0, continues=continues)
    firsts = [
        (b if label == pairs.IN_ORDER else a)[0]
        for a, b, label in ((*_segments(batch, r), batch.labels[r]) for r in range(len(batch.lengths)))
    ]
    # A pair's second segment starts at a word start, except where fitting the pair cut a word.
    assert np.mean(np.array(firsts) < 20000) > 0.9


# --- The job on a real corpus -------------------------------------------------------------------


def _kjv_documents(real_data, bert_vocab) -> list[np.ndarray]:
    """KJV's documents (blank-line separated) tokenized whole, independently of the job's sentences."""
    text = (real_data / "corpora" / "small" / "kjv.txt").read_text(encoding="utf-8")
    docs = [d for d in re.split(r"\n\s*\n", text) if d.strip()]
    tokenizer = load_tokenizer(tokenizer_json(open(bert_vocab, "rb").read()))
    return encode_batch(tokenizer, docs)


def _pairs_of(out):
    """(A, B, label) of every record, the masked tokens restored from the labels."""
    table = pq.read_table(sorted(out.glob("train-*.parquet")) + sorted(out.glob("validation-*.parquet")))
    ids = np.array(table.column("input_ids").to_pylist())
    labels = np.array(table.column("labels").to_pylist())
    original = np.where(labels >= 0, labels, ids)
    segments = np.array(table.column("token_type_ids").to_pylist())
    lengths = np.array(table.column("attention_mask").to_pylist()).sum(axis=1)
    starts = np.argmax(segments == 1, axis=1)
    out = []
    for row, label in enumerate(table.column("next_sentence_label").to_pylist()):
        out.append((original[row, 1 : starts[row] - 1], original[row, starts[row] : lengths[row] - 1], label))
    return out


class _Corpus:
    """Token runs of a corpus's documents, to find where a segment comes from."""

    def __init__(self, documents: list[np.ndarray]):
        self._bytes = b"".join(d.astype("<i4").tobytes() + b"\xff\xff\xff\xff" for d in documents)

    def holds(self, *runs: np.ndarray) -> bool:
        """Whether the runs, one after another, are consecutive tokens of one document."""
        needle = np.concatenate(runs).astype("<i4").tobytes()
        at = self._bytes.find(needle)
        while at >= 0 and at % 4:
            at = self._bytes.find(needle, at + 1)
        return at >= 0


@pytest.fixture(scope="module")
def kjv_tokens(real_data, bert_vocab):
    return _kjv_documents(real_data, bert_vocab)


def _sample(items, n=1500):
    rng = np.random.default_rng(0)
    return [items[i] for i in rng.choice(len(items), min(n, len(items)), replace=False)]


@pytest.mark.slow
def test_nsp_pairs_of_a_real_corpus(tmp_path, real_data, bert_vocab, kjv_tokens):
    out = tmp_path / "nsp"
    manifest = run_job(
        out,
        f"--input={real_data / 'corpora' / 'small' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--sentence_pairs=nsp",
        "--validation_fraction=0.05",
        "--num_shards=2",
    )
    assert manifest["settings"]["sentence_pairs"] == "nsp" and manifest["settings"]["short_seq_prob"] == 0.1
    found = _pairs_of(out)
    labels = np.array([label for _, _, label in found])
    counts = manifest["counts"]["splits"]
    assert [sum(counts[s]["next_sentence_labels"][i] for s in counts) for i in (0, 1)] == np.bincount(
        labels
    ).tolist()
    assert abs(labels.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(labels))
    corpus = _Corpus(kjv_tokens)
    # IsNext: B is the actual continuation of A in its document; IsRandom: each is a run of a document.
    is_next = [(a, b) for a, b, label in found if label == pairs.IS_NEXT]
    assert all(corpus.holds(a, b) for a, b in _sample(is_next))
    is_random = [(a, b) for a, b, label in found if label == pairs.IS_RANDOM]
    assert all(corpus.holds(a) and corpus.holds(b) for a, b in _sample(is_random, 500))
    assert sum(corpus.holds(a, b) for a, b in _sample(is_random, 500)) < 5  # B is from elsewhere
    # No token lost: A of every pair and B of IsNext pairs hold every token of the corpus, once.
    own = sum(a.size + (b.size if label == pairs.IS_NEXT else 0) for a, b, label in found)
    assert own == sum(d.size for d in kjv_tokens)
    assert verify.verify(str(out)).problems == []


@pytest.mark.slow
def test_sop_pairs_are_consecutive_and_swapped_half_the_time(tmp_path, real_data, bert_vocab, kjv_tokens):
    out = tmp_path / "sop"
    run_job(
        out,
        f"--input={real_data / 'corpora' / 'small' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--sentence_pairs=sop",
        "--whole_word_masking",
        "--num_shards=2",
        "--formats=parquet",
    )
    found = _pairs_of(out)
    labels = np.array([label for _, _, label in found])
    assert abs(labels.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(labels))
    corpus = _Corpus(kjv_tokens)
    for a, b, label in _sample(found):
        assert corpus.holds(*((b, a) if label == pairs.SWAPPED else (a, b)))
        if label == pairs.SWAPPED and min(a.size, b.size) >= 8:  # short runs may recur in order elsewhere
            assert not corpus.holds(a, b)
    assert sum(a.size + b.size for a, b, _ in found) == sum(d.size for d in kjv_tokens)
    report = verify.verify(str(out))
    assert report.problems == [] and report.pair_labels == np.bincount(labels).tolist()


@pytest.mark.slow
def test_pairs_are_byte_identical_with_one_and_two_workers(tmp_path, real_data, bert_vocab):
    args = [
        f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}",
        f"--tokenizer={bert_vocab}",
        "--sentence_pairs=nsp",
        "--validation_fraction=0.1",
        "--split_input_mb=0.02",
        "--num_shards=3",
    ]
    one = run_job(tmp_path / "one", *args, "--direct_num_workers=1")
    two = run_job(tmp_path / "two", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    shuffled = run_job(tmp_path / "shuffle", *args, "--grouping=shuffle")  # documents grouped by a shuffle
    assert one["counts"]["counters"]["input_ranges_read"] > 17  # the files were read in ranges
    for other in (two, shuffled):
        assert [(s["file"], s["sha256"]) for s in other["shards"]] == [
            (s["file"], s["sha256"]) for s in one["shards"]
        ]
        assert other["counts"]["splits"] == one["counts"]["splits"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sentence_pairs=nsp", "--packing=concat"], "--packing concat packs documents into single"),
        (
            ["--sentence_pairs=sop", "--max_seq_length=5", "--max_predictions_per_seq=2"],
            "--max_seq_length of at least 6",
        ),
        (["--sentence_pairs=nsp", "--short_seq_prob=1.5"], "--short_seq_prob must be in [0, 1]"),
        (["--sentence_pairs=pairs"], "--sentence_pairs must be one of none, nsp, sop, got pairs"),
    ],
)
def test_pair_flags_that_cannot_work_are_one_line_and_exit_2(tmp_path, real_data, bert_vocab, flags, message):
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--output={tmp_path / 'out'}",
         f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={bert_vocab}", *flags],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_verify_finds_broken_pairs(tmp_path, real_data, bert_vocab):
    out = tmp_path / "nsp"
    run_job(
        out,
        f"--input={real_data / 'corpora' / 'small' / 'fortunes_en.txt'}",
        f"--tokenizer={bert_vocab}",
        "--sentence_pairs=nsp",
        "--num_shards=1",
        "--formats=parquet",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    (shard,) = manifest["shards"]
    table = pq.read_table(out / shard["file"])
    # Every label 1, and one pair's segment ids not switching after its first [SEP].
    schema = encode.parquet_schema(pairs=True)
    label = schema.get_field_index("next_sentence_label")
    broken = table.set_column(label, schema.field(label), pa.array(np.ones(table.num_rows, np.int32)))
    segments = broken.column("token_type_ids").to_pylist()
    segments[3] = [0] * len(segments[3])
    broken = broken.set_column(2, schema.field(2), pa.array(segments, schema.field(2).type))
    pq.write_table(broken, out / shard["file"])
    problems = "\n".join(verify.verify(str(out)).problems)
    assert "drew label 1: not within 4 sigma of one half" in problems
    assert "next_sentence_labels [0, " in problems
    assert "record 3: segment_ids are not 0, then 1 from B on" in problems


def test_one_document_has_no_other_to_draw_from_which_verify_and_the_summary_account_for(
    tmp_path, real_data, bert_vocab
):
    text = (real_data / "corpora" / "small" / "kjv.txt").read_text(encoding="utf-8")
    one = tmp_path / "one.txt"
    one.write_text(" ".join(text[:60_000].split()) + "\n", encoding="utf-8")  # one document, one long line
    out = tmp_path / "out"
    manifest = run_job(
        out, f"--input={one}", f"--tokenizer={bert_vocab}", "--sentence_pairs=nsp", "--dupe_factor=3"
    )
    forced = manifest["counts"]["counters"][f"{pairs.WITHOUT_OTHER_DOCUMENT}.train"]
    labels = manifest["counts"]["splits"]["train"]["next_sentence_labels"]
    assert labels[1] == 0 and forced > 0.3 * labels[0] / 3  # every IsRandom drawn was made IsNext
    assert verify.verify(str(out)).problems == []  # the drawn share is still about one half
    assert any("no other document to draw from" in w for w in summary.warnings(manifest))


def test_the_label_share_is_of_pairs_not_of_their_masked_copies():
    report = verify.Report()
    # 1,000 pairs, 540 of label 1 (2.5 sigma), in 10 copies each: fine as pairs, 8 sigma as records.
    verify._check_labels(
        "train", "tfrecord", {"next_sentence_labels": [4600, 5400]}, [4600, 5400], 10, 0, report
    )
    assert report.problems == []
    verify._check_labels(
        "train", "tfrecord", {"next_sentence_labels": [460, 540]}, [4600, 5400], 1, 0, report
    )
    assert any("not within 4 sigma" in p for p in report.problems)


def test_the_pair_options_leave_a_single_segment_builds_fingerprint_alone():
    from mlmprep.pipeline.fingerprint import fingerprint

    config = {"max_seq_length": 128, "packing": "document"}
    before = fingerprint(config, [], "sha")
    after = fingerprint(
        {**config, "sentence_pairs": "none", "short_seq_prob": 0.3, "sentence_language": "de"}, [], "sha"
    )
    assert before == after
    assert fingerprint({**config, "sentence_pairs": "nsp", "short_seq_prob": 0.1}, [], "sha") != before
