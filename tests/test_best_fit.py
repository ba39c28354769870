"""Best-fit packing: several documents to a sequence, each framed on its own, with position ids restarting
at each; position ids in every output; long context and its default prediction cap."""

import collections
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import verify
from mlmprep.transforms import decode, encode, records, tokenize
from mlmprep.transforms.frames import bert_frame
from mlmprep.transforms.pack import BestFitPacker
from mlmprep.transforms.text_input import iter_documents

from conftest import run_job, shard_files

CLS, SEP, PAD = 101, 102, 0
FRAME = bert_frame(CLS, SEP)


def _pieces(row: np.ndarray, n: int) -> list[list[int]]:
    """A packed row's pieces, frames stripped."""
    starts = [i for i in range(n) if row[i] == CLS] + [n]
    out = []
    for start, end in zip(starts[:-1], starts[1:]):
        assert row[start] == CLS and row[end - 1] == SEP and end - start >= 3
        out.append(row[start + 1 : end - 1].tolist())
    return out


@pytest.mark.parametrize("window", [1, 4, 64])
def test_best_fit_frames_every_piece_and_keeps_every_token(window):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=300).tolist() + [70, 150]  # two longer than a sequence's body (30)
    docs, next_id = [], 1000
    for n in lengths:
        docs.append(np.arange(next_id, next_id + n, dtype=np.int32))
        next_id += n
    packer = BestFitPacker(max_seq_length=32, frame=FRAME, pad_id=PAD, window=window)
    parts = [packer.add(docs[i : i + 50]) for i in range(0, len(docs), 50)] + [packer.finish()]
    input_ids = np.concatenate([p[0] for p in parts])
    seq_lengths = np.concatenate([p[1] for p in parts])
    assert input_ids.shape[1] == 32 and np.all(seq_lengths <= 32)
    assert all(np.all(row[n:] == PAD) for row, n in zip(input_ids, seq_lengths))
    pieces = [p for row, n in zip(input_ids, seq_lengths) for p in _pieces(row, n)]
    # Every document, a long one in pieces of the body's 30 tokens, each piece exactly once.
    expected = [d[i : i + 30].tolist() for d in docs for i in range(0, d.size, 30)]
    assert sorted(pieces) == sorted(expected)
    utilization = seq_lengths.sum() / (len(seq_lengths) * 32)
    assert utilization > (0.9 if window > 1 else 0.7)
    # The same input gives the same sequences.
    again = BestFitPacker(max_seq_length=32, frame=FRAME, pad_id=PAD, window=window)
    rows = np.concatenate([again.add(docs)[0], again.finish()[0]])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, input_ids.tolist()))


def test_position_ids_restart_at_each_piece_and_are_zero_on_padding():
    ids = np.array([[CLS, 5, 6, SEP, CLS, 7, SEP, PAD], [CLS, 5, 6, 7, 8, SEP, PAD, PAD]])
    lengths = np.array([7, 6])
    expected = [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5, 0, 0]]
    assert records.position_ids(ids, lengths, CLS).tolist() == expected
    assert records.position_ids(ids, lengths, None)[1].tolist() == expected[1]  # one piece


@pytest.fixture(scope="module")
def packed(tmp_path_factory, real_data, bert_vocab):
    """Short documents packed three ways at 128 tokens."""
    root = tmp_path_factory.mktemp("packing")
    corpus = real_data / "corpora" / "small" / "fortunes_en.txt"
    args = (f"--input={corpus}", f"--tokenizer={bert_vocab}", "--validation_fraction=0.1", "--num_shards=2")
    args += ("--nodedup",)  # every document, to compare with the corpus
    return corpus, {
        packing: (root / packing, run_job(root / packing, *args, f"--packing={packing}"))
        for packing in ("document", "concat", "best_fit")
    }


def _batches(output, manifest, fmt):
    seq, preds = manifest["settings"]["max_seq_length"], manifest["settings"]["max_predictions_per_seq"]
    out = []
    for name in shard_files(output, fmt):
        with open(output / name, "rb") as f:
            read = decode.parquet_slices if fmt == "parquet" else decode.tfrecord_slices
            out += list(read(f, seq, preds, 10**6))
    return out


