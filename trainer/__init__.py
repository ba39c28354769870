"""The bundled Keras MLM trainer: a BERT encoder with its tied MLM head, fed by tf.data.

Installed with ``pip install 'mlmprep[trainer]'``; nothing in the Beam
pipeline imports it.
"""

import logging

# Keras asks whether its input is a Grain dataset, which imports Grain where it is installed (the loaders
# extra); Grain then logs that it found no JAX, which this trainer has no use for.
logging.getLogger("absl").addFilter(lambda record: "Failed to load jax profiler" not in record.getMessage())
