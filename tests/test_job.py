"""The whole job through ``mlmprep run``, on real text and the real BERT vocabulary."""

import collections
import hashlib
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.transforms.text_input import iter_documents
from mlmprep.transforms.tokenize import encode_batch, load_tokenizer, tokenizer_json

from conftest import bert_feature_spec, run_job, shard_files

tf = pytest.importorskip("tensorflow")

MAX_SEQ, MAX_PRED = 128, 20


def _spec():
    return bert_feature_spec(MAX_SEQ, MAX_PRED)


def _read_shard(path):
    rows = []
    for records in tf.data.TFRecordDataset(str(path)).batch(4096):
        parsed = {k: v.numpy() for k, v in tf.io.parse_example(records, _spec()).items()}
        rows += [{k: v[i] for k, v in parsed.items()} for i in range(len(records))]
    return rows


def _read_tfrecords(output, split):
    rows = []
    for name in shard_files(output, "tfrecord"):
        if name.startswith(split + "-"):
            rows += _read_shard(pathlib.Path(output) / name)
    return rows


def _unmasked_bodies(rows):
    """Each sequence with masked_lm_ids put back, without [CLS]/[SEP]/padding."""
    out = collections.Counter()
    for row in rows:
        ids = row["input_ids"].copy()
        k = int(row["masked_lm_weights"].sum())
        ids[row["masked_lm_positions"][:k]] = row["masked_lm_ids"][:k]
        n = int(row["input_mask"].sum())
        out[tuple(ids[1 : n - 1].tolist())] += 1
    return out


def _document_chunks(path, vocab_path, body=MAX_SEQ - 2):
    tokenizer = load_tokenizer(tokenizer_json(pathlib.Path(vocab_path).read_bytes()))
    with open(path, encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))
    return [
        [tuple(ids[i : i + body].tolist()) for i in range(0, ids.size, body)]
        for ids in encode_batch(tokenizer, docs)
    ]


@pytest.fixture(scope="module")
def kjv(tmp_path_factory, real_data, bert_vocab):
    corpus = real_data / "corpora" / "small" / "kjv.txt"
    out = tmp_path_factory.mktemp("kjv") / "out"
    manifest = run_job(
        out, f"--input={corpus}", f"--tokenizer={bert_vocab}", validation_fraction=0.1, num_shards=4
    )
    return corpus, out, manifest


@pytest.mark.slow
def test_tfrecords_parse_with_bert_spec_and_unmask_to_the_documents(kjv, bert_vocab):
    corpus, out, manifest = kjv
    chunks = _document_chunks(corpus, bert_vocab)
    by_split = {s: _unmasked_bodies(_read_tfrecords(out, s)) for s in ("train", "validation")}
    assert sum(by_split["validation"].values()) > 0
    expected = collections.Counter(c for doc in chunks for c in doc)
    assert by_split["train"] + by_split["validation"] == expected
    # A document and all its sequences are in exactly one split.
    for doc in chunks:
        homes = {s for s, seen in by_split.items() if doc[0] in seen}
        assert len(homes) == 1
        home = homes.pop()
        assert all(c in by_split[home] for c in doc)
    assert manifest["counts"]["documents_read"] == len(chunks) == 1189


@pytest.mark.slow
def test_every_sequence_is_cls_body_sep_padding_with_valid_masks(kjv):
    _, out, manifest = kjv
    special = set(manifest["tokenizer"]["special_ids"].values())
    for row in _read_tfrecords(out, "train"):
        n = int(row["input_mask"].sum())
        assert row["input_ids"][0] == 101 and row["input_ids"][n - 1] == 102
        assert np.all(row["input_ids"][n:] == 0) and np.all(row["input_mask"][:n] == 1)
        assert np.sum(row["input_ids"] == 101) == 1
        k = int(row["masked_lm_weights"].sum())
        assert k == min(MAX_PRED, max(1, round(n * 0.15)))
        assert not special & set(row["masked_lm_ids"][:k].tolist())
        assert np.all(row["masked_lm_positions"][:k] < n - 1) and np.all(row["masked_lm_positions"][:k] > 0)


