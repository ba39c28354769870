"""Input formats, compression, bad input, dedup and splits, through the whole job."""

import bz2
import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.io.filesystems import FileSystems

from mlmprep.transforms.beam import read
from mlmprep.transforms.documents import clean, document_keys
from mlmprep.transforms.sources import DocumentSource, FileRange, file_ranges
from mlmprep.transforms.text_input import iter_documents, iter_text_documents

from conftest import run_job


def _tiny_documents(real_data):
    docs = []
    for path in sorted((real_data / "corpora" / "tiny").glob("*.txt"))[:6]:
        with open(path, encoding="utf-8") as f:
            docs += list(iter_documents(f, "text"))
    return docs


def _hashes(manifest):
    return sorted(s["sha256"] for s in manifest["shards"])


@pytest.mark.slow
def test_every_format_and_compression_reads_the_same_documents(tmp_path, real_data, bert_vocab):
    docs = _tiny_documents(real_data)
    text = "\n\n".join(docs) + "\n"
    jsonl = "".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs))
    files = {
        "plain.txt": text.encode(),
        "gzipped.txt.gz": gzip.compress(text.encode()),
        "bzipped.txt.bz2": bz2.compress(text.encode()),
        "zstd.txt.zst": zstandard.ZstdCompressor().compress(text.encode()),
        "docs.jsonl": jsonl.encode(),
        "docs.jsonl.gz": gzip.compress(jsonl.encode()),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(pa.table({"body": docs, "n": list(range(len(docs)))}), tmp_path / "docs.parquet")
    results = {}
    for name in [*files, "docs.parquet"]:
        field = [] if name.endswith(".txt") or ".txt." in name else ["--text_field=body"]
        results[name] = run_job(
            tmp_path / f"out-{name}", f"--input={tmp_path / name}", f"--tokenizer={bert_vocab}", *field
        )
    reference = results["plain.txt"]
    assert reference["counts"]["documents_read"] == len(docs)
    for name, manifest in results.items():
        assert manifest["counts"]["documents_read"] == len(docs), name
        assert _hashes(manifest) == _hashes(reference), name


def test_many_globs_in_one_run(tmp_path, real_data, bert_vocab):
    tiny = real_data / "corpora" / "tiny"
    both = run_job(
        tmp_path / "both",
        f"--input={tiny}/fortunes_*.txt",
        f"--input={tiny}/foldoc.txt",
        f"--tokenizer={bert_vocab}",
    )
    assert both["counts"]["counters"]["files_read"] == 6
    assert both["counts"]["documents_read"] == 6 * 50


def test_robustness_corpus_is_fully_accounted(tmp_path, real_data, bert_vocab):
    robustness = real_data / "corpora" / "robustness"
    manifest = run_job(tmp_path / "out", f"--input={robustness}/*", f"--tokenizer={bert_vocab}")
    counts = manifest["counts"]
    dropped = counts["documents_dropped"]
    assert counts["documents_read"] == counts["documents_written"] + sum(dropped.values())
    assert dropped["binary"] == 2  # the GIF and the strfile index
    assert counts["counters"]["files_read"] == len(list(robustness.iterdir()))
    assert counts["counters"]["documents_with_invalid_utf8"] > 0  # the ISO-8859-3 file
    assert counts["counters"]["documents_with_control_characters"] > 0  # ANSI art
    assert counts["documents_written"] >= 10  # fortune files separate entries by "%", not blank lines
    assert counts["splits"]["train"]["sequences"] > 0


def test_malformed_jsonl_lines_are_counted(tmp_path, bert_vocab):
    lines = ['{"text": "a good line"}', "{not json", '{"other": "no text"}', '{"text": 42}', "[1, 2]", ""]
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    manifest = run_job(tmp_path / "out", f"--input={tmp_path / 'x.jsonl'}", f"--tokenizer={bert_vocab}")
    counts = manifest["counts"]
    assert counts["documents_read"] == 5
    assert counts["documents_written"] == 1
    assert {k: v for k, v in counts["documents_dropped"].items() if v} == {
        "malformed_json": 3,
        "no_text_field": 1,
    }


def test_cleaning_removes_escapes_and_control_characters():
    assert clean("\x1b[31mred\x1b[0m and\x07 bell\x00") == "red and bell"
    assert clean("tab\tand\nnewline") == "tab\tand\nnewline"


def test_documents_are_cut_into_bounded_pieces_at_whitespace():
    import io

    line = " ".join(f"w{i}" for i in range(5000))  # ~29k characters, one line
    data = f"short doc\n\n{line}\nsecond line\n".encode()
    docs = list(iter_text_documents(io.BytesIO(data), "text", limit=1000))
    assert docs[0] == ["short doc"]
    pieces = docs[1]
    assert all(len(p) <= 1000 for p in pieces) and len(pieces) > 25
    assert "".join(pieces) == line + "\nsecond line"
    # Cut before whitespace, never inside a word: the space goes with the word after it (byte-level "Ġ").
    assert all(p.startswith((" ", "\n")) for p in pieces[1:]), "cut at whitespace, never inside a word"


@pytest.mark.slow
def test_deduplication_exact_and_deterministic(tmp_path, bert_vocab):
    docs = ["the quick brown fox", "the  quick brown\nfox", "a different one", "the quick brown fox"]
    (tmp_path / "a.txt").write_text("\n\n".join(docs) + "\n")
    deduped = run_job(tmp_path / "d", f"--input={tmp_path / 'a.txt'}", f"--tokenizer={bert_vocab}")
    kept = run_job(tmp_path / "k", f"--input={tmp_path / 'a.txt'}", f"--tokenizer={bert_vocab}", "--nodedup")
    assert deduped["counts"]["documents_dropped"]["duplicate"] == 2
    assert sum(deduped["counts"]["documents_dropped"].values()) == 2
    assert deduped["counts"]["documents_written"] == 2
    assert kept["counts"]["documents_written"] == 4
    assert set(kept["counts"]["documents_dropped"]) >= {"empty", "duplicate", "binary"}  # listed even at 0
    assert sum(kept["counts"]["documents_dropped"].values()) == 0
    again = run_job(tmp_path / "d2", f"--input={tmp_path / 'a.txt'}", f"--tokenizer={bert_vocab}")
    assert _hashes(again) == _hashes(deduped)


def _split_of_documents(output):
    """Document first-sequence bodies by split, from the Parquet shards."""
    out = {}
    for path in output.glob("*.parquet"):
        split = path.name.split("-")[0]
        for row in pq.read_table(path).to_pylist():
            ids, labels = row["input_ids"], row["labels"]
            original = [lab if lab != -100 else i for i, lab in zip(ids, labels)]
            out[tuple(original[: sum(row["attention_mask"])])] = split
    return out


def test_split_is_stable_when_the_corpus_grows(tmp_path, real_data, bert_vocab):
    docs = _tiny_documents(real_data)
    (tmp_path / "small.txt").write_text("\n\n".join(docs[:100]) + "\n")
    (tmp_path / "more.txt").write_text("\n\n".join(docs[100:]) + "\n")
    args = [f"--tokenizer={bert_vocab}", "--validation_fraction=0.3", "--max_seq_length=512"]
    small = run_job(
        tmp_path / "s", f"--input={tmp_path / 'small.txt'}", *args, "--max_predictions_per_seq=80"
    )
    grown = run_job(
        tmp_path / "g",
        f"--input={tmp_path / 'small.txt'}",
        f"--input={tmp_path / 'more.txt'}",
        *args,
        "--max_predictions_per_seq=80",
    )
    before, after = _split_of_documents(tmp_path / "s"), _split_of_documents(tmp_path / "g")
    assert (
        0.15
        < small["counts"]["splits"]["validation"]["documents"] / small["counts"]["documents_written"]
        < 0.45
    )
    assert grown["counts"]["documents_written"] > small["counts"]["documents_written"]
    moved = [seq for seq, split in before.items() if after.get(seq) != split]
    assert len(before) > 60 and moved == []


@pytest.mark.slow
def test_fifty_megabyte_line_completes_in_bounded_memory(tmp_path, bert_vocab):
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " * 8).encode()
    with open(tmp_path / "line.txt", "wb") as f:
        for _ in range((50 << 20) // len(words) + 1):
            f.write(words)
        f.write(b"\n")
    script = (
        "import json, sys\n"
        "from mlmprep.pipeline import job\n"
        f"job.run(['--input={tmp_path / 'line.txt'}', '--output={tmp_path / 'out'}', "
        f"'--tokenizer={bert_vocab}', '--formats=parquet', '--direct_num_workers=1'])\n"
        # The peak of this process's own memory since exec (one worker: no children). Not ru_maxrss: a
        # process forked from a large pytest inherits the parent's high-water mark.
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_kb = int(done.stdout.split()[-1])
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["documents_read"] == 1 and counts["counters"]["documents_split_into_pieces"] == 1
    assert counts["counters"]["pieces_of_split_documents"] >= (50 << 20) // (1 << 16)
    assert counts["splits"]["train"]["tokens"] > 8_000_000
    print(f"peak RSS {peak_kb / 1024:.0f} MB")
    assert peak_kb < 2 * 1024 * 1024


EDGES = b"".join(
    [
        b"first doc\r\nline two\r\n\r\n",  # CRLF is LF
        b"a lone\rcarriage return ends a line\r\r\n",  # and so does a lone CR: here, a blank line
        b"y" * 65535 + b"\r\nthe CRLF before this line falls between two chunks\n\n",
        b"second \xe3\x80\x80doc\n \xe3\x80\x80\t\n\n\n",  # a line of Unicode whitespace is blank too
        b"\xc2\xa0\n",  # no-break space
        b"bad \xff\xfe utf-8, then a cut character \xe4\xb8\n\n",
        b"x" * 70_000 + b" a line longer than a chunk\n\n",
        b"the last document, no newline, a cut character \xe4\xb8",
    ]
)


def _read_in_ranges(path, fmt, range_bytes):
    """What the job reads and counts of a file cut into ranges of range_bytes: (keys, copy key, pieces)."""
    source = DocumentSource(FileSystems.open, fmt)
    metadata = FileSystems.match([str(path)])[0].metadata_list[0]
    ranges = list(file_ranges(metadata.path, metadata.size_in_bytes, fmt, range_bytes))
    docs = []
    for file_range in ranges:
        for batch in source.batches(file_range):
            keys, copies = document_keys(batch)
            docs += list(zip(keys.tolist(), copies.tolist(), batch))
    return docs, dict(source.counts), len(ranges)


@pytest.mark.parametrize("fmt", ["auto", "lines"])
def test_byte_ranges_of_a_file_read_each_document_once(tmp_path, real_data, fmt):
    (tmp_path / "edges.txt").write_bytes(EDGES)
    kjv = (real_data / "corpora" / "tiny" / "kjv.txt").read_text(encoding="utf-8")
    jsonl = "\n".join([json.dumps({"text": d}) for d in iter_documents(kjv.splitlines(), "text")] + ["{bad"])
    (tmp_path / "kjv.jsonl").write_text(jsonl + "\n")
    robustness = real_data / "corpora" / "robustness"
    files = [
        (tmp_path / "edges.txt", [5, 97, 4099]),
        (real_data / "corpora" / "tiny" / "kjv.txt", [997, 4099]),
        (tmp_path / "kjv.jsonl", [997]),
        (robustness / "fortunes-eo-iso3__proverbaro", [997]),  # ISO-8859-3: invalid UTF-8 throughout
        (robustness / "fortunes-zh__tang300", [997]),
        (robustness / "fortunes__ascii-art", [97]),
        (robustness / "linux-doc-6.1__logo.gif", [997]),
    ]
    for path, sizes in files:
        whole, whole_counts, one = _read_in_ranges(path, fmt, 1 << 30)
        assert one == 1 and whole_counts.pop("input_ranges_read") == 1
        for range_bytes in sizes:
            docs, counts, parts = _read_in_ranges(path, fmt, range_bytes)
            assert parts > 3 and counts.pop("input_ranges_read") == parts, (path.name, range_bytes)
            assert docs == whole, (path.name, range_bytes)
            assert counts == whole_counts, (path.name, range_bytes)
    edges = [("".join(p)) for _, _, p in _read_in_ranges(tmp_path / "edges.txt", "text", 5)[0]]
    assert len(edges) == 7 and edges[:2] == ["first doc\nline two", "a lone\ncarriage return ends a line"]
    assert edges[2] == "y" * 65535 + "\nthe CRLF before this line falls between two chunks"
    assert edges[-1].endswith("\ufffd")


def test_files_read_in_ranges_give_the_same_shards(tmp_path, real_data, bert_vocab):
    tiny = real_data / "corpora" / "tiny"
    inputs = [f"--input={tiny}/kjv.txt", f"--input={tiny}/linux_docs_en.txt", f"--tokenizer={bert_vocab}"]
    whole = run_job(tmp_path / "whole", *inputs)
    parts = run_job(tmp_path / "parts", *inputs, "--split_input_mb=0.01")  # ranges of ~10 KB
    assert whole["counts"]["counters"]["input_ranges_read"] == 2
    assert parts["counts"]["counters"]["input_ranges_read"] == 7 + 6
    assert parts["counts"]["documents_read"] == whole["counts"]["documents_read"]
    assert _hashes(parts) == _hashes(whole)
    assert parts["input_fingerprint"] == whole["input_fingerprint"]  # the same build


def test_compressed_files_are_read_whole(tmp_path):
    for name in ("a.txt.gz", "a.jsonl.zst"):
        (tmp_path / name).write_bytes(b"x" * 5000)
        metadata = FileSystems.match([str(tmp_path / name)])[0].metadata_list[0]
        assert len(list(read.split_file(metadata.path, metadata.size_in_bytes, "auto", 100))) == 1


def _parquet_of_row_groups(real_data, path, rows_per_group=20):
    docs = _tiny_documents(real_data)
    pq.write_table(pa.table({"n": list(range(len(docs))), "body": docs}), path, row_group_size=rows_per_group)
    groups = pq.ParquetFile(path).metadata.num_row_groups
    assert groups > 5
    return docs, groups


def test_parquet_ranges_read_each_row_group_once(tmp_path, real_data):
    path = tmp_path / "docs.parquet"
    docs, groups = _parquet_of_row_groups(real_data, path)
    size = path.stat().st_size
    whole = DocumentSource(FileSystems.open, text_field="body")
    assert ["".join(d) for b in whole.batches(FileRange(str(path))) for d in b] == docs
    for range_bytes in (size // 3, size // (4 * groups), 4096):
        ranges = list(file_ranges(str(path), size, "auto", range_bytes))
        assert len(ranges) == -(-size // range_bytes)
        source = DocumentSource(FileSystems.open, text_field="body")
        read = ["".join(d) for r in ranges for b in source.batches(r) for d in b]
        assert read == docs  # every document once, in file order
        assert source.counts == whole.counts | {"input_ranges_read": len(ranges)}
    # Most of the small ranges hold no row group's start, and read nothing.
    empty = [
        r
        for r in file_ranges(str(path), size, "auto", 512)
        if not list(DocumentSource(FileSystems.open, "parquet", "body").batches(r))
    ]
    assert len(empty) > groups


def test_a_damaged_parquet_footer_is_one_drop_over_all_its_ranges(tmp_path, real_data):
    path = tmp_path / "docs.parquet"
    _parquet_of_row_groups(real_data, path)
    path.write_bytes(path.read_bytes()[:-100])  # the footer cut off
    source = DocumentSource(FileSystems.open, text_field="body")
    for r in file_ranges(str(path), path.stat().st_size, "auto", 4096):
        assert not list(source.batches(r))
    assert source.counts["documents_dropped.unreadable_file"] == 1 == source.counts["documents_read"]


def test_an_io_error_in_a_parquet_range_fails_the_read_for_a_retry(tmp_path, real_data):
    path = tmp_path / "docs.parquet"
    _parquet_of_row_groups(real_data, path)
    ranges = list(file_ranges(str(path), path.stat().st_size, "auto", 4096))
    path.unlink()  # gone, or unreachable, after the ranges were planned: no range may read nothing and go on
    for r in ranges:
        with pytest.raises(OSError):
            list(DocumentSource(FileSystems.open, text_field="body").batches(r))


@pytest.mark.slow
def test_a_parquet_file_of_row_groups_read_by_two_workers_gives_the_same_shards(
    tmp_path, real_data, bert_vocab
):
    path = tmp_path / "docs.parquet"
    docs, groups = _parquet_of_row_groups(real_data, path)
    args = [f"--input={path}", f"--tokenizer={bert_vocab}", "--text_field=body", "--validation_fraction=0.1"]
    whole = run_job(tmp_path / "whole", *args)
    spread = run_job(
        tmp_path / "spread",
        *args,
        f"--split_input_mb={path.stat().st_size / groups / 2 / (1 << 20)}",  # about two ranges a row group
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )
    assert whole["counts"]["counters"]["input_ranges_read"] == 1
    assert spread["counts"]["counters"]["input_ranges_read"] >= 2 * groups
    ranges = {"input_ranges_read"}
    assert {k: v for k, v in spread["counts"]["counters"].items() if k not in ranges} == {
        k: v for k, v in whole["counts"]["counters"].items() if k not in ranges
    }
    assert spread["counts"]["documents_read"] == len(docs)
    assert _hashes(spread) == _hashes(whole)


@pytest.mark.parametrize("fmt", ["text", "lines"])
def test_blank_and_whitespace_lines(fmt):
    import io

    text = "a\n  \nb\r\nc\n\n\u3000\xa0\n\x1e\nd\n"  # CRLF; Unicode whitespace makes a blank line too
    docs = ["".join(p) for p in iter_text_documents(io.BytesIO(text.encode()), fmt)]
    assert docs == (["a", "b\nc", "d"] if fmt == "text" else ["a", "b", "c", "d"])


def test_long_whitespace_variant_copies_dedup_to_one_whole_copy(tmp_path, bert_vocab):
    words = [f"w{i}" for i in range(20000)]  # ~130k characters: several pieces
    a = " ".join(words)
    b = "  ".join(words[:5000]) + "\n" + " ".join(words[5000:])  # same words, other cut points
    (tmp_path / "c.txt").write_text(f"{a}\n\n{b}\n")
    args = [f"--tokenizer={bert_vocab}", "--max_seq_length=512", "--max_predictions_per_seq=80"]
    manifest = run_job(tmp_path / "out", f"--input={tmp_path / 'c.txt'}", *args)
    assert manifest["counts"]["documents_dropped"]["duplicate"] == 1
    single = tmp_path / "one.txt"
    single.write_text(a + "\n")
    alone = run_job(tmp_path / "alone", f"--input={single}", *args)
    # The kept copy is whole: exactly the tokens of one copy, and no extra short
    # sequences where pieces were cut (pieces are joined before packing).
    assert manifest["counts"]["splits"]["train"]["tokens"] == alone["counts"]["splits"]["train"]["tokens"]
    assert (
        manifest["counts"]["splits"]["train"]["sequences"] == alone["counts"]["splits"]["train"]["sequences"]
    )
    body = 510
    tokens = alone["counts"]["splits"]["train"]["tokens"]
    sequences = alone["counts"]["splits"]["train"]["sequences"]
    assert sequences == -(-(tokens - 2 * sequences) // body)


def test_unreadable_files_are_counted_not_fatal(tmp_path, bert_vocab):
    (tmp_path / "good.txt").write_text("a fine document\n")
    (tmp_path / "bad.txt.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    manifest = run_job(tmp_path / "out", f"--input={tmp_path}/*", f"--tokenizer={bert_vocab}")
    counts = manifest["counts"]
    assert counts["documents_dropped"]["unreadable_file"] == 2
    assert counts["documents_written"] == 1
    assert counts["documents_read"] == counts["documents_written"] + sum(counts["documents_dropped"].values())


def test_a_file_two_patterns_match_is_read_once(tmp_path, real_data, bert_vocab):
    kjv = real_data / "corpora" / "tiny" / "kjv.txt"
    (tmp_path / "kjv.txt").write_bytes(kjv.read_bytes())
    args = [f"--tokenizer={bert_vocab}"]
    once = run_job(tmp_path / "once", f"--input={tmp_path}/kjv.txt", *args)
    twice = run_job(tmp_path / "twice", f"--input={tmp_path}/*.txt", f"--input={tmp_path}/kjv.txt", *args)
    assert twice["counts"] == once["counts"]
    assert _hashes(twice) == _hashes(once)
