"""The steps of the mlmprep job.

Each module holds one step: a pure function over a numpy batch that knows
nothing of Beam, and a thin Beam transform around it. The trainer reuses the
pure functions (masking) without importing Beam.
"""

from mlmprep.transforms import shutdown

# Every worker process imports this package to run the steps; so does the launcher.
shutdown.skip_collection_at_exit()