@pytest.mark.slow
def test_parquet_rows_equal_tfrecord_rows(kjv):
    _, out, _ = kjv
    for split in ("train", "validation"):
        tf_rows = _read_tfrecords(out, split)
        pq_rows = []
        for name in shard_files(out, "parquet"):
            if name.startswith(split + "-"):
                pq_rows += pq.read_table(out / name).to_pylist()
        assert len(pq_rows) == len(tf_rows) > 0
        for t, p in zip(tf_rows, pq_rows):  # same shard order, same record order
            assert p["input_ids"] == t["input_ids"].tolist()
            assert p["attention_mask"] == t["input_mask"].tolist()
            assert p["token_type_ids"] == t["segment_ids"].tolist()
            assert p["masked_lm_positions"] == t["masked_lm_positions"].tolist()
            assert p["masked_lm_ids"] == t["masked_lm_ids"].tolist()
            assert p["masked_lm_weights"] == t["masked_lm_weights"].tolist()
            labels = np.array(p["labels"])
            k = int(t["masked_lm_weights"].sum())
            assert np.all(labels[t["masked_lm_positions"][:k]] == t["masked_lm_ids"][:k])
            assert np.sum(labels != -100) == k


@pytest.mark.slow
def test_manifest_counts_equal_what_the_shards_hold(kjv):
    _, out, manifest = kjv
    assert manifest["format_version"] == manifest_lib.FORMAT_VERSION == 2
    assert manifest["settings"]["max_seq_length"] == MAX_SEQ and manifest["settings"]["random_seed"] == 12345
    assert manifest["tokenizer"]["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert manifest["tokenizer"]["vocab_size"] == 30522
    tok = (out / "tokenizer.json").read_bytes()
    assert hashlib.sha256(tok).hexdigest() == manifest["tokenizer"]["sha256"]
    assert set(manifest["versions"]) >= {"mlmprep", "apache-beam", "tokenizers"}
    listed = {s["file"] for s in manifest["shards"]}
    assert listed == set(shard_files(out, "tfrecord") + shard_files(out, "parquet"))
    assert len(listed) == 2 * (4 + 1)
    counts = manifest["counts"]
    splits = counts["splits"]
    assert counts["documents_written"] == splits["train"]["documents"] + splits["validation"]["documents"]
    assert counts["documents_read"] == counts["documents_written"] + sum(counts["documents_dropped"].values())
    for shard in manifest["shards"]:
        data = (out / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        if shard["format"] == "tfrecord":
            rows = _read_shard(out / shard["file"])
            masks = [int(r["masked_lm_weights"].sum()) for r in rows]
            tokens = [int(r["input_mask"].sum()) for r in rows]
        else:
            table = pq.read_table(out / shard["file"])
            masks = [int(sum(w)) for w in table.column("masked_lm_weights").to_pylist()]
            tokens = [sum(m) for m in table.column("attention_mask").to_pylist()]
        assert shard["records"] == len(rows if shard["format"] == "tfrecord" else masks)
        assert shard["predictions"] == sum(masks) and shard["tokens"] == sum(tokens)
    for split, c in splits.items():
        files = [s for s in manifest["shards"] if s["split"] == split and s["format"] == "tfrecord"]
        assert c["sequences"] == sum(s["records"] for s in files)
        assert c["tokens"] == sum(s["tokens"] for s in files)


@pytest.mark.slow
def test_tokenizer_json_gives_the_same_shards_as_vocab_txt(kjv, tmp_path, bert_tokenizer_json):
    corpus, out, manifest = kjv
    again = run_job(
        tmp_path / "out",
        f"--input={corpus}",
        f"--tokenizer={bert_tokenizer_json}",
        validation_fraction=0.1,
        num_shards=4,
    )
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    # The output holds the exact tokenizer file it was given.
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == pathlib.Path(
        bert_tokenizer_json
    ).read_bytes()


@pytest.fixture(scope="module")
def tiny(real_data):
    return str(real_data / "corpora" / "tiny" / "*.txt")


def _shard_hashes(manifest):
    return {s["file"]: s["sha256"] for s in manifest["shards"]}


@pytest.mark.slow
def test_byte_identical_across_runs_and_worker_counts(tmp_path, tiny, bert_vocab):
    args = (f"--input={tiny}", f"--tokenizer={bert_vocab}", "--validation_fraction=0.2", "--dupe_factor=2")
    one = run_job(tmp_path / "a", *args, "--direct_num_workers=1")
    again = run_job(tmp_path / "b", *args, "--direct_num_workers=1")
    two = run_job(tmp_path / "c", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert _shard_hashes(one) == _shard_hashes(again) == _shard_hashes(two)
    for name in _shard_hashes(one):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    other_seed = run_job(tmp_path / "d", *args, "--random_seed=7")
    assert set(_shard_hashes(other_seed).values()).isdisjoint(_shard_hashes(one).values())


@pytest.mark.slow
def test_dupe_factor_writes_differently_masked_copies(tmp_path, tiny, bert_vocab):
    args = (f"--input={tiny}", f"--tokenizer={bert_vocab}")
    single = run_job(tmp_path / "one", *args, num_shards=2)
    double = run_job(tmp_path / "two", *args, num_shards=2, dupe_factor=2)
    s1, s2 = single["counts"]["splits"]["train"], double["counts"]["splits"]["train"]
    assert s2["sequences"] == 2 * s1["sequences"] and s2["tokens"] == 2 * s1["tokens"]
    rows = []
    for name in shard_files(tmp_path / "two", "parquet"):
        rows += pq.read_table(tmp_path / "two" / name).to_pylist()
    by_original = collections.defaultdict(list)
    for row in rows:
        ids = np.array(row["input_ids"])
        labels = np.array(row["labels"])
        ids[labels != -100] = labels[labels != -100]
        by_original[ids.tobytes()].append(tuple(row["masked_lm_positions"]))
    pairs = [v for v in by_original.values() if len(v) == 2]
    assert len(pairs) > 0.95 * len(by_original)
    assert np.mean([a != b for a, b in pairs]) > 0.9


def test_concat_packing_keeps_every_token_and_fills_sequences(tmp_path, tiny, bert_vocab, real_data):
    run_job(
        tmp_path / "out",
        f"--input={tiny}",
        f"--tokenizer={bert_vocab}",
        "--packing=concat",
        "--nodedup",
        num_shards=2,
    )
    rows = _read_tfrecords(tmp_path / "out", "train")
    lengths = np.array([int(r["input_mask"].sum()) for r in rows])
    # Only the last sequence of a concat group is short; one other may end a
    # token early where a joining [SEP] would have been its last token.
    assert np.sum(lengths < MAX_SEQ - 1) <= 1 and np.mean(lengths == MAX_SEQ) > 0.9
    bodies = _unmasked_bodies(rows)
    got = collections.Counter()
    for body, n in bodies.items():
        for token in body:
            if token != 102:
                got[token] += n
    expected = collections.Counter()
    for path in sorted((real_data / "corpora" / "tiny").glob("*.txt")):
        for doc in _document_chunks(path, bert_vocab):
            for chunk in doc:
                expected.update(t for t in chunk if t != 102)
    assert got == expected


@pytest.mark.slow
def test_workers_never_import_tensorflow(tmp_path, tiny, bert_vocab):
    script = (
        "import sys\n"
        "from mlmprep.pipeline import job\n"
        f"job.run(['--input={tiny}', '--output={tmp_path / 'out'}', '--tokenizer={bert_vocab}'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["documents_read"] > 0


def test_gzip_input_gives_the_same_shards(tmp_path, real_data, bert_vocab):
    import gzip

    source = real_data / "corpora" / "tiny" / "devils_dictionary.txt"
    packed = tmp_path / "devils_dictionary.txt.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    plain = run_job(tmp_path / "plain", f"--input={source}", f"--tokenizer={bert_vocab}")
    zipped = run_job(tmp_path / "gz", f"--input={packed}", f"--tokenizer={bert_vocab}")
    assert plain["counts"]["documents_read"] == 50
    assert _shard_hashes(plain) == _shard_hashes(zipped)


def test_lines_format_and_one_format_only(tmp_path, bert_vocab):
    corpus = tmp_path / "lines.txt"
    corpus.write_text("first document here\nsecond document\n\n   \nthird one\n")
    manifest = run_job(
        tmp_path / "out",
        f"--input={corpus}",
        f"--tokenizer={bert_vocab}",
        input_format="lines",
        formats="parquet",
        num_shards=1,
    )
    assert manifest["counts"]["documents_read"] == 3
    assert shard_files(tmp_path / "out", "tfrecord") == []
    rows = pq.read_table(tmp_path / "out" / "train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == 3


def test_beam_counters_match_the_manifest(tmp_path, tiny, bert_vocab):
    from apache_beam.metrics.metric import MetricsFilter

    from mlmprep.pipeline import job

    out = tmp_path / "out"
    result = job.run(
        [f"--input={tiny}", f"--output={out}", f"--tokenizer={bert_vocab}", "--validation_fraction=0.3"]
    )
    counters = {
        m.key.metric.name: m.committed
        for m in result.metrics().query(MetricsFilter().with_namespace("mlmprep"))["counters"]
    }
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counters["documents_read"] == counts["documents_read"] > 0
    for split in ("train", "validation"):
        assert counters[f"documents.{split}"] == counts["splits"][split]["documents"] > 0
    assert counters == counts["counters"]


@pytest.mark.parametrize("num_shards", [3, 7])
def test_shards_of_a_split_are_balanced_to_one_record(tmp_path, tiny, bert_vocab, num_shards):
    manifest = run_job(
        tmp_path / "out",
        f"--input={tiny}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.3",
        "--formats=tfrecord",
        num_shards=num_shards,
    )
    for split, expected in (("train", num_shards), ("validation", math.ceil(num_shards * 0.3))):
        counts = [s["records"] for s in manifest["shards"] if s["split"] == split]
        assert len(counts) == expected
        assert max(counts) - min(counts) <= 1, counts
        assert sum(counts) == manifest["counts"]["splits"][split]["sequences"] > 0


@pytest.mark.parametrize("text", ["Three short documents.\n\nThe second.\n\nAnd a third.\n", "\n \n"])
def test_every_shard_is_written_when_records_are_fewer_or_none(tmp_path, bert_vocab, text):
    (tmp_path / "in.txt").write_text(text)
    out = tmp_path / "out"
    manifest = run_job(out, f"--input={tmp_path / 'in.txt'}", f"--tokenizer={bert_vocab}", num_shards=8)
    records = sum(s["records"] for s in manifest["shards"] if s["format"] == "tfrecord")
    assert records == manifest["counts"]["splits"]["train"]["sequences"] == (3 if "third" in text else 0)
    for fmt in ("tfrecord", "parquet"):
        assert shard_files(out, fmt) == [f"train-{i:05d}-of-00008.{fmt}" for i in range(8)]
    for shard in manifest["shards"]:
        if shard["format"] == "parquet":
            table = pq.read_table(out / shard["file"])
            assert table.num_rows == shard["records"] and "labels" in table.column_names
        else:
            assert len(_read_shard(out / shard["file"])) == shard["records"]
    assert max(s["records"] for s in manifest["shards"]) == min(records, 1)  # balanced: one record at most


@pytest.mark.slow
def test_shard_count_from_target_size(tmp_path, tiny, bert_vocab):
    small = run_job(tmp_path / "a", f"--input={tiny}", f"--tokenizer={bert_vocab}", target_shard_mb=0.1)
    files = [s for s in small["shards"] if s["format"] == "tfrecord"]
    assert len(files) > 3
    sizes = [(tmp_path / "a" / s["file"]).stat().st_size for s in files]
    assert max(sizes) < 0.1 * (1 << 20) * 1.5 and min(sizes) > 0.1 * (1 << 20) * 0.5
    one = run_job(tmp_path / "b", f"--input={tiny}", f"--tokenizer={bert_vocab}")  # default 128 MB
    assert len([s for s in one["shards"] if s["format"] == "tfrecord"]) == 1
