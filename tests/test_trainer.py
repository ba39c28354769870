"""The Keras trainer on CPU: learning, resuming, refusing mismatched data, fill-mask, dynamic masking."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import KJV_PREDICTIONS as PRED
from conftest import KJV_SEQ as SEQ
from conftest import KJV_VOCAB as VOCAB
from conftest import run_job

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("keras_hub")

from mlmprep.trainer import data as data_lib  # noqa: E402
from mlmprep.trainer.checkpoints import checkpoints  # noqa: E402
from mlmprep.trainer.fill_mask import fill_mask, load  # noqa: E402
from mlmprep.trainer.masking import MaskingError, resolve  # noqa: E402
from mlmprep.trainer.train import TrainConfig, TrainError, intervals, train, train_dataset  # noqa: E402
from mlmprep.transforms import decode  # noqa: E402


def _masked_ids(data_dir, split):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    out = []
    for shard in manifest["shards"]:
        if shard["split"] == split and shard["format"] == "tfrecord":
            for record in decode.read_tfrecords((data_dir / shard["file"]).read_bytes()):
                example = decode.parse_example(record)
                out.append(example["masked_lm_ids"][: int(example["masked_lm_weights"].sum())])
    return np.concatenate(out)


def unigram_cross_entropy(data_dir) -> float:
    """Loss of predicting every masked token from the train split's unigram distribution."""
    train_ids, val_ids = _masked_ids(data_dir, "train"), _masked_ids(data_dir, "validation")
    counts = np.bincount(train_ids, minlength=VOCAB) + 1.0  # add-one: no zero probabilities
    return float(-np.mean(np.log(counts[val_ids] / counts.sum())))


