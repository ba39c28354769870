"""--formats mds and arrayrecord: the shards read back by their own libraries hold the Parquet and TFRecord
rows, in order, for every packing and for unmasked output; MosaicML Streaming partitions them over ranks;
ModernBERT's loader reads unmasked rows unmodified; a Composer-style loop and a Grain loader train and batch
from them; verify, inspect and report read any format; bad choices are one line and exit 2."""

import collections
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import inspect as inspect_lib
from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import verify
from mlmprep.transforms import decode

from conftest import REPO, run_job

# Every test here runs the job: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

SEQ, PREDS = 128, 20
ALL = "tfrecord,parquet,arrayrecord,mds"
VARIANTS = {
    "document": [],
    "concat": ["--packing=concat"],
    "best_fit": ["--packing=best_fit"],
    "nsp": ["--sentence_pairs=nsp"],
    "unmasked": ["--masking=none", "--packing=best_fit"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_data):
    path = tmp_path_factory.mktemp("corpus") / "kjv.txt"
    path.write_bytes(
        (real_data / "corpora" / "small" / "kjv.txt").read_bytes()[:150_000].rsplit(b"\n\n", 1)[0]
    )
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, corpus, bert_vocab):
    """Each variant's output in all four formats: two train shards and one validation shard."""
    root = tmp_path_factory.mktemp("formats")
    for name, flags in VARIANTS.items():
        run_job(
            root / name, f"--input={corpus}", f"--tokenizer={bert_vocab}", f"--formats={ALL}",
            f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PREDS}", "--validation_fraction=0.1",
            "--num_shards=2", *flags,
        )  # fmt: skip
    return root


def _files(out, manifest, split, fmt):
    return [str(out / s["file"]) for s in manifest["shards"] if s["split"] == split and s["format"] == fmt]


def _parquet_rows(out, manifest, split) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in _files(out, manifest, split, "parquet")])


def _tfrecords(out, manifest, split) -> list[bytes]:
    records = []
    for path in _files(out, manifest, split, "tfrecord"):
        with open(path, "rb") as f:
            records += list(decode.iter_tfrecords(f))
    return records


def _streaming_rows(out, split, cache) -> list[dict]:
    """The MDS split as the library's StreamingDataset gives it, in order (the output as its remote)."""
    streaming = pytest.importorskip(
        "streaming", reason="MosaicML Streaming is not installed (the [loaders] extra)"
    )
    dataset = streaming.StreamingDataset(
        remote=str(out / "mds"), local=str(cache), split=split, shuffle=False, batch_size=1
    )
    return [dataset[i] for i in range(len(dataset))]


def _mds_value(row: dict, name: str) -> np.ndarray:
    value = row[name]
    return np.frombuffer(value, "<i8") if isinstance(value, bytes) else np.asarray(value)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_formats_library_reads_back_the_parquet_and_tfrecord_rows_in_order(outputs, variant, tmp_path):
    out = outputs / variant
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "validation"):
        table = _parquet_rows(out, manifest, split)
        rows = _streaming_rows(out, split, tmp_path / split)
        assert len(rows) == table.num_rows > 0
        expected = set(table.column_names) | ({"len"} if variant == "unmasked" else set())
        assert set(rows[0]) == expected
        for name in table.column_names:
            column = table.column(name).to_pylist()
            for i, row in enumerate(rows):
                assert np.array_equal(_mds_value(row, name), np.asarray(column[i])), (split, name, i)
        if variant == "unmasked":  # ModernBERT's loader: int64 bytes, and len the ids' count
            assert all(row["len"] == SEQ and len(row["input_ids"]) == 8 * SEQ for row in rows)
        if variant == "document":
            assert rows[0]["input_ids"].dtype == np.int32  # ndarray:int32 columns decode as arrays

        from array_record.python import array_record_module

        records = []
        for path in _files(out, manifest, split, "arrayrecord"):
            reader = array_record_module.ArrayRecordReader(path)
            records += reader.read_all()
            reader.close()
        assert records == _tfrecords(out, manifest, split)  # the same Example bytes, record for record
    assert verify.verify(str(out)).problems == []


