"""The steps of the mlmprep job.

Each module holds one step: a pure function over a numpy batch that knows
nothing of Beam, and a thin Beam transform around it. The trainer reuses the
pure functions (masking) without importing Beam.
"""
