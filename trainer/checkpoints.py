"""What a training run writes in its model folder as it goes: checkpoints with the optimizer state,
history.json, and when early stopping ends the run.

A rerun of ``mlmprep train`` resumes from the last checkpoint here, and
``fill-mask`` and ``export`` find the model by the names in ``model_dir``.
"""

import collections
import json
import math
import os
import time

import keras
import numpy as np

from mlmprep.trainer import model as model_lib
from mlmprep.trainer.model_dir import CHECKPOINTS, HISTORY, checkpoints

KEEP_CHECKPOINTS = 3


def save_checkpoint(model, folder: str, step: int):
    """Model weights with every optimizer variable (step count, moments), written then renamed.

    Not ``model.save``: keras-hub tasks override ``compile``, so a loaded
    ``.keras`` file comes back with a fresh optimizer and its state is lost.
    ``save_weights`` keeps the optimizer's variables beside the model's.
    """
    temp = os.path.join(folder, f"incomplete-{step}.weights.h5")
    model.save_weights(temp)
    os.replace(temp, os.path.join(folder, f"ckpt-{step:08d}.weights.h5"))  # never half a checkpoint


def restore_checkpoint(model, path: str):
    """Loads a checkpoint into a model built and compiled the same way, optimizer state included."""
    model.optimizer.build(model.trainable_variables)  # so that load_weights fills its variables too
    model.load_weights(path)


def history_entry(step: int, logs: dict, baseline: float, prefix: str = "val_") -> dict:
    """One history.json entry from Keras's logs (``prefix``: "val_" in fit's, "" in evaluate's).

    The losses are the masked LM's, with or without a pair head: what the unigram baseline compares with.
    With sentence pairs, the pair head's loss and accuracy are beside them.
    """
    if f"{prefix}discriminator_loss" in logs:  # ELECTRA: the generator's loss is the masked LM's
        return _electra_entry(step, logs, baseline, prefix)
    pairs = f"{prefix}{model_lib.MLM_OUTPUT}_loss" in logs
    mlm = f"{model_lib.MLM_OUTPUT}_" if pairs else ""
    train_loss = logs.get(f"{mlm}loss") if prefix else None
    val_loss = float(logs[f"{prefix}{mlm}loss"])
    entry = {
        "step": step,
        "train_loss": None if train_loss is None else float(train_loss),
        "val_loss": val_loss,
        "val_masked_accuracy": float(logs[f"{prefix}{mlm}masked_accuracy"]),
        "val_perplexity": math.exp(min(val_loss, 50.0)),
        "val_unigram_loss": baseline,
    }
    if pairs:
        pair = f"{prefix}{model_lib.PAIR_OUTPUT}_"
        entry["val_pair_loss"] = float(logs[f"{pair}loss"])
        entry["val_pair_accuracy"] = float(logs[f"{pair}pair_accuracy"])
    return entry


def _electra_entry(step: int, logs: dict, baseline: float, prefix: str) -> dict:
    """ELECTRA's history entry: the loss (generator + 50 x discriminator), each part, the generator's
    masked accuracy and the discriminator's accuracy and AUC over every real token."""
    train_loss = logs.get("loss") if prefix else None
    generator_loss = float(logs[f"{prefix}generator_loss"])
    return {
        "step": step,
        "train_loss": None if train_loss is None else float(train_loss),
        "val_loss": float(logs[f"{prefix}loss"]),
        "val_generator_loss": generator_loss,
        "val_discriminator_loss": float(logs[f"{prefix}discriminator_loss"]),
        "val_masked_accuracy": float(logs[f"{prefix}masked_accuracy"]),
        "val_discriminator_accuracy": float(logs[f"{prefix}discriminator_accuracy"]),
        "val_discriminator_auc": float(logs[f"{prefix}discriminator_auc"]),
        "val_perplexity": math.exp(min(generator_loss, 50.0)),
        "val_unigram_loss": baseline,
    }


def unigram_loss(eval_ds, batches: int) -> float:
    """The loss of a model that knows only how often each token is masked: the entropy of the evaluated
    labels. A model below it has learned something from the context."""
    counts = collections.Counter()
    for _, labels, weights in eval_ds.take(batches):
        if isinstance(labels, dict):  # sentence pairs: the masked LM's labels
            labels, weights = labels[model_lib.MLM_OUTPUT], weights[model_lib.MLM_OUTPUT]
        counts.update(labels.numpy()[weights.numpy() > 0].tolist())
    p = np.array(list(counts.values()), dtype=np.float64) / max(1, sum(counts.values()))
    return float(-(p * np.log(p)).sum())


def best_step(history: list) -> int | None:
    """The trained step (not 0) with the lowest validation loss so far; the earliest of equals."""
    trained = [h for h in history if h["step"] > 0]
    return min(trained, key=lambda h: (h["val_loss"], h["step"]))["step"] if trained else None


def stop_early(history: list, patience: int | None) -> dict | None:
    """Where and why to stop: ``patience`` evaluations in a row without a validation loss below the best
    one before them; None to go on."""
    best = best_step(history)
    if not patience or best is None:
        return None
    since = [h for h in history if h["step"] > best]
    if len(since) < patience:
        return None
    return {
        "step": history[-1]["step"],
        "best_step": best,
        "reason": f"val_loss has not improved for {len(since)} evaluations (patience {patience}): the "
        f"model is the one of step {best}",
    }


class CheckpointAndHistory(keras.callbacks.Callback):
    """After each evaluation: a history.json entry, then a checkpoint with the optimizer state; with a
    patience, the stop once the validation loss has not improved for that many evaluations."""

    def __init__(self, output_dir: str, history: list, baseline: float, patience: int | None = None):
        super().__init__()
        self._output_dir = output_dir
        self._history = history
        self._baseline = baseline
        self._patience = patience

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations)
        self._history.append(history_entry(step, logs, self._baseline))
        stopped = stop_early(self._history, self._patience)
        if stopped:
            self._history[-1]["stopped_early"] = stopped
            self.model.stop_training = True
        with open(os.path.join(self._output_dir, HISTORY), "w") as f:
            json.dump(self._history, f, indent=1)
        folder = os.path.join(self._output_dir, CHECKPOINTS)
        os.makedirs(folder, exist_ok=True)
        save_checkpoint(self.model, folder, step)
        keep = best_step(self._history) if self._patience else None  # the model early stopping keeps
        for old_step, old in checkpoints(self._output_dir)[:-KEEP_CHECKPOINTS]:
            if old_step != keep:
                os.remove(old)


class Throughput(keras.callbacks.Callback):
    """Adds sequences/s to the progress bar's logs."""

    def __init__(self, batch_size: int):
        super().__init__()
        self._batch_size = batch_size
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if logs is not None:
            logs["seq_per_s"] = self._batches * self._batch_size / (time.perf_counter() - self._start)
