"""Progress lines from workers, so a long local run is not silent.

Each worker process reports its own running totals at most every
``INTERVAL_S`` seconds on stderr (a remote runner collects them into its
worker logs). The final totals are in manifest.json.
"""

import os
import sys
import time

INTERVAL_S = 10.0


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
