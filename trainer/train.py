"""``mlmprep train``: trains a BERT masked LM on an mlmprep output (and, on sentence pairs, its pair head).

On a GPU it switches on bfloat16 mixed precision and XLA, and spreads the
global batch over every GPU with a MirroredStrategy; on a CPU the same code
runs in float32 without XLA. Checkpoints (model and optimizer state) are
written every ``--checkpoint_every`` steps, after an evaluation on the
validation split; a rerun of the same command resumes from the last one.
"""

import collections
import dataclasses
import json
import math
import os
import re
import shutil
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import recipes
from mlmprep.trainer import data, electra, flags
from mlmprep.trainer import masking as masking_lib
from mlmprep.trainer import model as model_lib
from mlmprep.trainer.flags import WARMUP_FRACTION
from mlmprep.transforms.mask import MaskingConfig

CHECKPOINTS = "checkpoints"
HISTORY = "history.json"
FINAL_MODEL = "model.keras"
MODEL_CONFIG = "config.json"  # the BertBackbone arguments, to rebuild the model on resume
KEEP_CHECKPOINTS = 3

# Without sentence pairs, BertBackbone's pooler feeds no output; Keras warns that it gets no gradient.
warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooled_dense")


class TrainError(ValueError):
    """The model directory and the data do not belong together, or a flag is wrong."""


@dataclasses.dataclass
class TrainConfig:
    data_dir: str
    output_dir: str
    model: str = "tiny"
    steps: int = 1000
    batch_size: int = 64  # enough signal a step for a tiny model to beat a unigram model in 300 steps
    learning_rate: float | None = None  # None: model.default_learning_rate for the model's size
    warmup_steps: int | None = None  # None: warmup_fraction of the steps
    warmup_fraction: float = WARMUP_FRACTION
    weight_decay: float = 0.01
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    clipnorm: float = 1.0
    checkpoint_every: int = 500
    eval_batches: int | None = None
    dynamic_masking: bool = False
    masking: dict = dataclasses.field(default_factory=dict)  # masking.FIELDS given as flags
    seed: int = 0
    early_stopping_patience: int | None = None  # stop after this many evaluations without a better val_loss
    objective: str = "mlm"  # flags.OBJECTIVES
    generator_fraction: float = electra.GENERATOR_FRACTION  # ELECTRA: the generator's width over the model's
    recipe: str | None = None  # --recipe, whose data the run must be trained on


