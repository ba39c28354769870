"""Training throughput and model FLOPs utilization of the trainer's BERT on one accelerator.

Runs the trainer's own model and compile recipe (keras-hub BertMaskedLM,
AdamW, BERT loss) on synthetic full-length batches, so the figure is the
model's, not the input pipeline's (bench/input_throughput.py measures that).
Works with any Keras backend: KERAS_BACKEND=tensorflow (the trainer's) or
jax. On a GPU: bfloat16 mixed precision and XLA, as the trainer sets them.

With ``--data OUT_DIR`` (an mlmprep output; its sequence length and
predictions replace --seq_len and --predictions) it also checks that the
trainer's tf.data reader is not the bottleneck: the reader alone, without a
model, and the same training steps fed by the reader instead of a batch held
in memory. The reader needs TensorFlow, whatever the Keras backend.

  python bench/model_throughput.py --model base --seq_len 128 --batch_size 256 [--data OUT_DIR]
"""

import argparse
import itertools
import os
import time

import keras
import numpy as np

from mlmprep.trainer import model as model_lib

# Dense bf16 tensor-core peaks, TFLOP/s, per the vendors' data sheets (SXM parts).
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def device_name() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    return backend


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak_tflops", type=float, default=None, help="Default: by device name.")
    parser.add_argument("--data", help="An mlmprep output: also time the steps fed by the tf.data reader.")
    args = parser.parse_args()
    if args.data:
        from mlmprep.pipeline import manifest as manifest_lib

        made = manifest_lib.settings(manifest_lib.read(args.data))
        args.seq_len, args.predictions = made.packing.max_seq_length, made.masking.max_predictions_per_seq

    name = device_name()
    on_accelerator = "CPU" not in name.upper() and name != "cpu"
    if on_accelerator:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = model_lib.backbone_config(
        args.model, vocabulary_size=args.vocab_size, max_sequence_length=args.seq_len
    )
    model = model_lib.build(config)
    model_lib.compile_for_pretraining(
        model, learning_rate=1e-4, warmup_steps=10, total_steps=10_000, jit_compile=on_accelerator
    )
    rng = np.random.default_rng(0)
    b, s, p = args.batch_size, args.seq_len, args.predictions
    x = {
        "token_ids": rng.integers(1000, args.vocab_size, (b, s)).astype("int32"),
        "padding_mask": np.ones((b, s), "int32"),
        "segment_ids": np.zeros((b, s), "int32"),
        "mask_positions": np.sort(rng.choice(np.arange(1, s - 1), (b, p)), axis=1).astype("int32"),
    }
    y = rng.integers(1000, args.vocab_size, (b, p)).astype("int32")
    w = np.ones((b, p), "float32")
    elapsed, loss = timed_steps(model, itertools.repeat((x, y, w)), args.warmup, args.steps)
    seq_per_s = args.steps * b / elapsed
    flops = model_lib.train_flops_per_sequence(config, s, p) * seq_per_s
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    policy = keras.mixed_precision.dtype_policy().name
    print(f"device: {name}; backend: {keras.backend.backend()}; policy: {policy}")
    print(
        f"model {args.model}: {model.count_params() / 1e6:.1f} M parameters, seq {s}, batch {b}, loss {loss}"
    )
    print(f"sequences/s: {seq_per_s:,.0f}  ({elapsed / args.steps * 1000:.1f} ms/step)")
    print(
        f"model TFLOP/s: {flops / 1e12:.1f}"
        + (f"  MFU: {flops / 1e12 / peak:.1%} of {peak} peak" if peak else "")
    )
    if args.data:
        check_reader(model, args, seq_per_s)


def timed_steps(model, batches, warmup: int, steps: int) -> tuple[float, object]:
    """Seconds of ``steps`` training steps after ``warmup`` (compilation, buffers filling), and the loss."""
    batches = iter(batches)
    for _ in range(warmup):
        x, y, w = next(batches)
        loss = model.train_on_batch(x, y, sample_weight=w)
    start = time.perf_counter()
    for _ in range(steps):
        x, y, w = next(batches)
        loss = model.train_on_batch(x, y, sample_weight=w)
    return time.perf_counter() - start, loss  # train_on_batch returns host values: the steps are done


def check_reader(model, args, held_seq_per_s: float) -> None:
    """The reader alone, then the model fed by it: the steps should run as fast as on a held batch."""
    from mlmprep.trainer import data

    def batches():
        dataset = data.make_dataset(args.data, "train", batch_size=args.batch_size).repeat()
        return dataset.as_numpy_iterator()

    reader, count = batches(), args.steps * 4
    for _ in range(args.warmup):
        next(reader)
    start = time.perf_counter()
    for _ in range(count):
        next(reader)
    reader_seq_per_s = count * args.batch_size / (time.perf_counter() - start)
    elapsed, _ = timed_steps(model, batches(), args.warmup, args.steps)
    fed_seq_per_s = args.steps * args.batch_size / elapsed
    share = fed_seq_per_s / held_seq_per_s
    print(f"tf.data reader alone: {reader_seq_per_s:,.0f} sequences/s "
          f"({reader_seq_per_s / held_seq_per_s:.1f}x what the model takes)")  # fmt: skip
    print(
        f"steps fed by the reader: {fed_seq_per_s:,.0f} sequences/s, {share:.0%} of a batch held in memory: "
        + ("the reader is not the bottleneck" if share >= 0.95 else "THE READER SLOWS TRAINING")
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
