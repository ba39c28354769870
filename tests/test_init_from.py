"""``mlmprep train --init_from``: a phase starts from the model the previous phase wrote, with its weights
and a fresh optimizer and schedule; the folders and data that cannot be started from are one line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_job

SEQ1, SEQ2 = 32, 64  # phase 2 is longer: its position embeddings grow
VOCAB = 1000


@pytest.fixture(scope="module")
def phases(tmp_path_factory, real_data):
    """Two phases of one tokenizer on 30 KJV chapters: ``phase1`` masked at 32 tokens, ``phase2`` unmasked
    (the trainer masks it, at the 0.3 its run says) and packed by best fit at 64."""
    from mlmprep.pipeline import train_tokenizer

    root = tmp_path_factory.mktemp("phases")
    corpus = real_data / "corpora" / "tiny" / "kjv.txt"
    train_tokenizer.train([str(corpus)], vocab_size=VOCAB).save(str(root / "tokenizer.json"))
    common = (f"--input={corpus}", f"--tokenizer={root / 'tokenizer.json'}", "--validation_fraction=0.2")
    run_job(root / "phase1", *common, f"--max_seq_length={SEQ1}", "--num_shards=1")
    run_job(
        root / "phase2", *common, f"--max_seq_length={SEQ2}", "--num_shards=1",
        "--masking=none", "--masked_lm_prob=0.3", "--packing=best_fit",
    )  # fmt: skip
    return root


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "train", *map(str, args)],
        capture_output=True,
        text=True,
    )


def _model_folder(folder, data, **config):
    """A folder as mlmprep train leaves it, trained on ``data`` (the checks before TensorFlow loads read
    its manifest, tokenizer and config, never the model's weights): ``model.keras`` or, with
    ``unfinished``, only a checkpoint."""
    unfinished = config.pop("unfinished", False)
    folder.mkdir()
    for name in ("manifest.json", "tokenizer.json"):
        shutil.copy(data / name, folder / name)
    shape = dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512)
    (folder / "config.json").write_text(
        json.dumps({**shape, "vocabulary_size": VOCAB, "max_sequence_length": SEQ1, **config})
    )
    if unfinished:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "ckpt-00000005.weights.h5").write_bytes(b"")
    else:
        (folder / "model.keras").write_bytes(b"")
    return folder


def test_what_cannot_be_started_from_is_one_line_and_exit_2(phases, tmp_path, real_data, bert_vocab):
    """Each mistake ends before TensorFlow loads: one line on stderr, exit status 2."""
    phase1, phase2 = phases / "phase1", phases / "phase2"
    model = _model_folder(tmp_path / "model", phase1)
    other_tokenizer = tmp_path / "bert-data"
    run_job(
        other_tokenizer, f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_en.txt'}",
        f"--tokenizer={bert_vocab}", f"--max_seq_length={SEQ2}", "--num_shards=1",
    )  # fmt: skip
    pairs = tmp_path / "pairs"
    run_job(
        pairs, f"--input={real_data / 'corpora' / 'tiny' / 'kjv.txt'}",
        f"--tokenizer={phases / 'tokenizer.json'}", f"--max_seq_length={SEQ2}", "--num_shards=1",
        "--sentence_pairs=nsp",
    )  # fmt: skip
    another_run = tmp_path / "another-run"
    (another_run / "checkpoints").mkdir(parents=True)
    (another_run / "checkpoints" / "ckpt-00000010.weights.h5").write_bytes(b"")
    out = tmp_path / "out"
    cases = [
        ((phase2, out, tmp_path / "nowhere"), f"--init_from {tmp_path / 'nowhere'}: no such folder"),
        ((phase2, out, phase1), "is not a model folder written by mlmprep train (no config.json)"),
        (
            (phase2, out, tmp_path / "empty"),
            "is not a model folder written by mlmprep train (no manifest.json)",
        ),
        (
            (phase2, out, _model_folder(tmp_path / "unfinished", phase1, unfinished=True)),
            "its run has not finished (checkpoints to step 5, no model.keras): rerun its mlmprep train",
        ),
        (
            (other_tokenizer, out, model),
            f"vocabulary is not --data's: the model's tokenizer is {model / 'tokenizer.json'} (from "
            f"{phases / 'tokenizer.json'}), 1,000 tokens, sha256 ",
        ),
        (
            (phase2, out, _model_folder(tmp_path / "electra", phase1, objective="electra")),
            "--objective electra",
        ),
        ((pairs, out, model), "trained on --sentence_pairs none data, --data"),
        ((phase2, another_run, model), "holds checkpoints of a run that started from fresh weights"),
        ((phase2, model, model), "is --output: a new phase writes a new folder"),
    ]
    (tmp_path / "empty").mkdir()
    for (data, output, init_from), message in cases:
        done = _cli(f"--data={data}", f"--output={output}", f"--init_from={init_from}")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert message in lines[0], lines[0]
    # The data's tokenizer is named too: its file, where it came from, its size.
    done = _cli(f"--data={other_tokenizer}", f"--output={out}", f"--init_from={model}")
    assert (
        f"the data's {other_tokenizer / 'tokenizer.json'} (from {bert_vocab}), 30,522 tokens" in done.stderr
    )
    # The model is the folder's: a --model or --generator_fraction beside it is a mistake.
    for flag in ("--model=base", "--generator_fraction=0.5"):
        done = _cli(f"--data={phase2}", f"--output={out}", f"--init_from={model}", flag)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"{flag.split('=')[0]} with --init_from" in done.stderr
    assert not out.exists(), "nothing is written"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # loading phase 1's model here
def test_phase_two_starts_from_phase_ones_model_with_a_fresh_optimizer_and_schedule(
    phases, tmp_path, monkeypatch
):
    keras = pytest.importorskip("keras")
    pytest.importorskip("keras_hub")
    from mlmprep.trainer import data as data_lib
    from mlmprep.trainer import model as model_lib
    from mlmprep.trainer.train import TrainConfig, train

    class Watch(keras.callbacks.Callback):
        """The weights and the optimizer where training begins, and the learning rate of its first step."""

        def __init__(self, stop_at=None):
            super().__init__()
            self.stop_at, self.first_step, self.learning_rates = stop_at, None, []

        def on_train_begin(self, logs=None):
            if self.first_step is None:  # the first stretch's fit
                self.first_step = int(self.model.optimizer.iterations)
                self.weights = [(w.path, np.array(w)) for w in self.model.weights]
                optimizer = self.model.optimizer
                self.moments = [np.array(v) for v in optimizer.variables if v is not optimizer.iterations]

        def on_train_batch_begin(self, batch, logs=None):
            if len(self.learning_rates) < 2:
                self.learning_rates.append(float(self.model.optimizer.learning_rate))

        def on_train_batch_end(self, batch, logs=None):
            if len(self.learning_rates) < 2:  # the rate the step after the first gets: the schedule's at 1
                self.learning_rates.append(float(self.model.optimizer.learning_rate))

        def on_epoch_end(self, epoch, logs=None):
            if self.stop_at and int(self.model.optimizer.iterations) >= self.stop_at:
                self.model.stop_training = True  # an interruption

    phase1 = tmp_path / "phase1"
    history1 = train(
        TrainConfig(
            data_dir=str(phases / "phase1"),
            output_dir=str(phase1),
            steps=4,
            checkpoint_every=4,
            batch_size=8,
            learning_rate=1e-3,
            warmup_steps=1,
            eval_batches=2,
        )
    )
    assert history1[-1]["step"] == 4
    final = keras.saving.load_model(phase1 / "model.keras", compile=False)

    masked_with = []  # the masking every dataset of the run is made with
    make_dataset = data_lib.make_dataset

    def recording(data_dir, split, **kwargs):
        masked_with.append(kwargs.get("masking"))
        return make_dataset(data_dir, split, **kwargs)

    monkeypatch.setattr(data_lib, "make_dataset", recording)
    phase2 = tmp_path / "phase2"
    config = TrainConfig(
        data_dir=str(phases / "phase2"), output_dir=str(phase2), steps=4, checkpoint_every=2,
        batch_size=8, learning_rate=1e-3, warmup_steps=4, eval_batches=2, init_from=str(phase1),
    )  # fmt: skip
    started = Watch(stop_at=2)
    train(config, callbacks=[started])

    # (a) Phase 2 starts from phase 1's final weights, every one of them, exactly; the position table
    # grows from 32 rows to 64, its new rows as a new model's (the run's seed).
    assert [path for path, _ in started.weights] == [w.path for w in final.weights]
    grown = 0
    for (path, got), want in zip(started.weights, final.weights):
        want = np.array(want)
        if path.endswith("position_embedding/embeddings"):
            assert got.shape == (SEQ2, 128) and want.shape == (SEQ1, 128)
            np.testing.assert_array_equal(got[:SEQ1], want)
            keras.utils.set_random_seed(config.seed)
            backbone = json.loads((phase2 / "config.json").read_text())
            fresh = model_lib.build(backbone, packed=True).backbone.position_embedding.weights[0]
            np.testing.assert_array_equal(got[SEQ1:], np.array(fresh)[SEQ1:])
            grown += 1
        else:
            np.testing.assert_array_equal(got, want, err_msg=path)
    assert grown == 1 and len(started.weights) == 44
    assert json.loads((phase2 / "config.json").read_text())["max_sequence_length"] == SEQ2
    assert json.loads((phase2 / "init_from.json").read_text()) == {
        "init_from": str(phase1.resolve()), "step": 4, "max_sequence_length": {"before": SEQ1, "now": SEQ2}
    }  # fmt: skip

    # (b) A fresh optimizer: step 0, no moments; the schedule from its start, phase 2's own: the first
    # step at the warmup's 0, the next at 1/4 of the peak (phase 1's schedule had decayed to 0 at 4).
    assert started.first_step == 0
    assert started.moments == []  # not even built: Adam's moments (88 here) start at 0 in the first step
    assert started.learning_rates == [0.0, pytest.approx(1e-3 / 4, rel=1e-6)]
    history = json.loads((phase2 / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 2]

    # The masking is phase 2's data's: unmasked shards masked at its run's 0.3, evaluation too.
    manifest = data_lib.read_manifest(str(phases / "phase2"))
    assert masked_with and all(
        m is not None
        and m.masked_lm_prob == 0.3
        and m.max_predictions_per_seq == manifest["settings"]["max_predictions_per_seq"]
        for m in masked_with
    )

    # Rerun as it was (--init_from and all): it resumes the interrupted phase 2 from its checkpoint, with
    # its optimizer state, and does not load phase 1's weights again.
    resumed = Watch()
    history = train(config, callbacks=[resumed])
    assert resumed.first_step == 2 and len(resumed.moments) == 2 * 44
    assert all(np.any(m) for m in resumed.moments[:2])  # the first weight's: learned in steps 1 and 2
    assert [h["step"] for h in history] == [0, 2, 4] and (phase2 / "model.keras").exists()
