"""verify passes on good output and fails on each kind of corruption; inspect shows examples."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.transforms import decode, encode

from conftest import run_job


@pytest.fixture(scope="module")
def good(tmp_path_factory, real_data, bert_vocab):
    out = tmp_path_factory.mktemp("verify") / "good"
    run_job(
        out,
        f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_*.txt'}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.2",
        num_shards=2,
    )
    return out


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *args], capture_output=True, text=True
    )


@pytest.fixture
def copy(good, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(good, out)
    return out


def _rewrite_manifest(out, change):
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _refresh_sha(out, name):
    data = (out / name).read_bytes()
    _rewrite_manifest(
        out, lambda m: [s.update(sha256=encode.sha256(data)) for s in m["shards"] if s["file"] == name]
    )


@pytest.mark.slow
def test_good_output_passes(good):
    done = cli("verify", str(good))
    assert done.returncode == 0, done.stdout
    assert "OK" in done.stdout
    fractions = dict(
        part.split() for part in done.stdout.split("replacements: ")[1].splitlines()[0].split(", ")
    )
    assert abs(float(fractions["mask"]) - 0.8) < 0.05


@pytest.mark.slow
def test_flipped_byte_fails(copy):
    name = "train-00000-of-00002.tfrecord"
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    done = cli("verify", str(copy))
    assert done.returncode == 1
    assert f"FAIL {name}: sha256 differs" in done.stdout
    _refresh_sha(copy, name)  # the CRCs still catch it
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "CRC mismatch" in done.stdout


@pytest.mark.slow
def test_manifest_record_count_wrong_fails(copy):
    _rewrite_manifest(copy, lambda m: m["shards"][0].update(records=m["shards"][0]["records"] + 1))
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "records, the manifest says" in done.stdout


@pytest.mark.slow
def test_manifest_split_counts_wrong_fails(copy):
    _rewrite_manifest(copy, lambda m: m["counts"]["splits"]["train"].update(tokens=1))
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "tokens" in done.stdout


@pytest.mark.slow
def test_missing_shard_fails(copy):
    (copy / "validation-00000-of-00001.parquet").unlink()
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "validation-00000-of-00001.parquet: cannot be read" in done.stdout


@pytest.mark.slow
def test_special_token_selected_fails(copy):
    name = "train-00001-of-00002.tfrecord"
    with open(copy / name, "rb") as f:
        ((batch, _),) = decode.tfrecord_slices(f, 128, 20, rows=10**6)  # the whole shard, one slice
    batch = dataclasses.replace(batch, masked_lm_positions=batch.masked_lm_positions.astype(np.int32))
    batch.masked_lm_positions[0, 0] = 0  # "predict" the [CLS]
    batch.masked_lm_ids[0, 0] = 101
    (copy / name).write_bytes(encode.tfrecord_bytes(encode.tf_examples(batch)))
    _refresh_sha(copy, name)
    done = cli("verify", str(copy))
    assert done.returncode == 1
    assert "position outside the sequence" in done.stdout and "special token was selected" in done.stdout
    assert "hold different rows" in done.stdout  # the Parquet twin was left alone


@pytest.mark.slow
def test_parquet_row_changed_fails(copy):
    name = "train-00000-of-00002.parquet"
    table = pq.read_table(copy / name)
    rows = table.to_pylist()
    rows[0]["input_ids"][1] = 2000
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), copy / name)
    _refresh_sha(copy, name)
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "hold different rows" in done.stdout


def test_verify_of_a_directory_without_manifest_is_a_usage_error(tmp_path):
    done = cli("verify", str(tmp_path))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_inspect_shows_masked_examples(good):
    done = cli("inspect", str(good), "-n", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("--- train example") == 2
    assert "[MASK→" in done.stdout and "[CLS]" in done.stdout


@pytest.mark.slow
def test_verify_without_tokenizer_is_a_usage_error(copy):
    (copy / "tokenizer.json").unlink()
    done = cli("verify", str(copy))
    assert done.returncode == 2 and "Traceback" not in done.stderr


@pytest.mark.slow
def test_parquet_row_groups_of_any_size_are_compared_slice_by_slice(copy):
    name = "train-00000-of-00002.parquet"
    table = pq.read_table(copy / name)
    pq.write_table(table, copy / name, row_group_size=7)  # groups that straddle verify's slices
    assert pq.ParquetFile(copy / name).num_row_groups > 1
    _refresh_sha(copy, name)
    done = cli("verify", str(copy))
    assert done.returncode == 0, done.stdout


@pytest.mark.slow
def test_a_parquet_twin_missing_its_last_rows_fails(copy):
    name = "train-00000-of-00002.parquet"
    table = pq.read_table(copy / name)
    pq.write_table(table.slice(0, table.num_rows - 1), copy / name)
    _refresh_sha(copy, name)
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "hold different rows" in done.stdout


def _add(counts, field, n):
    counts[field] += n


def _zero_documents(manifest):
    counts = manifest["counts"]
    counts["documents_read"] = counts["documents_written"] = 0
    counts["documents_dropped"] = dict.fromkeys(counts["documents_dropped"], 0)
    for split in counts["splits"].values():
        split["documents"] = 0


@pytest.mark.slow
def test_a_manifest_of_sequences_from_no_documents_fails(copy):
    # What a runner that drops a DoFn's finish_bundle outputs (where counts are emitted) would leave:
    # every count adds up, but nothing was read.
    _rewrite_manifest(copy, _zero_documents)
    done = cli("verify", str(copy))
    assert done.returncode == 1
    assert "documents_written is 0, yet the shards hold sequences" in done.stdout
    assert "train has" in done.stdout and "sequences from 0 documents" in done.stdout


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["counts"].update(documents_written=m["counts"]["documents_written"] + 1),
         "documents_written is not the sum of the splits' documents"),
        (lambda m: _add(m["counts"]["splits"]["train"], "documents", 1),
         "documents_written is not the sum of the splits' documents"),
        (lambda m: m["counts"].update(documents_read=m["counts"]["documents_read"] - 1),
         "documents_read != documents_written + documents dropped"),
        (lambda m: m["counts"]["splits"]["validation"].update(shards=2), "shards 1, the manifest says 2"),
        (lambda m: m["shards"][0].update(tokens=m["shards"][0]["tokens"] - 1), "tokens, the manifest says"),
        (lambda m: m["counts"]["splits"].pop("validation"), "shards of split validation, which its counts"),
    ],
)  # fmt: skip
@pytest.mark.slow
def test_manifest_counts_that_disagree_with_each_other_fail(copy, change, message):
    _rewrite_manifest(copy, change)
    done = cli("verify", str(copy))
    assert done.returncode == 1 and message in done.stdout, done.stdout


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.pop("counts"),
        lambda m: m["shards"][0].pop("sha256"),
        lambda m: m["counts"].pop("splits"),
        lambda m: m.pop("shards"),
    ],
)
@pytest.mark.slow
def test_a_manifest_missing_its_fields_is_a_usage_error(copy, damage):
    _rewrite_manifest(copy, damage)
    done = cli("verify", str(copy))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "no usable manifest" in done.stderr


@pytest.mark.slow
def test_an_unknown_format_version_is_a_clear_usage_error(copy):
    _rewrite_manifest(copy, lambda m: m.update(format_version=99))
    for command in ("verify", "inspect"):
        done = cli(command, str(copy))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "format_version 99; this mlmprep reads 1, 2" in done.stderr


@pytest.mark.slow
def test_an_output_written_before_the_settings_were_typed_still_reads(copy):
    """format_version 1 kept the run's options as "config", with --whole_word_masking beside --masking:
    verify and inspect read it into the same typed settings."""

    def as_version_1(m):
        config = m.pop("settings")
        m.update(format_version=1, config={**config, "whole_word_masking": False})

    _rewrite_manifest(copy, as_version_1)
    from mlmprep.pipeline import manifest as manifest_lib

    old = manifest_lib.settings(manifest_lib.read(str(copy)))
    assert old.masking.mode == "token" and old.packing.max_seq_length > 0
    for command in ("verify", "inspect"):
        done = cli(command, str(copy))
        assert done.returncode == 0, done.stderr