@pytest.mark.slow
def test_best_fit_fills_sequences_and_verify_checks_each_piece(packed):
    _, runs = packed
    utilization = {}
    for packing, (output, manifest) in runs.items():
        assert verify.verify(str(output)).problems == []
        split = manifest["counts"]["splits"]["train"]
        utilization[packing] = split["tokens"] / (split["sequences"] * 128)
        assert split["pieces"] >= split["sequences"]
    assert utilization["best_fit"] > 0.99 and utilization["document"] < 0.6
    best_fit = runs["best_fit"][1]["counts"]["splits"]["train"]
    assert best_fit["pieces"] / best_fit["sequences"] > 2
    # One piece per sequence with the other packings: position ids 0 .. n-1.
    for packing in ("document", "concat"):
        output, manifest = runs[packing]
        assert (
            manifest["counts"]["splits"]["train"]["pieces"]
            == manifest["counts"]["splits"]["train"]["sequences"]
        )
        for batch, extra in _batches(output, manifest, "parquet"):
            cols = np.arange(128)[None, :]
            np.testing.assert_array_equal(
                extra["position_ids"], np.where(cols < batch.lengths[:, None], cols, 0)
            )


@pytest.mark.slow
def test_best_fit_position_ids_in_both_formats_mark_every_document(packed, bert_vocab):
    corpus, runs = packed
    output, manifest = runs["best_fit"]
    tokenizer, vocab = manifest_lib.vocabulary(manifest, (output / manifest["tokenizer"]["file"]).read_text())
    seen = collections.Counter()
    for (a, tf_columns), (b, pq_columns) in zip(
        _batches(output, manifest, "tfrecord"), _batches(output, manifest, "parquet"), strict=True
    ):
        np.testing.assert_array_equal(tf_columns["position_ids"], pq_columns["position_ids"])
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        original = a.input_ids.copy()
        for row, k in enumerate(a.num_predictions):
            original[row, a.masked_lm_positions[row, :k]] = a.masked_lm_ids[row, :k]
        for ids, positions, n in zip(original, pq_columns["position_ids"], a.lengths):
            starts = np.nonzero(positions[:n] == 0)[0].tolist() + [n]
            assert starts[0] == 0 and np.all(positions[n:] == 0)
            for start, end in zip(starts[:-1], starts[1:]):
                assert ids[start] == vocab.cls_id and ids[end - 1] == vocab.sep_id
                np.testing.assert_array_equal(positions[start:end], np.arange(end - start))
                seen[tuple(ids[start + 1 : end - 1].tolist())] += 1
    with open(corpus, encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))
    body = 128 - 2
    pieces = (
        ids[i : i + body].tolist()
        for ids in tokenize.encode_batch(tokenizer, docs)
        for i in range(0, ids.size, body)
    )
    assert seen == collections.Counter(map(tuple, pieces))  # every document in pieces, none lost or invented


