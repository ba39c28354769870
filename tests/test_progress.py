import io
import os
import re
import subprocess
import sys
import time

from mlmprep.transforms.beam.progress import InputProgress, Progress, ProgressMonitor, describe, read_bytes


def test_progress_reports_running_totals_at_most_every_interval(capsys):
    quiet = Progress("read", interval_s=3600)
    quiet.update(documents=5)
    assert capsys.readouterr().err == ""
    progress = Progress("read", interval_s=0)
    progress.update(documents=2, characters=1000)
    progress.update(documents=3, characters=500)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert (
        "documents 5" in lines[-1]
        and "characters 1,500" in lines[-1]
        and lines[-1].startswith("mlmprep [read")
    )


def test_a_progress_line_gives_the_share_read_the_rate_and_the_time_left():
    line = describe("tokenize", 25_000_000, 100_000_000, 10.0)
    assert line == "mlmprep: tokenizing, 25% of 100.0 MB read, 2.5 MB/s, about 30 s left"
    assert describe("digests", 1_000_000, 10_000_000_000, 1.0).endswith("1.0 MB/s, about 2.8 h left")
    assert "left" not in describe("tokenize", 100, 100, 1.0)


def test_the_monitor_sums_every_readers_bytes(tmp_path):
    readers = [InputProgress(str(tmp_path), "tokenize") for _ in range(3)]
    stream = io.StringIO()
    monitor = ProgressMonitor(str(tmp_path), 3_000_000, interval_s=0.05, stream=stream)
    monitor.start()
    for reader in readers:  # three workers, a third of the input each
        reader.add(1_000_000)
        time.sleep(0.2)
    time.sleep(0.2)
    monitor.stop()
    lines = stream.getvalue().splitlines()
    shares = [int(re.search(r"(\d+)% of 3\.0 MB", line).group(1)) for line in lines if "% of" in line]
    assert shares == sorted(shares) and shares[0] in (33, 67) and 67 in shares
    assert lines[-1] == "mlmprep: all 3.0 MB read and tokenized; writing the shards"
    assert read_bytes(str(tmp_path)) == {"digests": 0, "tokenize": 3_000_000}


def test_a_local_run_prints_its_progress_with_the_time_left(tmp_path, real_data, bert_vocab):
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "run", f"--output={tmp_path / 'out'}",
         f"--input={real_data / 'corpora' / 'small' / 'kjv.txt'}", f"--tokenizer={bert_vocab}",
         "--split_input_mb=0.25", "--nodedup"],
        capture_output=True, text=True, env={**os.environ, "MLMPREP_PROGRESS_S": "0.3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("mlmprep: ")]
    size = (real_data / "corpora" / "small" / "kjv.txt").stat().st_size / 1e6
    pattern = rf"mlmprep: tokenizing, (\d+)% of {size:,.1f} MB read, [\d.]+ MB/s, about .+ left"
    progress = [re.fullmatch(pattern, line) for line in lines[:-1]]
    assert progress and all(progress), lines
    shares = [int(match.group(1)) for match in progress]
    assert shares == sorted(shares) and shares[-1] < 100
    assert lines[-1] == f"mlmprep: all {size:,.1f} MB read and tokenized; writing the shards"