def test_the_manifest_lists_each_formats_files_and_mds_splits_have_their_index(outputs):
    out = outputs / "document"
    manifest = json.loads((out / "manifest.json").read_text())
    by_format = {}
    for shard in manifest["shards"]:
        by_format.setdefault(shard["format"], []).append(shard)
        assert shard["bytes"] == (out / shard["file"]).stat().st_size
        assert len(shard["sha256"]) == 64
    assert sorted(by_format) == ["arrayrecord", "mds", "parquet", "tfrecord"]
    assert {len(files) for files in by_format.values()} == {3}  # two train shards, one validation
    records = {fmt: sorted((s["file"].rsplit("/", 1)[-1].split(".")[0], s["records"]) for s in files)
               for fmt, files in by_format.items()}  # fmt: skip
    assert len({tuple(r) for r in records.values()}) == 1  # each shard's rows, alike in every format
    assert [s["file"] for s in by_format["mds"]][0].startswith("mds/train/train-00000-of-00002.mds.zstd")
    for split in ("train", "validation"):
        index = json.loads((out / "mds" / split / "index.json").read_text())
        shards = [s for s in by_format["mds"] if s["split"] == split]
        assert [s["zip_data"]["basename"] for s in index["shards"]] == [
            s["file"].rsplit("/", 1)[-1] for s in shards
        ]
        assert [s["samples"] for s in index["shards"]] == [s["records"] for s in shards]
        assert {s["compression"] for s in index["shards"]} == {"zstd:3"}


def test_verify_finds_an_mds_index_or_shard_that_is_not_the_manifests(outputs, tmp_path):
    import shutil

    import zstandard

    out = tmp_path / "out"
    shutil.copytree(outputs / "document", out)
    index = out / "mds" / "train" / "index.json"
    listed = json.loads(index.read_text())
    listed["shards"][0]["samples"] -= 1
    index.write_text(json.dumps(listed))
    shard = out / "mds" / "validation" / "validation-00000-of-00001.mds.zstd"
    raw = bytearray(zstandard.ZstdDecompressor().decompress(shard.read_bytes()))
    count = int(np.frombuffer(raw[:4], "<u4")[0])
    last = int(np.frombuffer(raw[4 * count : 4 * count + 4], "<u4")[0])  # where the last sample starts
    raw[last + 4 + 4 * SEQ + 4 * 5] ^= 0x01  # its input_ids (after its head and attention_mask): the 6th
    shard.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    problems = "\n".join(verify.verify(str(out)).problems)
    assert "mds/train/index.json: does not list the manifest's MDS shards" in problems
    assert "validation-00000-of-00001.mds.zstd: sha256 differs" in problems
    assert (
        "validation-00000-of-00001.tfrecord: tfrecord and mds/validation/validation-00000-of-00001.mds.zstd "
        "hold different rows" in problems
    )


