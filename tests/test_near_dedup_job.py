"""--near_dedup and --decontaminate in the job: what is removed, counted, kept, shown and checked."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from mlmprep.pipeline import report, verify
from mlmprep.transforms.documents import document_keys

from conftest import CORPORA, VOCAB_DIR, run_job

SEQ = 128
MARKERS = ("zebra", "giraffe", "penguin")  # one word of each copy of a family, each in BERT's vocabulary
FAMILIES, SINGLES = 24, 40


def _documents(count: int) -> list[str]:
    """Real documents of 150 to 400 words, one paragraph each (long enough that one word in five
    shingles leaves a Jaccard of about 0.93)."""
    text = (CORPORA / "bench" / "linux_docs_en.txt").read_text(encoding="utf-8")
    found = []
    for doc in re.split(r"\n\s*\n", text):
        words = doc.split()
        if 150 <= len(words) <= 400 and len(set(words)) > 60:
            found.append(" ".join(words))
        if len(found) == count:
            return found
    raise AssertionError("too few documents")


def _planted(tmp_path) -> tuple[list[list[str]], list[str], list[pathlib.Path]]:
    """(families: each a real document in three copies, word 10 of each a marker of its own; singles; the
    input files, the copies spread over two files)."""
    docs = _documents(FAMILIES + SINGLES)
    families = []
    for doc in docs[:FAMILIES]:
        words = doc.split()
        families.append([" ".join(words[:10] + [m] + words[11:]) for m in MARKERS])
    singles = docs[FAMILIES:]
    first = [f[0] for f in families] + singles[: SINGLES // 2]
    second = [c for f in families for c in f[1:]] + singles[SINGLES // 2 :]
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for path, part in zip(files, (first, second)):
        path.write_text("\n\n".join(part) + "\n", encoding="utf-8")
    return families, singles, files


def _key(text: str) -> int:
    return int(document_keys([[text]])[0][0])


def _first_sequences(output) -> list[tuple]:
    """Every output sequence's tokens between its frame, from the Parquet shards of both splits."""
    found = []
    for path in sorted(pathlib.Path(output).glob("*.parquet")):
        table = pq.read_table(path, columns=["input_ids", "attention_mask"]).to_pydict()
        for ids, mask in zip(table["input_ids"], table["attention_mask"]):
            found.append(tuple(ids[1 : sum(mask) - 1]))
    return found


def _head(text: str, tokenizer) -> tuple:
    return tuple(tokenizer.encode(text, add_special_tokens=False).ids[: SEQ - 2])


@pytest.fixture(scope="module")
def planted(tmp_path_factory, real_data):
    root = tmp_path_factory.mktemp("near")
    families, singles, files = _planted(root)
    args = [*(f"--input={f}" for f in files), f"--tokenizer={VOCAB_DIR / 'vocab.txt'}", "--near_dedup",
            "--masking=none", f"--max_seq_length={SEQ}", "--validation_fraction=0.3",
            "--num_shards=2"]  # fmt: skip
    manifest = run_job(root / "out", *args)
    return families, singles, args, root, manifest


def test_each_family_of_near_copies_keeps_its_copy_of_smallest_key_alone_across_the_splits(planted):
    families, singles, _, root, manifest = planted
    tokenizer = Tokenizer.from_file(str(VOCAB_DIR / "tokenizer.json"))
    written = _first_sequences(root / "out")
    for family in families:
        kept = min(family, key=_key)
        for copy in family:
            assert written.count(_head(copy, tokenizer)) == (copy == kept), copy[:60]
    for single in singles:
        assert written.count(_head(single, tokenizer)) == 1
    counts = manifest["counts"]
    assert counts["documents_dropped"]["near_duplicate"] == 2 * FAMILIES
    assert counts["documents_read"] == 3 * FAMILIES + SINGLES
    near = manifest["near_dedup"]
    assert near["clusters"] == FAMILIES and near["documents_in_clusters"] == 3 * FAMILIES
    assert near["removed"] == near["keys_removed"] == 2 * FAMILIES
    assert near["converged"] and near["rounds"] >= 1
    assert [c["size"] for c in near["largest_clusters"]] == [3] * min(FAMILIES, 10)
    assert near["by_source"] == {"input": 2 * FAMILIES}


