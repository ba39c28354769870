"""The Beam glue of the steps: DoFns and PTransforms around the pure functions of ``transforms``."""

import atexit
import functools
import gc


@functools.cache
def exit_quickly() -> None:
    """Lets this process skip CPython's shutdown collections (0.3 to 0.5 s in a process that imported
    Beam, for memory the OS takes back anyway; the DirectRunner stops its workers one after the other).

    Called by each worker's DoFn setup and by the launcher; registered once, and early, so that it runs
    after the exit handlers registered later. Files are closed by the code that writes them, never by
    a collector.
    """
    atexit.register(gc.freeze)