def test_mosaic_streaming_partitions_the_rows_over_two_ranks(outputs, tmp_path):
    pytest.importorskip("streaming", reason="MosaicML Streaming is not installed (the [loaders] extra)")
    out = outputs / "best_fit"
    manifest = json.loads((out / "manifest.json").read_text())
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import numpy as np
            from streaming import StreamingDataset
            dataset = StreamingDataset(remote=sys.argv[1], local=sys.argv[2], split="train", shuffle=False,
                                       batch_size=1)
            print(json.dumps([np.asarray(row["input_ids"]).tolist() for row in dataset]))
            """
        )
    )
    with socket.socket() as free:  # a port for torch.distributed's rendezvous, which the library sets up
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {
        **os.environ, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }  # fmt: skip
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(out / "mds"), str(tmp_path / "cache")],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    parts = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]
    rows = [tuple(ids) for ids in _parquet_rows(out, manifest, "train").column("input_ids").to_pylist()]
    index = {ids: i for i, ids in enumerate(rows)}
    seen = [[index[tuple(ids)] for ids in part] for part in parts]
    print(f"{len(rows)} rows; rank 0 reads {len(seen[0])}, rank 1 reads {len(seen[1])}")
    assert len(seen[0]) == len(seen[1])  # the library's own padding evens the ranks
    assert set(seen[0]) | set(seen[1]) == set(range(len(rows)))  # complete
    padding = sum(len(part) for part in seen) - len(rows)
    read_twice = [i for i, n in collections.Counter(seen[0] + seen[1]).items() if n > 1]
    assert padding <= 1 and len(read_twice) == padding  # disjoint but the padding (at most ranks - 1 rows)


def _modernbert_sample(sample: dict, max_seq_len: int, pad_id: int) -> dict:
    """What ModernBERT's StreamingTextDataset does with a pre-tokenized sample (src/text_data.py,
    ``_read_binary_tokenized_sample``): int64 ids and mask from bytes, padded or cut to its length."""
    seq_len = sample["len"] if "len" in sample else len(sample["input_ids"])
    input_ids = np.frombuffer(sample["input_ids"], dtype=np.int64).copy()
    mask = np.frombuffer(sample["attention_mask"], dtype=np.int64).copy()
    pad = max_seq_len - seq_len
    if pad > 0:
        input_ids = np.pad(input_ids, (0, pad), constant_values=pad_id)
        mask = np.pad(mask, (0, pad), constant_values=0)
    return {"input_ids": input_ids[:max_seq_len], "attention_mask": mask[:max_seq_len]}


def test_modernberts_loader_reads_unmasked_mds_rows_unmodified(outputs, tmp_path):
    out = outputs / "unmasked"
    manifest = json.loads((out / "manifest.json").read_text())
    table = _parquet_rows(out, manifest, "train")
    rows = _streaming_rows(out, "train", tmp_path)
    for max_seq_len in (SEQ, 2 * SEQ, SEQ // 2):  # its config's length: the data's, longer or shorter
        for i, row in enumerate(rows):
            sample = _modernbert_sample(row, max_seq_len, pad_id=0)
            ids = np.asarray(table.column("input_ids")[i].as_py())
            mask = np.asarray(table.column("attention_mask")[i].as_py())
            width = min(SEQ, max_seq_len)
            assert np.array_equal(sample["input_ids"][:width], ids[:width])
            assert np.array_equal(sample["attention_mask"][:width], mask[:width])
            assert sample["input_ids"].size == max_seq_len and not sample["attention_mask"][SEQ:].any()


def test_a_composer_style_loop_trains_modernbert_from_the_mds_shards(outputs, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the [hf] extra)")
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (the [hf] extra)"
    )
    streaming = pytest.importorskip(
        "streaming", reason="MosaicML Streaming is not installed (the [loaders] extra)"
    )
    out = outputs / "unmasked"
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"), pad_token="[PAD]", mask_token="[MASK]", cls_token="[CLS]",
        sep_token="[SEP]", unk_token="[UNK]",
    )  # fmt: skip
    dataset = streaming.StreamingDataset(
        remote=str(out / "mds"), local=str(tmp_path / "cache"), split="train", shuffle=True, shuffle_seed=1,
        batch_size=8,
    )  # fmt: skip
    masking = transformers.DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=0.3, return_tensors="pt"
    )

    def collate(samples):  # ModernBERT's: the bytes decoded as its loader does, then masked per batch
        return masking([_modernbert_sample(s, SEQ, tokenizer.pad_token_id) for s in samples])

    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate)
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=SEQ, local_attention=32, global_attn_every_n_layers=2,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    model = transformers.ModernBertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):  # epochs
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    print(f"{len(losses)} steps: loss {np.mean(losses[:5]):.2f} -> {np.mean(losses[-5:]):.2f}")
    assert len(losses) >= 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0


def test_a_grain_loader_batches_the_arrayrecord_shards_as_the_trainer_reads_them(outputs):
    grain = pytest.importorskip("grain.python", reason="Grain is not installed (the [loaders] extra)")
    out = outputs / "nsp"
    manifest = json.loads((out / "manifest.json").read_text())
    paths = _files(out, manifest, "train", "arrayrecord")
    source = grain.ArrayRecordDataSource(paths)

    class ParseExample(grain.MapTransform):
        def map(self, record):
            return decode.parse_example(record)

    sampler = grain.IndexSampler(
        len(source), shard_options=grain.NoSharding(), shuffle=False, num_epochs=1, seed=0
    )
    loader = grain.DataLoader(
        data_source=source, sampler=sampler, operations=[ParseExample(), grain.Batch(8)], worker_count=0
    )
    batches = list(loader)
    records = [decode.parse_example(r) for r in _tfrecords(out, manifest, "train")]
    from mlmprep.trainer import data  # the trainer's feature spec: what each feature's shape is

    spec = data.feature_spec(SEQ, PREDS)
    expected = {name: (8, *feature.shape) for name, feature in spec.items()}
    assert {name: batches[0][name].shape for name in spec} == expected
    assert sum(len(b["input_ids"]) for b in batches) == len(records)
    for name in spec:
        together = np.concatenate([b[name] for b in batches])
        assert np.array_equal(together, np.stack([r[name] for r in records])), name


def _one_format(root, corpus, bert_vocab, fmt):
    run_job(
        root / fmt, f"--input={corpus}", f"--tokenizer={bert_vocab}", f"--formats={fmt}",
        f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PREDS}", "--num_shards=2",
    )  # fmt: skip
    return root / fmt


def test_inspect_verify_and_report_read_an_output_of_any_one_format(outputs, corpus, bert_vocab, tmp_path):
    from mlmprep.pipeline import report

    reference = json.loads((outputs / "document" / "manifest.json").read_text())
    expected = inspect_lib.first_rows(str(outputs / "document"), reference, "train", 3)
    for fmt in ("mds", "arrayrecord"):
        out = _one_format(tmp_path, corpus, bert_vocab, fmt)
        manifest = manifest_lib.read(str(out))
        assert {s["format"] for s in manifest["shards"]} == {fmt}
        rows = inspect_lib.first_rows(str(out), manifest, "train", 3)
        for got, want in zip(rows, expected, strict=True):
            assert all(np.array_equal(got[k], want[k]) for k in want)
        assert verify.verify(str(out)).problems == []
        report.main([str(out), f"--output={tmp_path / (fmt + '.html')}"])
        assert (tmp_path / (fmt + ".html")).stat().st_size > 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--formats=tfrecord,csv"], "--formats must be one of tfrecord, parquet, arrayrecord, mds, got csv"),
        (["--formats=mds", "--mds_compression=lz4"], "MDS does not know the compression 'lz4'"),
        (["--formats=mds", "--mds_compression=br"], "MDS compression 'br' is not one mlmprep writes"),
        (["--formats=mds", "--mds_compression=zstd:30"], "MDS compression zstd takes a level from 1 to 22"),
    ],
)
def test_a_bad_format_or_compression_is_one_line_and_exit_2(tmp_path, corpus, bert_vocab, flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--input={corpus}",
         f"--tokenizer={bert_vocab}", f"--output={tmp_path / 'out'}", *flags],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_arrayrecord_without_its_library_names_the_extra(tmp_path, corpus, bert_vocab):
    blocked = tmp_path / "blocked" / "array_record"  # a package that fails to import, as a missing one does
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('array_record is not installed')\n")
    result = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--input={corpus}",
         f"--tokenizer={bert_vocab}", f"--output={tmp_path / 'out'}", "--formats=tfrecord,arrayrecord"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(blocked.parent)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'mlmprep[arrayrecord]'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_build_over_an_mds_output_replaces_its_shards_and_indexes_whole(tmp_path, corpus, bert_vocab):
    out = tmp_path / "out"
    flags = [
        f"--input={corpus}",
        f"--tokenizer={bert_vocab}",
        "--formats=mds,arrayrecord",
        f"--max_seq_length={SEQ}",
    ]
    run_job(out, *flags, "--num_shards=2")
    stale = out / "mds" / "train" / f"train-00000-of-00002.mds.zstd.{'0' * 32}.incomplete"  # a dead attempt's
    stale.write_bytes(b"half a shard")
    manifest = run_job(out, *flags, "--num_shards=3", "--overwrite")
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    listed = {s["file"] for s in manifest["shards"]}
    assert files == listed | {"manifest.json", "tokenizer.json", "mds/train/index.json"}
    assert all(".g1." in name for name in listed)  # the new build's names; the old build's files are gone
    index = json.loads((out / "mds" / "train" / "index.json").read_text())
    assert [s["zip_data"]["basename"] for s in index["shards"]] == [
        f"train-0000{i}-of-00003.g1.mds.zstd" for i in range(3)
    ]
    assert verify.verify(str(out)).problems == []


def test_every_formats_files_are_the_same_with_one_worker_process_or_two(tmp_path, corpus, bert_vocab):
    args = [f"--input={corpus}", f"--tokenizer={bert_vocab}", f"--formats={ALL}", "--packing=best_fit",
            f"--max_seq_length={SEQ}", "--validation_fraction=0.1", "--num_shards=2"]  # fmt: skip
    one = run_job(tmp_path / "one", *args, "--direct_num_workers=1")
    two = run_job(tmp_path / "two", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert {s["file"]: s["sha256"] for s in one["shards"]} == {s["file"]: s["sha256"] for s in two["shards"]}
    assert {s["format"] for s in one["shards"]} == set(ALL.split(","))
    for split in ("train", "validation"):
        index = pathlib.Path("mds", split, "index.json")
        assert (tmp_path / "one" / index).read_bytes() == (tmp_path / "two" / index).read_bytes()