def test_the_manifest_shows_removed_pairs_with_their_jaccard_and_report_and_verify_read_them(planted):
    families, _, _, root, manifest = planted
    copies = {c[:200] for f in families for c in f}
    examples = manifest["near_dedup"]["examples"]
    assert examples
    for example in examples:
        assert example["removed"][:200] in copies and example["near_copy_of"][:200] in copies
        assert 0.75 <= example["jaccard"] <= 1
    html = report.build(str(root / "out"))
    assert "Near-duplicates" in html and f"{examples[0]['jaccard']:.2f}" in html
    assert verify.verify(str(root / "out")).problems == []


def test_verify_finds_near_duplicate_counts_that_do_not_add_up(planted, tmp_path):
    *_, root, manifest = planted
    broken = json.loads(json.dumps(manifest))
    broken["near_dedup"]["keys_removed"] += 1
    out = tmp_path / "out"
    out.mkdir()
    for path in (root / "out").iterdir():
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    (out / "manifest.json").write_text(json.dumps(broken))
    problems = verify.verify(str(out)).problems
    assert any("near_dedup" in p for p in problems), problems


@pytest.mark.slow
def test_near_duplicate_removal_is_the_same_with_one_worker_process_or_two(planted, tmp_path):
    *_, args, _, one = planted
    two = run_job(tmp_path / "two", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert {s["file"]: s["sha256"] for s in one["shards"]} == {s["file"]: s["sha256"] for s in two["shards"]}
    assert one["near_dedup"] == two["near_dedup"]


def test_decontamination_drops_documents_sharing_13_words_with_an_evaluation_item(tmp_path, real_data):
    docs = _documents(30)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    words = docs[7].split()
    thirteen = " ".join(words[40:53]).upper() + "?!"  # another case and punctuation: the same 13 words
    twelve = " ".join(docs[9].split()[40:52])  # one word short: no match
    evaluation = tmp_path / "eval.jsonl"
    rows = [{"id": 1, "question": "Which one?", "context": f"... {thirteen} ..."}, {"text": twelve}]
    evaluation.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = run_job(
        tmp_path / "out", f"--input={corpus}", f"--tokenizer={VOCAB_DIR / 'vocab.txt'}",
        f"--decontaminate={tmp_path}/eval*.jsonl", "--masking=none", f"--max_seq_length={SEQ}",
    )  # fmt: skip
    assert manifest["counts"]["documents_dropped"]["contaminated"] == 1
    assert manifest["counts"]["documents_read"] == 30
    section = manifest["decontamination"]
    assert section["removed"] == 1 and section["ngram"] == 13
    [example] = section["examples"]
    assert example["item"] == "eval.jsonl:1" and example["document"] == docs[7][: len(example["document"])]
    tokenizer = Tokenizer.from_file(str(VOCAB_DIR / "tokenizer.json"))
    written = _first_sequences(tmp_path / "out")
    assert _head(docs[7], tokenizer) not in written and _head(docs[9], tokenizer) in written
    html = report.build(str(tmp_path / "out"))
    assert "eval.jsonl:1" in html


def _mlmprep(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--near_dedup", "--near_dedup_bands=10"], ["--near_dedup_bands", "10 x 8", "112"]),
        (["--near_dedup", "--near_dedup_threshold=1"], ["--near_dedup_threshold"]),
        (["--near_dedup", "--near_dedup_threshold=0"], ["--near_dedup_threshold"]),
        (["--decontaminate=/nonexistent/eval-*.jsonl"], ["--decontaminate", "matches no file"]),
    ],
)
def test_bad_near_dedup_settings_are_one_line_and_exit_2(flags, words, tmp_path, real_data):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\n")
    done = _mlmprep(f"--input={corpus}", f"--output={tmp_path / 'out'}",
                    f"--tokenizer={VOCAB_DIR / 'vocab.txt'}", *flags)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_near_copies_across_sources_are_counted_by_source(tmp_path, real_data):
    families, singles, files = _planted(tmp_path)
    build = tmp_path / "build.yaml"
    build.write_text(
        f"tokenizer: {VOCAB_DIR / 'vocab.txt'}\nnear_dedup: true\nmasking: none\nmax_seq_length: {SEQ}\n"
        f"sources:\n  - name: first\n    input: [{files[0]}]\n  - name: second\n    input: [{files[1]}]\n"
    )
    manifest = run_job(tmp_path / "out", "--config", str(build))
    by_source = manifest["near_dedup"]["by_source"]
    # Each family's copy of smallest key stays: the others are counted where they were read.
    expected = {"first": 0, "second": 0}
    for family in families:
        kept = min(range(3), key=lambda i: _key(family[i]))
        for i in range(3):
            if i != kept:
                expected["first" if i == 0 else "second"] += 1
    assert by_source == expected
    assert np.sum(list(by_source.values())) == manifest["counts"]["documents_dropped"]["near_duplicate"]


