"""Progress from workers, so a long local run is not silent.

Each worker process reports its own running totals at most every
``INTERVAL_S`` seconds on stderr (a remote runner collects them into its
worker logs). On the local runner, the read steps also note the input bytes
each has read in a file of its own under a local folder, and the launcher's
``ProgressMonitor`` sums them: the share of the planned input read, the
throughput and the time left, whichever worker process read it. The final
totals are in manifest.json.
"""

import os
import sys
import threading
import time
import uuid

INTERVAL_S = float(os.environ.get("MLMPREP_PROGRESS_S", 10.0))
# The read passes, in order, and what each is doing: the tokenizing pass is the job's bulk.
PASSES = {"digests": "finding duplicates", "tokenize": "tokenizing"}


class Progress:
    def __init__(self, stage: str, interval_s: float = INTERVAL_S):
        self._stage = stage
        self._interval = interval_s
        self._totals = {}
        self._last = time.monotonic()

    def update(self, **counts):
        for name, n in counts.items():
            self._totals[name] = self._totals.get(name, 0) + n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            text = ", ".join(f"{name.replace('_', ' ')} {n:,}" for name, n in self._totals.items())
            print(f"mlmprep [{self._stage}, pid {os.getpid()}]: {text}", file=sys.stderr, flush=True)


class InputProgress:
    """The input bytes one reader (a DoFn instance) has read in a pass, kept in a file of its own."""

    def __init__(self, directory: str | None, pass_name: str):
        self._path = None if directory is None else os.path.join(directory, f"{pass_name}.{uuid.uuid4().hex}")
        self._bytes = 0

    def add(self, n: int) -> None:
        if self._path is None:
            return
        self._bytes += n
        temp = f"{self._path}.tmp"
        with open(temp, "w") as f:
            f.write(str(self._bytes))
        os.replace(temp, self._path)  # a reader never sees half a number


def read_bytes(directory: str) -> dict[str, int]:
    """Input bytes read so far, per pass, summed over every reader's file."""
    totals = dict.fromkeys(PASSES, 0)
    for name in os.listdir(directory):
        pass_name, _, rest = name.partition(".")
        if pass_name in totals and not rest.endswith(".tmp"):
            try:
                with open(os.path.join(directory, name)) as f:
                    totals[pass_name] += int(f.read() or 0)
            except (OSError, ValueError):  # replaced while read: counted next time
                pass
    return totals


def describe(pass_name: str, done: int, total: int, seconds: float) -> str:
    """One progress line: the share read, the throughput and, from it, the time left."""
    share = min(1.0, done / total) if total else 0.0
    rate = done / seconds if seconds > 0 else 0.0
    line = f"mlmprep: {PASSES[pass_name]}, {share:.0%} of {total / 1e6:,.1f} MB read, {rate / 1e6:,.1f} MB/s"
    if rate > 0 and share < 1:
        left = (total - done) / rate
        line += f", about {_duration(left)} left"
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressMonitor(threading.Thread):
    """In the launcher of a local run: every ``interval_s``, the share of the planned input the job has read,
    its throughput and the time left, summed from the readers' files. On a terminal one line is rewritten;
    in a log, a line each time."""

    def __init__(self, directory: str, total_bytes: int, *, interval_s: float = INTERVAL_S, stream=None):
        super().__init__(name="mlmprep-progress", daemon=True)
        self._directory = directory
        self._total = total_bytes
        self._interval = interval_s
        self._stream = stream or sys.stderr
        self._done = threading.Event()
        self._pass_starts = {}  # pass -> about when its first bytes were read
        self._all_read = False

    def run(self):
        tty = self._stream.isatty()
        shown = False
        while not self._done.wait(self._interval):
            line = self._line()
            if line:
                print(
                    ("\r\033[K" if tty else "") + line, end="" if tty else "\n", file=self._stream, flush=True
                )
                shown = True
        if tty and shown:
            print(file=self._stream, flush=True)

    def stop(self):
        self._done.set()
        self.join()

    def _line(self) -> str | None:
        totals, now = read_bytes(self._directory), time.monotonic()
        current = [p for p in PASSES if totals[p]]
        if not current or not self._total:
            return None
        pass_name = current[-1]  # the later pass once it has begun
        self._pass_starts.setdefault(pass_name, now - self._interval)
        if pass_name == "tokenize" and totals[pass_name] >= self._total:  # the rest is the shards, once
            if self._all_read:
                return None
            self._all_read = True
            return f"mlmprep: all {self._total / 1e6:,.1f} MB read and tokenized; writing the shards"
        return describe(pass_name, totals[pass_name], self._total, now - self._pass_starts[pass_name])