def device_setup():
    """(strategy, jit_compile): mixed precision and XLA where there is a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, bool(gpus)


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


def _history_entry(step: int, logs: dict, baseline: float, prefix: str = "val_") -> dict:
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


class _CheckpointAndHistory(keras.callbacks.Callback):
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
        self._history.append(_history_entry(step, logs, self._baseline))
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


class _Throughput(keras.callbacks.Callback):
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


def _check_model_matches(backbone: dict, manifest: dict, saved_manifest: dict | None):
    vocab = manifest["tokenizer"]["vocab_size"]
    seq = manifest["config"]["max_seq_length"]
    if backbone["vocabulary_size"] != vocab:
        raise TrainError(
            f"the model's vocabulary has {backbone['vocabulary_size']} tokens, the data's {vocab}"
        )
    if backbone["max_sequence_length"] < seq:
        raise TrainError(
            f"the model takes sequences of {backbone['max_sequence_length']}, the data has {seq}"
        )
    if saved_manifest and saved_manifest["tokenizer"]["sha256"] != manifest["tokenizer"]["sha256"]:
        raise TrainError("the model was trained with another tokenizer than this data's (sha256 differs)")
    if saved_manifest and data.is_packed(saved_manifest) != data.is_packed(manifest):
        raise TrainError("the model was trained on best-fit packed data and this data is not, or the reverse")
    if saved_manifest and data.has_pairs(saved_manifest) != data.has_pairs(manifest):
        raise TrainError(
            f"the model was trained on --sentence_pairs {manifest_lib.sentence_pairs(saved_manifest)} data, "
            f"this data is --sentence_pairs {manifest_lib.sentence_pairs(manifest)}"
        )


def _check_data(config: TrainConfig) -> tuple[dict, MaskingConfig | None]:
    """The data's manifest and the masking of training batches (``masking.resolve``), once the data and
    the flags are known to suit each other."""
    if config.steps < 1 or config.checkpoint_every < 1:
        raise TrainError(
            f"--steps ({config.steps}) and --checkpoint_every ({config.checkpoint_every}) must be positive"
        )
    try:
        manifest = data.read_manifest(config.data_dir)
    except data.DataError as e:
        raise TrainError(str(e)) from None
    if config.recipe is not None:
        recipes.check_data(recipes.get(config.recipe), manifest, config.data_dir)
    if not data.shard_paths(config.data_dir, manifest, "train"):
        raise TrainError(
            f"{config.data_dir} has no TFRecord train shards (the trainer reads TFRecord: "
            "run mlmprep with --formats tfrecord or tfrecord,parquet)"
        )
    try:
        masking = masking_lib.resolve(manifest, config.masking, config.dynamic_masking)
    except masking_lib.MaskingError as e:
        raise TrainError(str(e)) from None
    return manifest, masking


def _backbone(config: TrainConfig, manifest: dict, found: list) -> dict:
    """The model's BertBackbone arguments: a resumed run's own, else from --model and the data."""
    if found:
        config_path = os.path.join(config.output_dir, MODEL_CONFIG)
        try:
            with open(config_path) as f:
                backbone = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise TrainError(
                f"{config.output_dir} has checkpoints but no readable {MODEL_CONFIG}: {e}"
            ) from None
        print(f"resuming: the model is the one in {config_path} (--model is not used)")
        trained = backbone.get("objective", "mlm")
        if trained != config.objective:
            raise TrainError(
                f"the model in {config.output_dir} was trained with --objective {trained}, "
                f"not {config.objective}"
            )
        return backbone
    try:
        backbone = model_lib.backbone_config(
            config.model,
            vocabulary_size=manifest["tokenizer"]["vocab_size"],
            max_sequence_length=manifest["config"]["max_seq_length"],
        )
        if config.objective == "electra":
            backbone.update(objective="electra", generator_fraction=config.generator_fraction)
            electra.generator_config(backbone, config.generator_fraction)  # checks it can be built
    except (model_lib.ModelConfigError, electra.ElectraConfigError) as e:
        raise TrainError(str(e)) from None
    return backbone


def _compiled_model(config: TrainConfig, backbone: dict, found: list, on_gpu: bool, manifest: dict):
    """(model, history so far): built and compiled in the strategy's scope, restored where resuming."""
    model = model_lib.build(backbone, pairs=data.has_pairs(manifest), packed=data.is_packed(manifest))
    learning_rate = config.learning_rate or model_lib.default_learning_rate(backbone)
    warmup = (
        round(config.warmup_fraction * config.steps) if config.warmup_steps is None else config.warmup_steps
    )
    print(f"peak learning rate {learning_rate:g}, warmup {warmup} of {config.steps} steps")
    model_lib.compile_for_pretraining(
        model,
        learning_rate=learning_rate,
        warmup_steps=warmup,
        total_steps=config.steps,
        weight_decay=config.weight_decay,
        clipnorm=config.clipnorm,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        jit_compile=on_gpu,
    )
    history = []
    if found:
        step, path = found[-1]
        restore_checkpoint(model, path)
        history_path = os.path.join(config.output_dir, HISTORY)
        if os.path.exists(history_path):
            with open(history_path) as f:
                history = [h for h in json.load(f) if h["step"] <= step]
        print(f"resuming from {path} at step {step}")
    return model, history


