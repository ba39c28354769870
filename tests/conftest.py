"""Shared fixtures: the real data beside the repo, and a helper to run the job."""

import json
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
VOCAB_DIR = DATA / "vocab" / "bert-base-uncased"
CORPORA = DATA / "corpora"


def pytest_collection_modifyitems(config, items):
    if not DATA.is_dir():
        skip = pytest.mark.skip(reason=f"shared data not found at {DATA}")
        for item in items:
            if "real_data" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_data():
    return DATA


@pytest.fixture(scope="session")
def bert_vocab(real_data):
    return str(VOCAB_DIR / "vocab.txt")


@pytest.fixture(scope="session")
def bert_tokenizer_json(real_data):
    return str(VOCAB_DIR / "tokenizer.json")


# The trainer's corpus: KJV with a 2,000-token tokenizer trained by the project.
KJV_SEQ, KJV_PREDICTIONS, KJV_VOCAB = 64, 10, 2000


@pytest.fixture(scope="session")
def kjv_data(tmp_path_factory, real_data):
    """KJV through the pipeline with a 2,000-token tokenizer trained by the project."""
    from mlmprep.pipeline import train_tokenizer

    root = tmp_path_factory.mktemp("kjv")
    corpus = real_data / "corpora" / "small" / "kjv.txt"
    tokenizer = train_tokenizer.train([str(corpus)], vocab_size=KJV_VOCAB)
    tokenizer.save(str(root / "tokenizer.json"))
    run_job(
        root / "data",
        f"--input={corpus}",
        f"--tokenizer={root / 'tokenizer.json'}",
        "--validation_fraction=0.05",
        f"--max_seq_length={KJV_SEQ}",
        f"--max_predictions_per_seq={KJV_PREDICTIONS}",
        "--num_shards=4",
    )
    return root / "data"


@pytest.fixture(scope="session")
def trained(kjv_data, tmp_path_factory):
    """A tiny model trained 400 steps on ``kjv_data`` (shared by the trainer's and the export's tests)."""
    from mlmprep.trainer.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "model"
    config = TrainConfig(
        data_dir=str(kjv_data),
        output_dir=str(out),
        steps=400,
        checkpoint_every=100,
        learning_rate=2e-3,
        warmup_steps=100,
        batch_size=32,
    )
    return out, train(config)


@pytest.fixture(scope="session")
def pairs_trained(tmp_path_factory, real_data):
    """A tiny model with BERT's pair head, trained 200 steps on NSP pairs of English and Russian text
    (the first 400 KB of KJV and of the Russian fortunes): (model folder, history)."""
    from mlmprep.pipeline import train_tokenizer
    from mlmprep.trainer.train import TrainConfig, train

    root = tmp_path_factory.mktemp("pairs")
    inputs = []
    for name in ("small/kjv.txt", "bench/fortunes_ru.txt"):
        path = root / name.replace("/", "-")
        path.write_bytes((CORPORA / name).read_bytes()[:400_000].rsplit(b"\n", 1)[0] + b"\n")
        inputs.append(str(path))
    tokenizer = train_tokenizer.train(inputs, vocab_size=KJV_VOCAB)
    tokenizer.save(str(root / "tokenizer.json"))
    run_job(
        root / "data",
        *(f"--input={path}" for path in inputs),
        f"--tokenizer={root / 'tokenizer.json'}",
        "--sentence_pairs=nsp",
        "--validation_fraction=0.2",
        f"--max_seq_length={KJV_SEQ}",
        f"--max_predictions_per_seq={KJV_PREDICTIONS}",
        "--num_shards=2",
    )
    out = root / "model"
    return out, train(
        TrainConfig(data_dir=str(root / "data"), output_dir=str(out), steps=200, checkpoint_every=100)
    )


def run_job(output, *args, **flags):
    """Runs ``mlmprep run`` in process; returns the manifest dict."""
    from mlmprep.pipeline import job

    argv = [f"--output={output}", *args] + [f"--{k}={v}" for k, v in flags.items()]
    job.run(argv)
    return json.loads((pathlib.Path(output) / "manifest.json").read_text())


def shard_files(output, fmt):
    return sorted(p for p in os.listdir(output) if p.endswith("." + fmt))


def bert_feature_spec(max_seq_length, max_predictions_per_seq):
    """The feature spec of the original BERT run_pretraining.py input_fn_builder."""
    import tensorflow as tf

    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
