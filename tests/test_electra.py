"""ELECTRA's replaced-token detection: it learns on CPU, trains from unmasked shards, and exports as two
Hugging Face models whose logits are the Keras model's."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_job

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras_hub")

from mlmprep.trainer import data as data_lib  # noqa: E402
from mlmprep.trainer.electra import ElectraPretrainer, generator_config  # noqa: E402
from mlmprep.trainer.train import TrainConfig, train  # noqa: E402

STEPS = 400


@pytest.fixture(scope="module")
def electra_trained(kjv_data, tmp_path_factory):
    """A tiny ELECTRA (a 128-wide discriminator, a 32-wide generator) trained on ``kjv_data``."""
    out = tmp_path_factory.mktemp("electra") / "model"
    config = TrainConfig(
        data_dir=str(kjv_data),
        output_dir=str(out),
        steps=STEPS,
        checkpoint_every=100,
        learning_rate=2e-3,
        warmup_steps=100,
        batch_size=32,
        objective="electra",
    )
    return out, train(config)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *args], capture_output=True, text=True
    )


def test_the_generator_is_a_fraction_of_the_discriminator():
    tiny = dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512)
    assert generator_config(tiny, 0.25) == dict(
        num_layers=2, num_heads=1, hidden_dim=32, intermediate_dim=128
    )
    base = dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072)
    assert generator_config(base, 1 / 3) == dict(
        num_layers=12, num_heads=4, hidden_dim=256, intermediate_dim=1024
    )


@pytest.mark.slow
def test_a_tiny_electra_learns_to_tell_replaced_tokens(electra_trained):
    out, history = electra_trained
    start, end = history[0], history[-1]
    print(
        "ELECTRA learning curve: "
        + "; ".join(
            f"step {h['step']}: AUC {h['val_discriminator_auc']:.3f}, "
            f"disc loss {h['val_discriminator_loss']:.3f}, gen loss {h['val_generator_loss']:.3f}"
            for h in history
        )
    )
    assert [h["step"] for h in history] == list(range(0, STEPS + 1, 100))
    for key in (
        "val_generator_loss",
        "val_discriminator_loss",
        "val_discriminator_accuracy",
        "val_discriminator_auc",
    ):
        assert all(key in h for h in history)
    # The generator learns the masked LM to about the unigram baseline, which makes its replacements
    # plausible: the discriminator must learn the context to tell them, and does, above chance and its start.
    assert end["val_generator_loss"] < min(start["val_generator_loss"] - 1.0, end["val_unigram_loss"] + 0.1)
    assert end["val_discriminator_loss"] < start["val_discriminator_loss"] - 0.01
    assert end["val_discriminator_accuracy"] > start["val_discriminator_accuracy"]  # beyond the prior
    auc = np.mean(
        [h["val_discriminator_auc"] for h in history[-2:]]
    )  # the last two: a step's wobble averaged
    assert auc > 0.53 and auc > start["val_discriminator_auc"] + 0.02
    saved = json.loads((out / "history.json").read_text())
    assert saved[-1]["val_discriminator_auc"] == end["val_discriminator_auc"]
    assert (out / "model.keras").exists()


@pytest.mark.slow
def test_the_discriminator_learns_fast_against_a_generator_left_at_its_start(kjv_data):
    """With the generator frozen at initialization (replacements near uniform over the vocabulary), the
    discriminator's AUC passes 0.7 within 100 steps (0.75 here): the machinery learns; only the task gets
    harder as the generator learns."""
    import keras

    from mlmprep.trainer import model as model_lib

    keras.utils.set_random_seed(0)
    config = model_lib.backbone_config("tiny", vocabulary_size=2000, max_sequence_length=64)
    model = model_lib.build({**config, "objective": "electra"})
    model.generator_head.trainable = False
    for layer in model.generator_encoder.transformer_layers:  # the embeddings are the discriminator's too
        layer.trainable = False
    model_lib.compile_for_pretraining(model, learning_rate=1e-3, warmup_steps=20, total_steps=100)
    train_ds = data_lib.make_dataset(str(kjv_data), "train", batch_size=32, objective="electra")
    eval_ds = data_lib.make_dataset(
        str(kjv_data), "validation", batch_size=32, training=False, objective="electra"
    )
    before = model.evaluate(eval_ds, steps=20, return_dict=True, verbose=0)["discriminator_auc"]
    model.fit(train_ds, steps_per_epoch=100, epochs=1, shuffle=False, verbose=0)
    after = model.evaluate(eval_ds, steps=20, return_dict=True, verbose=0)["discriminator_auc"]
    print(f"discriminator AUC against a frozen generator: {before:.3f} -> {after:.3f} in 100 steps")
    assert before < 0.6 and after > 0.7


@pytest.mark.slow
def test_an_exported_electra_is_two_transformers_models_with_the_keras_logits(
    electra_trained, tmp_path, kjv_data
):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model_dir, _ = electra_trained
    done = _cli("export", f"--model={model_dir}", f"--output={tmp_path / 'hf'}")
    assert done.returncode == 0, done.stderr
    from mlmprep.trainer.fill_mask import load

    keras_model, _, _ = load(str(model_dir))
    assert isinstance(keras_model, ElectraPretrainer)
    x, _, _ = next(
        iter(
            data_lib.make_dataset(
                str(kjv_data), "validation", batch_size=8, training=False, objective="electra"
            )
        )
    )
    x = {k: v.numpy() for k, v in x.items()}
    torch_inputs = {
        "input_ids": torch.tensor(x["token_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(x["padding_mask"], dtype=torch.long),
        "token_type_ids": torch.tensor(x["segment_ids"], dtype=torch.long),
    }
    real = x["padding_mask"] > 0
    discriminator = transformers.ElectraForPreTraining.from_pretrained(
        tmp_path / "hf" / "discriminator"
    ).eval()
    generator = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "hf" / "generator").eval()
    assert discriminator.config.hidden_size == 128 and generator.config.hidden_size == 32
    assert generator.config.embedding_size == discriminator.config.embedding_size == 128
    with torch.no_grad():
        hf_discriminator = discriminator(**torch_inputs).logits.numpy()
        hf_generator = generator(**torch_inputs).logits.numpy()
    keras_discriminator = keras_model.discriminator.predict(
        {k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")}, verbose=0
    )
    keras_generator = keras_model.generator.predict(
        {k: x[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}, verbose=0
    )
    at_masks = np.take_along_axis(hf_generator, x["mask_positions"][:, :, None], axis=1)
    used = x["mask_weights"] > 0
    discriminator_difference = float(np.abs(hf_discriminator[real] - keras_discriminator[real]).max())
    generator_difference = float(np.abs(at_masks[used] - keras_generator[used]).max())
    print(
        f"exported ELECTRA: max |logit difference| discriminator {discriminator_difference:.2e} over "
        f"{int(real.sum())} tokens, generator {generator_difference:.2e} over {int(used.sum()) * 2000} logits"
    )
    assert discriminator_difference < 1e-3 and generator_difference < 1e-3
    # mlmprep fill-mask runs the Keras model's generator.
    done = _cli("fill-mask", f"--model={model_dir}", "and god said let there be [MASK]", "--top_k=3")
    assert done.returncode == 0 and done.stdout.count("\n") == 4, done.stderr[-2000:]
    # Each folder stands alone: a tokenizer beside each, and fill-mask runs on the generator's.
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf" / "generator"))
    assert len(fill("and god said let there be [MASK]")) == 5


@pytest.mark.slow
def test_electra_trains_from_unmasked_shards_masking_on_the_fly(tmp_path, real_data, kjv_data):
    out = tmp_path / "none"
    run_job(
        out,
        f"--input={real_data / 'corpora' / 'tiny' / 'fortunes_en.txt'}",
        f"--tokenizer={kjv_data.parent / 'tokenizer.json'}",
        "--masking=none",
        "--max_seq_length=64",
        "--validation_fraction=0.1",
    )
    done = _cli(
        "train", f"--data={out}", f"--output={tmp_path / 'm'}", "--objective=electra", "--steps=3",
        "--checkpoint_every=3", "--batch_size=8", "--eval_batches=1", "--masking=span",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert history[-1]["step"] == 3 and "val_discriminator_auc" in history[-1]


@pytest.mark.slow
def test_bad_electra_flags_are_one_line_each(kjv_data, tmp_path, electra_trained):
    for fraction in ("1.5", "0"):
        done = _cli("train", f"--data={kjv_data}", f"--output={tmp_path / fraction}", "--objective=electra",
                    f"--generator_fraction={fraction}", "--steps=1")  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--generator_fraction must be in (0, 1]" in done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stderr
    model_dir, _ = electra_trained
    done = _cli(
        "train", f"--data={kjv_data}", f"--output={model_dir}", f"--steps={STEPS + 1}"
    )  # --objective mlm
    assert (
        done.returncode == 2
        and "trained with --objective electra, not mlm" in done.stderr.strip().splitlines()[-1]
    )