def intervals(step: int, steps: int, every: int) -> list[tuple[int, int]]:
    """(first, last) step of each stretch of training from ``step``: evaluations and checkpoints come
    every ``every`` steps and at the last one."""
    ends = [*range((step // every + 1) * every, steps, every), steps]
    return list(zip([step, *ends[:-1]], ends)) if step < steps else []


def train_dataset(config: TrainConfig, manifest: dict, start: int, masking: MaskingConfig | None):
    """The batches of the stretch that starts at step ``start``: shuffled by a seed of that step, so a run
    resumed from a checkpoint sees the very batches the uninterrupted run would have seen."""
    return data.make_dataset(
        config.data_dir,
        "train",
        batch_size=config.batch_size,
        manifest=manifest,
        seed=config.seed + start,
        masking=masking,
        objective=config.objective,
    )


def _eval_dataset(config: TrainConfig, manifest: dict, masking: MaskingConfig | None):
    """(eval, eval batches): eval on the validation split, else on the first batches of train. Unmasked
    data is masked with the training's rules, the same way at every evaluation (the trainer's seed)."""
    eval_split = "validation" if data.shard_paths(config.data_dir, manifest, "validation") else "train"
    if eval_split == "train":
        print("no validation split in the data: evaluating on the first batches of train")
    eval_ds = data.make_dataset(
        config.data_dir,
        eval_split,
        batch_size=config.batch_size,
        manifest=manifest,
        training=False,
        seed=config.seed,
        masking=masking if data.is_unmasked(manifest) else None,
        objective=config.objective,
    )
    eval_batches = config.eval_batches or (
        math.ceil(manifest["counts"]["splits"]["validation"]["sequences"] / config.batch_size)
        if eval_split == "validation"
        else 20
    )
    return eval_ds, eval_batches


def train(config: TrainConfig, callbacks=()) -> list[dict]:
    """Trains (or resumes) to ``config.steps``; returns the history entries."""
    manifest, masking = _check_data(config)
    strategy, on_gpu = device_setup()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise TrainError(
            f"--batch_size {config.batch_size} is not divisible by {strategy.num_replicas_in_sync} GPUs"
        )
    os.makedirs(config.output_dir, exist_ok=True)
    keras.utils.set_random_seed(config.seed)  # the model's initial weights and dropout: the same each run
    saved_manifest_path = os.path.join(config.output_dir, manifest_lib.MANIFEST)
    saved_manifest = json.load(open(saved_manifest_path)) if os.path.exists(saved_manifest_path) else None
    found = checkpoints(config.output_dir)
    backbone = _backbone(config, manifest, found)
    _check_model_matches(backbone, manifest, saved_manifest)
    with strategy.scope():
        model, history = _compiled_model(config, backbone, found, on_gpu, manifest)
    with open(os.path.join(config.output_dir, MODEL_CONFIG), "w") as f:
        json.dump(backbone, f, indent=1)
    for name in (manifest_lib.MANIFEST, manifest["tokenizer"]["file"]):
        shutil.copyfile(os.path.join(config.data_dir, name), os.path.join(config.output_dir, name))

    step = int(model.optimizer.iterations)
    if step >= config.steps or (history and "stopped_early" in history[-1]):
        print(f"already trained to step {step}")
        return history
    eval_ds, eval_batches = _eval_dataset(config, manifest, masking)
    baseline = unigram_loss(eval_ds, eval_batches)
    if step == 0:  # where training starts from, for history.json
        scores = model.evaluate(eval_ds, steps=eval_batches, return_dict=True, verbose=0)
        history.append(_history_entry(0, scores, baseline, prefix=""))
    all_callbacks = [
        *callbacks,
        _Throughput(config.batch_size),
        _CheckpointAndHistory(config.output_dir, history, baseline, config.early_stopping_patience),
        keras.callbacks.TensorBoard(os.path.join(config.output_dir, "logs"), update_freq=50),
    ]
    for start, end in intervals(step, config.steps, config.checkpoint_every):
        epoch = -(-start // config.checkpoint_every)  # the stretch's number, for the logs
        model.fit(
            train_dataset(config, manifest, start, masking),
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=end - start,
            validation_data=eval_ds,
            validation_steps=eval_batches,
            callbacks=all_callbacks,
            verbose=2 if os.environ.get("CI") else "auto",
        )
        if model.stop_training:  # a callback stopped it
            break
    if history and "stopped_early" in history[-1]:  # the best model is the final one
        stopped = history[-1]["stopped_early"]
        best = dict(checkpoints(config.output_dir))[stopped["best_step"]]
        restore_checkpoint(model, best)
        model.save(os.path.join(config.output_dir, FINAL_MODEL))
        print(f"stopped early at step {stopped['step']}: {stopped['reason']}")
    elif int(model.optimizer.iterations) >= config.steps:
        model.save(os.path.join(config.output_dir, FINAL_MODEL))
    return history


def main(argv):
    run(flags.parse("train", argv))


def run(args):
    """``mlmprep train`` with its parsed flags (``flags.train_parser``)."""
    from mlmprep.pipeline.errors import UsageError

    if args.early_stopping_patience is not None and args.early_stopping_patience < 1:
        raise UsageError(f"--early_stopping_patience must be at least 1, got {args.early_stopping_patience}")
    for name, low, high in (("warmup_fraction", 0, 1), ("adam_beta2", 0, 1)):
        if not low <= getattr(args, name) < high:
            raise UsageError(f"--{name} must be in [{low}, {high}), got {getattr(args, name)}")
    if args.adam_epsilon <= 0:
        raise UsageError(f"--adam_epsilon must be positive, got {args.adam_epsilon}")
    config = TrainConfig(
        data_dir=args.data,
        output_dir=args.output,
        model=args.model,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        warmup_fraction=args.warmup_fraction,
        weight_decay=args.weight_decay,
        adam_beta2=args.adam_beta2,
        adam_epsilon=args.adam_epsilon,
        checkpoint_every=args.checkpoint_every,
        eval_batches=args.eval_batches,
        dynamic_masking=args.dynamic_masking,
        masking={name: getattr(args, name) for name in masking_lib.FIELDS},
        objective=args.objective,
        generator_fraction=args.generator_fraction,
        seed=args.seed,
        early_stopping_patience=args.early_stopping_patience,
        recipe=args.recipe,
    )
    try:
        history = train(config)
    except TrainError as e:
        raise UsageError(str(e)) from None
    if history:
        last = history[-1]
        baseline = last.get("val_unigram_loss")
        print(
            f"step {last['step']}: val_loss {last['val_loss']:.4f}"
            + (f" (a unigram model's: {baseline:.4f})" if baseline is not None else "")
            + f", val_masked_accuracy {last['val_masked_accuracy']:.4f}"
            + (
                f", val_discriminator_auc {last['val_discriminator_auc']:.4f}"
                if "val_discriminator_auc" in last
                else ""
            )
            + (f", val_pair_accuracy {last['val_pair_accuracy']:.4f}" if "val_pair_accuracy" in last else "")
        )
