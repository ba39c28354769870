"""The steps of the mlmprep job.

Each module holds one step: a pure function over a numpy batch that knows
nothing of Beam, and a thin Beam transform around it. The trainer reuses the
pure functions (masking) without importing Beam.
"""

import atexit
import gc

# A quicker exit for every process that imports the steps (each worker, and
# the launcher): CPython's shutdown runs full collections over everything
# alive, 0.3 to 0.5 s in a process that imported Beam, for memory the OS takes
# back anyway, and the DirectRunner stops its workers one after the other.
# Registered at import, so it runs after the exit handlers registered later;
# files are closed by the code that writes them, never by a collector.
atexit.register(gc.freeze)