@pytest.mark.slow
def test_validation_loss_falls_well_below_start_and_unigram_baseline(trained, kjv_data):
    out, history = trained
    assert [h["step"] for h in history] == [0, 100, 200, 300, 400]
    start, end = history[0]["val_loss"], history[-1]["val_loss"]
    baseline = unigram_cross_entropy(kjv_data)
    print(f"val loss {start:.3f} -> {end:.3f}; unigram baseline {baseline:.3f}")
    assert abs(start - math.log(VOCAB)) < 0.5  # an untrained model is near uniform
    assert end < start - 1.5
    assert end < baseline - 0.15
    assert history[-1]["val_masked_accuracy"] > history[0]["val_masked_accuracy"]
    assert history[-1]["val_perplexity"] == pytest.approx(math.exp(end))
    on_disk = json.loads((out / "history.json").read_text())
    assert on_disk == history
    assert set(on_disk[1]) == {
        "step", "train_loss", "val_loss", "val_masked_accuracy", "val_perplexity", "val_unigram_loss"
    }  # fmt: skip
    # The baseline printed beside the loss: the entropy of the evaluated labels, counted here by hand.
    counts = np.bincount(_masked_ids(kjv_data, "validation"))
    p = counts[counts > 0] / counts.sum()
    assert on_disk[-1]["val_unigram_loss"] == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-9)
    for name in ("model.keras", "tokenizer.json", "manifest.json"):
        assert (out / name).exists()
    assert list((out / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs"


@pytest.mark.slow
def test_fill_mask_top_k(trained):
    out, _ = trained
    model, tokenizer, manifest = load(str(out))
    (candidates,) = fill_mask(
        model, tokenizer, "and god said , let there be [MASK]", top_k=5, max_seq_length=SEQ
    )
    assert len(candidates) == 5
    probabilities = [p for _, p in candidates]
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6
    assert probabilities == sorted(probabilities, reverse=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "fill-mask",
            f"--model={out}",
            "the [MASK] of the lord",
            "--top_k=3",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n  ") == 3
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "fill-mask", f"--model={out}", "no mask here"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no [MASK]" in done.stderr


class _StopAt(keras.callbacks.Callback):
    """Simulates an interruption: stops training once `step` is reached."""

    def __init__(self, step):
        super().__init__()
        self._step = step

    def on_epoch_end(self, epoch, logs=None):
        if int(self.model.optimizer.iterations) >= self._step:
            self.model.stop_training = True


class _Record(keras.callbacks.Callback):
    """The optimizer's step and state where training begins and where it ends."""

    def on_train_begin(self, logs=None):
        self.first_step = int(self.model.optimizer.iterations)
        self.first = [np.array(v) for v in self.model.optimizer.variables]

    def on_train_end(self, logs=None):
        self.last_step = int(self.model.optimizer.iterations)
        self.last = [np.array(v) for v in self.model.optimizer.variables]


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint_with_its_optimizer_state(kjv_data, tmp_path):
    config = TrainConfig(
        data_dir=str(kjv_data), output_dir=str(tmp_path / "m"), steps=40, checkpoint_every=20, warmup_steps=5
    )
    interrupted = _Record()
    train(config, callbacks=[_StopAt(20), interrupted])
    assert interrupted.last_step == 20
    assert not (tmp_path / "m" / "model.keras").exists()
    resumed = _Record()
    history = train(config, callbacks=[resumed])
    assert resumed.first_step == 20
    assert len(resumed.first) == len(interrupted.last) > 10  # step, and two moments per weight
    for got, want in zip(resumed.first, interrupted.last):
        np.testing.assert_array_equal(got, want)
    assert resumed.last_step == 40
    assert [h["step"] for h in history] == [0, 20, 40]
    assert (tmp_path / "m" / "model.keras").exists()


@pytest.mark.slow
def test_any_number_of_steps_evaluates_at_the_last_and_a_resumed_run_sees_the_same_batches(
    kjv_data, tmp_path
):
    def config(out, steps):
        return TrainConfig(
            data_dir=str(kjv_data), output_dir=str(tmp_path / out), steps=steps, checkpoint_every=20
        )

    assert intervals(0, 30, 20) == [(0, 20), (20, 30)] and intervals(30, 45, 20) == [(30, 40), (40, 45)]
    assert [h["step"] for h in train(config("whole", 30))] == [0, 20, 30]
    assert [step for step, _ in checkpoints(str(tmp_path / "whole"))] == [20, 30]
    assert (tmp_path / "whole" / "model.keras").exists()
    # Further, from a last step that is not a multiple of --checkpoint_every.
    assert [h["step"] for h in train(config("whole", 45))] == [0, 20, 30, 40, 45]
    # A stretch's batches depend on where it starts only: a run resumed at 20 gets the batches the
    # uninterrupted run got after its checkpoint at 20.
    manifest = data_lib.read_manifest(str(kjv_data))

    def first_batch(start):
        ((inputs, labels, _),) = train_dataset(config("any", 30), manifest, start, None).take(1)
        return inputs["token_ids"].numpy(), labels.numpy()

    for a, b in zip(first_batch(20), first_batch(20)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first_batch(20)[0], first_batch(40)[0])


@pytest.mark.slow
def test_data_that_does_not_match_the_model_is_refused(kjv_data, trained, tmp_path, real_data, bert_vocab):
    other = tmp_path / "other"
    run_job(
        other,
        f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_en.txt'}",
        f"--tokenizer={bert_vocab}",
        f"--max_seq_length={SEQ}",
        "--num_shards=1",
    )
    out, _ = trained
    config = TrainConfig(data_dir=str(other), output_dir=str(out), steps=800, checkpoint_every=100)
    with pytest.raises(TrainError, match="vocabulary has 2000 tokens, the data's 30522"):
        train(config)
    bad = tmp_path / "config.json"
    bad.write_text(
        json.dumps(
            {"num_layers": 1, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16, "vocabulary_size": 99}
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "train",
            f"--data={kjv_data}",
            f"--output={tmp_path / 'x'}",
            f"--model={bad}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "vocabulary_size 99" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_dynamic_masking_keeps_the_pipeline_invariants(kjv_data):
    special = {0, 1, 2, 3, 4}  # the trained tokenizer's [PAD] [UNK] [CLS] [SEP] [MASK]
    stored = data_lib.make_dataset(str(kjv_data), "train", batch_size=256, training=False, model_inputs=False)
    masking = resolve(data_lib.read_manifest(str(kjv_data)), {}, dynamic=True)
    remasked = data_lib.make_dataset(
        str(kjv_data), "train", batch_size=256, training=False, model_inputs=False, masking=masking
    )
    outcomes = {"mask": 0, "random": 0, "same": 0}
    changed = rows = 0
    for a, b in zip(stored.take(12), remasked.take(12)):
        a, b = ({k: v.numpy() for k, v in x.items()} for x in (a, b))
        for i in range(len(a["input_ids"])):
            n = int(a["input_mask"][i].sum())
            original = a["input_ids"][i].copy()
            k0 = int(a["masked_lm_weights"][i].sum())
            original[a["masked_lm_positions"][i, :k0]] = a["masked_lm_ids"][i, :k0]
            k = int(b["masked_lm_weights"][i].sum())
            positions, ids = b["masked_lm_positions"][i, :k], b["masked_lm_ids"][i, :k]
            assert k == min(PRED, max(1, round(n * 0.15)))
            np.testing.assert_array_equal(ids, original[positions])  # labels are the true tokens
            assert not special & set(ids.tolist())
            untouched = np.ones(SEQ, bool)
            untouched[positions] = False
            np.testing.assert_array_equal(b["input_ids"][i][untouched], original[untouched])
            after = b["input_ids"][i][positions]
            outcomes["mask"] += int(np.sum(after == 4))
            outcomes["same"] += int(np.sum(after == ids))
            outcomes["random"] += int(np.sum((after != 4) & (after != ids)))
            assert not special & set(after[after != 4].tolist())
            changed += not np.array_equal(np.sort(positions), np.sort(a["masked_lm_positions"][i, :k0]))
            rows += 1
    total = sum(outcomes.values())
    assert rows == 12 * 256 and total > 20000
    assert abs(outcomes["mask"] / total - 0.8) < 0.015
    assert abs(outcomes["random"] / total - 0.1) < 0.012
    assert abs(outcomes["same"] / total - 0.1) < 0.012
    assert changed / rows > 0.95, "a new mask, not the stored one"


def test_data_the_trainer_cannot_use_is_refused(tmp_path, real_data, bert_vocab):
    corpus = real_data / "corpora" / "tiny" / "fortunes_en.txt"
    parquet_only = tmp_path / "pq"
    run_job(parquet_only, f"--input={corpus}", f"--tokenizer={bert_vocab}", "--formats=parquet")
    with pytest.raises(TrainError, match="no TFRecord train shards"):
        train(
            TrainConfig(
                data_dir=str(parquet_only), output_dir=str(tmp_path / "m1"), steps=10, checkpoint_every=10
            )
        )
    whole_words = tmp_path / "wwm"
    run_job(whole_words, f"--input={corpus}", f"--tokenizer={bert_vocab}", "--whole_word_masking")
    with pytest.raises(MaskingError, match="needs word starts, which masked shards do not keep"):
        train(
            TrainConfig(
                data_dir=str(whole_words),
                output_dir=str(tmp_path / "m2"),
                steps=10,
                checkpoint_every=10,
                dynamic_masking=True,
            )
        )
    with pytest.raises(data_lib.DataError, match="no manifest.json"):
        train(
            TrainConfig(
                data_dir=str(tmp_path), output_dir=str(tmp_path / "m3"), steps=10, checkpoint_every=10
            )
        )


@pytest.mark.slow
def test_on_sentence_pairs_the_pair_head_learns_beside_the_masked_lm(pairs_trained):
    out, history = pairs_trained
    assert [h["step"] for h in history] == [0, 100, 200]
    start, end = history[0], history[-1]
    print(f"val_pair_accuracy {start['val_pair_accuracy']:.3f} -> {end['val_pair_accuracy']:.3f}")
    assert abs(start["val_pair_accuracy"] - 0.5) < 0.1  # an untrained head is at chance
    # About 1,600 validation pairs: chance would stay within 0.05 of one half (4 sigma).
    assert end["val_pair_accuracy"] > 0.65 and end["val_pair_loss"] < start["val_pair_loss"] - 0.1
    assert end["val_loss"] < end["val_unigram_loss"]  # the masked LM learns too
    model, tokenizer, manifest = load(str(out))
    assert type(model).__name__ == "BertPretrainer"
    (candidates,) = fill_mask(
        model, tokenizer, "and god said , let there be [MASK]", top_k=3, max_seq_length=SEQ
    )
    assert len(candidates) == 3


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint_of_a_run_made_to_overfit(tmp_path, real_data):
    """A tiny model on 30 KJV chapters with a high learning rate overfits within a few hundred steps."""
    import keras

    from mlmprep.pipeline import train_tokenizer

    corpus = real_data / "corpora" / "tiny" / "kjv.txt"
    tokenizer = train_tokenizer.train([str(corpus)], vocab_size=1000)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    run_job(
        tmp_path / "data", f"--input={corpus}", f"--tokenizer={tmp_path / 'tokenizer.json'}",
        "--max_seq_length=64", "--validation_fraction=0.3", "--num_shards=1", "--random_seed=3",
    )  # fmt: skip
    out = tmp_path / "model"
    config = TrainConfig(
        data_dir=str(tmp_path / "data"), output_dir=str(out), steps=2000, checkpoint_every=25,
        batch_size=16, learning_rate=5e-3, warmup_steps=10, early_stopping_patience=3,
    )  # fmt: skip
    history = train(config)
    stopped = history[-1]["stopped_early"]
    best = min((h for h in history if h["step"] > 0), key=lambda h: h["val_loss"])
    assert stopped["best_step"] == best["step"] and stopped["step"] == history[-1]["step"] < 2000
    assert [h["step"] for h in history if h["step"] > best["step"]] == [
        best["step"] + 25 * k for k in (1, 2, 3)
    ]
    assert all(h["val_loss"] >= best["val_loss"] for h in history if h["step"] > best["step"])
    print(f"early stopping: best val_loss {best['val_loss']:.3f} at step {best['step']}; {stopped['reason']}")
    written = json.loads((out / "history.json").read_text())
    assert written[-1]["stopped_early"] == stopped
    # The final model is the best checkpoint's.
    final = keras.saving.load_model(out / "model.keras", compile=False)
    kept = dict(checkpoints(str(out)))
    assert best["step"] in kept
    from mlmprep.trainer import model as model_lib

    with open(out / "config.json") as f:
        at_best = model_lib.build(json.load(f))
    at_best.load_weights(kept[best["step"]], skip_mismatch=True)
    np.testing.assert_array_equal(
        final.backbone.token_embedding.embeddings.numpy(), at_best.backbone.token_embedding.embeddings.numpy()
    )
    assert train(config) == history  # a rerun sees that it stopped
