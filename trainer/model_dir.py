"""What a model folder (``mlmprep train --output``) holds, by name, and the check that ``fill-mask`` and
``export`` make of one before TensorFlow loads: needs neither TensorFlow nor Keras, so a folder given by
mistake is one line, at once.
"""

import os
import re

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline.errors import UsageError

CHECKPOINTS = "checkpoints"
HISTORY = "history.json"
FINAL_MODEL = "model.keras"
MODEL_CONFIG = "config.json"  # the encoder's arguments, to rebuild the model on resume


def checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint in a model folder, oldest first."""
    folder = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = [
        (int(m.group(1)), os.path.join(folder, n))
        for n in os.listdir(folder)
        if (m := re.fullmatch(r"ckpt-(\d+)\.weights\.h5", n))
    ]
    return sorted(found)


def has_model(model_dir: str) -> bool:
    """Whether a model folder holds a trained model: the final one, or a checkpoint of an unfinished run."""
    return os.path.exists(os.path.join(model_dir, FINAL_MODEL)) or bool(checkpoints(model_dir))


def check_model_folder(model_dir: str) -> None:
    """``fill-mask``'s and ``export``'s ``--model``, checked before TensorFlow loads: a folder that ``mlmprep
    train`` wrote, with a model in it."""
    if not os.path.isdir(model_dir):
        raise UsageError(f"--model {model_dir}: no such folder")
    if not os.path.exists(os.path.join(model_dir, manifest_lib.MANIFEST)):
        raise UsageError(
            f"--model {model_dir} is not a model folder written by mlmprep train (no {manifest_lib.MANIFEST})"
        )
    try:
        manifest_lib.read(model_dir)
    except (manifest_lib.ManifestError, OSError) as e:
        raise UsageError(f"--model: {e}") from None
    if not has_model(model_dir):
        raise UsageError(
            f"--model {model_dir} holds no trained model (no {FINAL_MODEL}, no {CHECKPOINTS}/): give the "
            "folder that mlmprep train --output wrote"
        )
