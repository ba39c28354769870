"""The steps of the mlmprep job, as pure functions over batches that know nothing of Beam.

The Beam DoFns and PTransforms around them are in ``transforms.beam``; the
trainer, ``verify`` and ``inspect`` use the functions here without Beam.
"""
