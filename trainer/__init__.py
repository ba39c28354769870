"""The bundled Keras MLM trainer: a BERT encoder with its tied MLM head, fed by tf.data.

Installed with ``pip install 'mlmprep[trainer]'``; nothing in the Beam
pipeline imports it.
"""