def _union_find_losers(pairs) -> set[int]:
    """Every key of a component of ``pairs`` but its least, by a union-find written here."""
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        parent[max(ra, rb)] = min(ra, rb)
    return {x for x in parent if root(x) != x}


@pytest.mark.parametrize("grouping", ["shuffle", "run_files"])
def test_the_distributed_clusters_of_a_long_chain_of_edits_are_a_union_find_of_the_confirmed_pairs(
    grouping, tmp_path, real_data
):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from mlmprep.transforms import near_dedup
    from mlmprep.transforms.beam import coders
    from mlmprep.transforms.beam import near_dedup as beam_near_dedup
    from mlmprep.transforms.beam.counting import SumCounts

    config = near_dedup.NearDedupConfig()
    rng = np.random.default_rng(3)
    docs = []
    for doc in _documents(12):  # each a chain: every copy one word from the one before
        words = doc.split()
        for _ in range(25):
            words = list(words)
            words[rng.integers(len(words))] = f"w{rng.integers(1 << 30)}"
            docs.append(" ".join(words))
    keys = np.array([_key(d) for d in docs], dtype=np.uint64)
    sigs, has = near_dedup.signatures(docs, config)
    entries = near_dedup.entries(keys, sigs, has, config)
    pairs, _ = near_dedup.confirmed_pairs(entries, config)
    expected = _union_find_losers(zip(pairs["a"], pairs["b"]))
    assert len(expected) > 200  # long chains, several rounds to settle
    coders.register()
    with TestPipeline() as p:
        batches = [beam_near_dedup.band_batch(part, config) for part in np.array_split(entries, 7)]
        found = (
            p
            | beam.Create(batches)
            | beam_near_dedup.NearDuplicates(
                config, dedup_bits=2, bits=3, rounds=14, grouping=grouping, temp_dir=str(tmp_path)
            )
        )
        losers = found["losers"] | beam.FlatMapTuple(lambda _, data: np.frombuffer(data, "<u8").tolist())
        assert_that(losers, equal_to(sorted(expected)), label="Losers")
        counts = found["counts"] | beam.CombineGlobally(SumCounts())

        def settled_in_several_rounds(totals):
            [total] = totals
            took, converged = near_dedup.settled_rounds(total)
            assert converged and 1 < took <= 14, (took, converged)
            assert total["near_dedup.clusters"] == 12 and total["near_dedup.keys_removed"] == len(expected)

        assert_that(counts, settled_in_several_rounds, label="Rounds")


def test_without_exact_deduplication_every_copy_of_a_near_duplicate_goes_and_the_survivors_copies_stay(
    tmp_path, real_data
):
    docs = _documents(3)
    words = docs[0].split()
    near = " ".join(words[:10] + ["zebra"] + words[11:])
    kept, lost = sorted([docs[0], near], key=_key)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join([kept, lost, lost, kept, *docs[1:]]) + "\n", encoding="utf-8")
    manifest = run_job(
        tmp_path / "out", f"--input={corpus}", f"--tokenizer={VOCAB_DIR / 'vocab.txt'}", "--nodedup",
        "--near_dedup", "--masking=none", f"--max_seq_length={SEQ}",
    )  # fmt: skip
    dropped = manifest["counts"]["documents_dropped"]
    assert dropped["near_duplicate"] == 2 and dropped["duplicate"] == 0
    assert manifest["near_dedup"]["keys_removed"] == 1 and manifest["counts"]["documents_written"] == 4
    tokenizer = Tokenizer.from_file(str(VOCAB_DIR / "tokenizer.json"))
    written = _first_sequences(tmp_path / "out")
    assert written.count(_head(kept, tokenizer)) == 2 and _head(lost, tokenizer) not in written
    assert verify.verify(str(tmp_path / "out")).problems == []