@pytest.mark.slow
def test_best_fit_is_byte_identical_with_one_and_two_workers(tmp_path, real_data, bert_vocab):
    args = (
        f"--input={real_data / 'corpora' / 'tiny' / '*.txt'}", f"--tokenizer={bert_vocab}",
        "--packing=best_fit", "--validation_fraction=0.2", "--max_seq_length=512",
    )  # fmt: skip
    one = run_job(tmp_path / "a", *args, "--direct_num_workers=1")
    two = run_job(tmp_path / "b", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["counts"]["splits"]["train"]["pieces"] > 2 * one["counts"]["splits"]["train"]["sequences"]


def _copy_of_best_fit(packed, tmp_path):
    """A copy of the best-fit output to break: its folder, the name of a Parquet shard with records, and
    that shard's table."""
    _, runs = packed
    output, manifest = runs["best_fit"]
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in [s["file"] for s in manifest["shards"]] + ["manifest.json", manifest["tokenizer"]["file"]]:
        (copy / name).write_bytes((output / name).read_bytes())
    name = next(s["file"] for s in manifest["shards"] if s["format"] == "parquet" and s["records"])
    return copy, name, pq.read_table(copy / name)


@pytest.mark.slow
def test_verify_finds_broken_position_ids_and_unframed_pieces(packed, tmp_path):
    copy, name, table = _copy_of_best_fit(packed, tmp_path)
    positions = table.column("position_ids").to_pylist()
    positions[0] = list(range(len(positions[0])))  # one piece numbered as if it were the whole row
    ids = table.column("input_ids").to_pylist()
    row = next(r for r in range(1, len(ids)) if ids[r].count(CLS) > 1)
    second = ids[row].index(CLS, 1)  # the second piece's [CLS]
    ids[row][second - 1] = 1996  # the first piece loses its [SEP]
    for column, values in (("position_ids", positions), ("input_ids", ids)):
        index = encode.PARQUET_SCHEMA.get_field_index(column)
        field = encode.PARQUET_SCHEMA.field(index)
        table = table.set_column(index, field, pa.array(values, field.type))
    pq.write_table(table, copy / name)
    problems = "\n".join(verify.verify(str(copy)).problems)
    assert "record 0: position_ids do not restart" in problems
    assert f"record {row}: a piece is not framed on its own as [CLS] A [SEP]" in problems


@pytest.mark.slow
def test_verify_finds_piece_lengths_that_are_not_the_rows_pieces(packed, tmp_path):
    copy, name, table = _copy_of_best_fit(packed, tmp_path)
    lengths = table.column("piece_lengths").to_pylist()
    row = next(r for r, pieces in enumerate(lengths) if len(pieces) > 1 and pieces[0] != pieces[-1])
    lengths[row] = lengths[row][::-1]  # the same sum, in the wrong order
    other = next(r for r in range(len(lengths)) if r != row)
    lengths[other] = [*lengths[other][:-1], lengths[other][-1] + 1]  # one token more than the row holds
    index = encode.PARQUET_SCHEMA.get_field_index("piece_lengths")
    field = encode.PARQUET_SCHEMA.field(index)
    pq.write_table(table.set_column(index, field, pa.array(lengths, field.type)), copy / name)
    problems = "\n".join(verify.verify(str(copy)).problems)
    assert f"record {row}: piece_lengths are not the pieces the tokens tell" in problems
    assert f"record {other}: piece_lengths do not add up to the row's tokens" in problems


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_packing_flags_that_cannot_work_are_one_line_and_exit_2(tmp_path, real_data, bert_vocab):
    common = [f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={bert_vocab}"]
    for flags, message in (
        (["--packing=best_fit", "--sentence_pairs=nsp"], "--packing best_fit packs documents into single"),
        (["--max_seq_length=2"], "--max_seq_length must be in [3, 8192]"),
        (["--max_seq_length=16384"], "--max_seq_length must be in [3, 8192]"),
    ):
        done = _run(*common, f"--output={tmp_path / 'out'}", *flags)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_a_frame_longer_than_the_sequence_allows_is_refused(tmp_path, real_data):
    """A frame of two specials at each end leaves no room at length 4."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<d>", "a", "b"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<d>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] <d> $A [SEP] <d>", pair="[CLS] <d> $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3), ("<d>", 5)],
    )  # fmt: skip
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_str())
    done = _run(
        f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}", f"--tokenizer={path}",
        f"--output={tmp_path / 'out'}", "--max_seq_length=4", "--max_predictions_per_seq=1",
    )  # fmt: skip
    assert done.returncode == 2 and "--max_seq_length must be at least 5" in done.stderr, done.stderr


@pytest.mark.slow
def test_the_prediction_cap_follows_the_length_and_a_cap_that_cuts_the_rate_is_a_warning(
    tmp_path, real_data, bert_vocab
):
    corpus = real_data / "corpora" / "tiny" / "kjv.txt"
    common = [f"--input={corpus}", f"--tokenizer={bert_vocab}", "--max_seq_length=512"]
    manifest = run_job(tmp_path / "default", *common)
    assert manifest["settings"]["max_predictions_per_seq"] == 77  # ceil(512 * 0.15)
    split = manifest["counts"]["splits"]["train"]
    assert split["predictions"] / split["tokens"] == pytest.approx(0.15, abs=0.005)
    done = _run(*common, f"--output={tmp_path / 'capped'}", "--max_predictions_per_seq=20")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "--max_predictions_per_seq 20" in line]
    assert len(warned) == 1 and "masks at most 3.9% of a full sequence, not the 15%" in warned[0]
    assert (
        json.loads((tmp_path / "capped" / "manifest.json").read_text())["settings"]["max_predictions_per_seq"]
        == 20
    )
    done = _run(*common, f"--output={tmp_path / 'enough'}", "--max_predictions_per_seq=70")
    assert "--max_predictions_per_seq" not in done.stderr  # 13.7%: within a tenth of 15%
