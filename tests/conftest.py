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
