"""``mlmprep train``: trains a BERT masked LM on an mlmprep output (and, on sentence pairs, its pair head).

On a GPU it switches on bfloat16 mixed precision and XLA, and spreads the
global batch over every GPU with a MirroredStrategy; on a CPU the same code
runs in float32 without XLA. Checkpoints (model and optimizer state) are
written every ``--checkpoint_every`` steps, after an evaluation on the
validation split; a rerun of the same command resumes from the last one.
``--init_from`` starts a new run (a new phase) from the weights of a model
another run wrote, with a fresh optimizer and schedule.
"""

import dataclasses
import json
import math
import os
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.trainer import data, electra
from mlmprep.trainer import flags as flags_lib
from mlmprep.trainer import masking as masking_lib
from mlmprep.trainer import model as model_lib
from mlmprep.trainer.checkpoints import (
    CheckpointAndHistory,
    Throughput,
    history_entry,
    restore_checkpoint,
    unigram_loss,
)
from mlmprep.trainer.flags import INIT_RECORD, WARMUP_FRACTION
from mlmprep.trainer.model import TrainError
from mlmprep.trainer.model_dir import FINAL_MODEL, HISTORY, MODEL_CONFIG, checkpoints
from mlmprep.transforms.mask import MaskingConfig

# Without sentence pairs, BertBackbone's pooler feeds no output; Keras warns that it gets no gradient.
warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooled_dense")


@dataclasses.dataclass
class TrainConfig:
    data_dir: str
    output_dir: str
    model: str = "tiny"  # not used with init_from: the model is that folder's
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
    init_from: str | None = None  # a model folder whose weights the run starts from (not its optimizer's)


def device_setup():
    """(strategy, jit_compile): mixed precision and XLA where there is a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    # TensorFlow's own device log is off (the CLI's TF_CPP_MIN_LOG_LEVEL): this line says where training runs.
    print(f"training on {len(gpus)} GPU(s), bfloat16 and XLA" if gpus else "training on the CPU (no GPU)")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, bool(gpus)


def _check_model_matches(backbone: dict, manifest: dict, saved_manifest: dict | None):
    vocab = manifest["tokenizer"]["vocab_size"]
    seq = manifest_lib.settings(manifest).packing.max_seq_length
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
        before = manifest_lib.settings(saved_manifest).pairs.mode
        now = manifest_lib.settings(manifest).pairs.mode
        raise TrainError(
            f"the model was trained on --sentence_pairs {before} data, this data is --sentence_pairs {now}"
        )


def _check_data(config: TrainConfig) -> tuple[dict, MaskingConfig | None]:
    """The data's manifest and the masking of training batches (``masking.resolve``), once the data and
    the flags are known to suit each other."""
    if config.steps < 1 or config.checkpoint_every < 1:
        raise TrainError(
            f"--steps ({config.steps}) and --checkpoint_every ({config.checkpoint_every}) must be positive"
        )
    manifest = data.read_manifest(config.data_dir)
    if not data.shard_paths(config.data_dir, manifest, "train"):
        raise TrainError(
            f"{config.data_dir} has no TFRecord train shards (the trainer reads TFRecord: "
            "run mlmprep with --formats tfrecord or tfrecord,parquet)"
        )
    return manifest, masking_lib.resolve(manifest, config.masking, config.dynamic_masking)


def _backbone(config: TrainConfig, manifest: dict, found: list) -> dict:
    """The model's ``Encoder`` arguments: a resumed run's own, else from --model and the data."""
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
    backbone = model_lib.backbone_config(
        config.model,
        vocabulary_size=manifest["tokenizer"]["vocab_size"],
        max_sequence_length=manifest_lib.settings(manifest).packing.max_seq_length,
    )
    if config.objective == "electra":
        backbone.update(objective="electra", generator_fraction=config.generator_fraction)
    return backbone


def _init_backbone(init: flags_lib.InitFrom, manifest: dict) -> dict:
    """The model's ``Encoder`` arguments where ``--init_from`` starts the run: the model folder's, its
    position embeddings grown to the data's sequence length where that is longer."""
    backbone = dict(init.backbone)
    rows, seq = backbone["max_sequence_length"], manifest_lib.settings(manifest).packing.max_seq_length
    at = f" (step {init.step})" if init.step is not None else ""
    print(
        f"starting from the model in {init.model_dir}{at}: its weights, a new optimizer, the learning-rate "
        "schedule from step 0 (--model is not used)"
    )
    if seq > rows:
        print(
            f"the data's sequences are {seq} tokens, the model's position embeddings {rows}: they grow to "
            f"{seq} rows, rows {rows} to {seq - 1} initialised as a new model's (learned in this run)"
        )
        backbone["max_sequence_length"] = seq
    return backbone


def _grows(source, target) -> bool:
    """Whether ``target`` is ``source``'s position table with more rows (``_init_backbone``)."""
    return (
        source.path.endswith("position_embedding/embeddings")
        and tuple(source.shape[1:]) == tuple(target.shape[1:])
        and target.shape[0] > source.shape[0]
    )


def load_init_weights(model, init: flags_lib.InitFrom) -> None:
    """Sets every weight of ``model`` (built and compiled, its optimizer untouched) to its value in the
    model ``--init_from`` names: the encoder, the masked-LM head (and a pair head, an ELECTRA model's
    generator and discriminator); a grown position table gets the old rows and keeps its new ones."""
    with warnings.catch_warnings():  # that it skips the saved optimizer's variables: so it should
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        source = keras.saving.load_model(os.path.join(init.model_dir, FINAL_MODEL), compile=False)
    # The two are built by the same code from the same config but for the table's rows and a packed
    # model's (weightless) attention mask: their weights come in the same order, under the same paths
    # (ELECTRA's generator and discriminator repeat theirs: the order tells them apart).
    if [w.path for w in source.weights] != [w.path for w in model.weights]:
        raise TrainError(
            f"the model in {init.model_dir} does not have the weights of the one this run builds"
        )
    for before, now in zip(source.weights, model.weights):
        value = keras.ops.convert_to_numpy(before)
        if tuple(before.shape) != tuple(now.shape):
            if not _grows(before, now):
                raise TrainError(
                    f"the model in {init.model_dir} has {before.path} of shape {tuple(before.shape)}, this "
                    f"run's model {tuple(now.shape)}"
                )
            value = np.concatenate([value, keras.ops.convert_to_numpy(now)[len(value) :]])
        now.assign(value)


def _record_start(config: TrainConfig, init: flags_lib.InitFrom | None, backbone: dict) -> None:
    """Says in the model folder which model a new run started from (``flags.INIT_RECORD``), so that a rerun
    with the same --init_from resumes it; a run from fresh weights leaves none."""
    path = os.path.join(config.output_dir, INIT_RECORD)
    if init is None:
        if os.path.exists(path):
            os.remove(path)
        return
    record = {
        "init_from": os.path.realpath(init.model_dir),
        "step": init.step,
        "max_sequence_length": {
            "before": init.backbone["max_sequence_length"],
            "now": backbone["max_sequence_length"],
        },
    }
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


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
    init = None
    if config.init_from is not None:  # as mlmprep train checked it before TensorFlow loaded
        init = flags_lib.check_init_from(
            config.init_from, config.output_dir, config.data_dir, manifest, config.objective
        )
        if init.note:
            print(init.note)
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
    starts_from = init if init is not None and not found else None  # resumed, the checkpoint has it all
    if starts_from is not None:
        backbone = _init_backbone(starts_from, manifest)
    else:
        backbone = _backbone(config, manifest, found)
        if init is not None:
            print(
                f"this run began from --init_from {init.model_dir}: its checkpoints hold what it has learned"
            )
    _check_model_matches(backbone, manifest, saved_manifest)
    with strategy.scope():
        model, history = _compiled_model(config, backbone, found, on_gpu, manifest)
        if starts_from is not None:
            load_init_weights(model, starts_from)
    if not found:
        _record_start(config, starts_from, backbone)
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
        history.append(history_entry(0, scores, baseline, prefix=""))
    all_callbacks = [
        *callbacks,
        Throughput(config.batch_size),
        CheckpointAndHistory(config.output_dir, history, baseline, config.early_stopping_patience),
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
            shuffle=False,  # the dataset is shuffled by its seed (Keras would warn that it ignores True)
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


def run(args):
    """``mlmprep train`` with its parsed flags (``flags.train_parser``)."""
    given = vars(args)
    # The flags are TrainConfig's fields by name, but for the folders' and the masking's (one dict).
    named = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig) if f.name in given}
    named["masking"] = {name: given[name] for name in masking_lib.FIELDS}
    config = TrainConfig(**named, data_dir=args.data, output_dir=args.output)
    history = train(config)
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
