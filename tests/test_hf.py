"""Hugging Face's stack: the Parquet shards feed datasets, a DataLoader and BertForMaskedLM as they are,
and a model trained by mlmprep train leaves Keras for transformers with mlmprep export."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_job

# Every test here runs the job or trains a model: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the [hf] extra)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (the [hf] extra)")
datasets = pytest.importorskip("datasets", reason="datasets is not installed (the [hf] extra)")

COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "labels"]  # what BertForMaskedLM takes


def _as_long(rows):
    """Stacks a batch; the shards store int32, PyTorch's embeddings and loss take int64."""
    return {name: torch.stack([row[name] for row in rows]).long() for name in COLUMNS}


def _keras_logits(keras_model, ids, positions, seq: int, pad_id: int) -> np.ndarray:
    """The Keras model's logits at ``positions`` of one framed sequence, padded to ``seq``."""
    token_ids = np.full((1, seq), pad_id, np.int32)
    token_ids[0, : len(ids)] = ids
    inputs = {
        "token_ids": token_ids,
        "padding_mask": (np.arange(seq) < len(ids)).astype(np.int32)[None],
        "segment_ids": np.zeros_like(token_ids),
        "mask_positions": np.array([positions], np.int32),
    }
    return np.asarray(keras_model.predict(inputs, verbose=0)[0])


def test_bert_for_masked_lm_learns_from_the_parquet_shards(tmp_path, kjv_data):
    """The job's Parquet shards (KJV, a 2,000-token tokenizer) as datasets loads them, trained on as is."""
    out = kjv_data
    files = {
        split: sorted(str(p) for p in out.glob(f"{split}-*.parquet")) for split in ("train", "validation")
    }
    shards = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    shards = shards.with_format("torch", columns=COLUMNS)
    assert shards["train"].num_rows > 1000 and shards["validation"].num_rows > 50

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=256, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = torch.utils.data.DataLoader(
        shards["train"],
        batch_size=32,
        shuffle=True,
        collate_fn=_as_long,
        generator=torch.Generator().manual_seed(0),
    )
    validation = torch.utils.data.DataLoader(shards["validation"], batch_size=64, collate_fn=_as_long)

    def validation_loss() -> float:
        model.eval()
        with torch.no_grad():  # the model's own loss: cross-entropy where labels are not -100
            losses = [model(**batch).loss.item() for batch in itertools.islice(validation, 4)]
        model.train()
        return sum(losses) / len(losses)

    before = validation_loss()
    for batch in itertools.islice(itertools.cycle(train), 60):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = validation_loss()
    print(f"BertForMaskedLM on the Parquet shards: validation loss {before:.3f} -> {after:.3f}")
    assert before > 7.3  # untrained: about uniform over 2,000 tokens (7.6)
    assert after < before - 1.5  # 7.61 -> 5.82..5.86 here


def test_an_exported_model_fills_masks_in_transformers_as_it_does_in_keras(trained, tmp_path):
    pytest.importorskip("keras_hub")
    from mlmprep.trainer.fill_mask import fill_mask, load

    model_dir, _ = trained
    hf_dir = tmp_path / "hf"
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "export", f"--model={model_dir}",
         f"--output={hf_dir}", "--format=transformers"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (hf_dir / name).exists(), name

    # Every weight of BertForMaskedLM comes from the file: none missing, none left over.
    _, info = transformers.BertForMaskedLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not any(info.values()), info

    text = "and god said , let there be [MASK] : and there was [MASK] ."
    fill = transformers.pipeline("fill-mask", model=str(hf_dir), top_k=5, device="cpu")
    keras_model, tokenizer, manifest = load(str(model_dir))
    seq = manifest["settings"]["max_seq_length"]
    encoded = fill.tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"][0].tolist()
    # The exported tokenizer frames text as the shards do.
    cls, sep, mask = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
    assert ids == [cls, *tokenizer.encode(text, add_special_tokens=False).ids, sep]
    positions = [i for i, t in enumerate(ids) if t == mask]
    assert len(positions) == 2

    with torch.no_grad():
        hf_logits = fill.model(**encoded).logits[0, positions].numpy()
    keras_logits = _keras_logits(keras_model, ids, positions, seq, pad_id=0)
    difference = float(np.abs(hf_logits - keras_logits).max())
    print(f"exported BertForMaskedLM: max |logit difference| {difference:.2e} over {hf_logits.size} logits")
    assert difference < 1e-3

    hf_top = [[c["token"] for c in candidates] for candidates in fill(text)]
    keras_top = [
        [tokenizer.token_to_id(token) for token, _ in candidates]
        for candidates in fill_mask(keras_model, tokenizer, text, top_k=5, max_seq_length=seq)
    ]
    assert hf_top == keras_top


def test_a_model_with_the_pair_head_exports_as_bert_for_pretraining(pairs_trained, tmp_path):
    pytest.importorskip("keras_hub")
    from mlmprep.trainer import export
    from mlmprep.trainer.fill_mask import load

    model_dir, _ = pairs_trained
    hf_dir = tmp_path / "hf"
    export.export(str(model_dir), str(hf_dir))
    model, info = transformers.BertForPreTraining.from_pretrained(hf_dir, output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.architectures == ["BertForPreTraining"]

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    encoded = tokenizer("and god said , let there be [MASK] :", "и был [MASK] .", return_tensors="pt")
    ids = encoded["input_ids"][0].tolist()
    segments = encoded["token_type_ids"][0].tolist()
    first_sep = ids.index(tokenizer.sep_token_id)
    assert segments == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)  # as the shards frame pairs
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    with torch.no_grad():
        hf = model.eval()(**encoded)

    keras_model, _, manifest = load(str(model_dir))
    seq = manifest["settings"]["max_seq_length"]
    pad = lambda row: np.pad(np.array(row, np.int32), (0, seq - len(row)))[None]  # noqa: E731
    outputs = keras_model.predict(
        {
            "token_ids": pad(ids),
            "padding_mask": pad([1] * len(ids)),
            "segment_ids": pad(segments),
            "mask_positions": np.array([positions], np.int32),
        },
        verbose=0,
    )
    masked_lm = np.abs(hf.prediction_logits[0, positions].numpy() - outputs["mlm"][0]).max()
    pair = np.abs(hf.seq_relationship_logits[0].numpy() - outputs["next_sentence"][0]).max()
    print(f"exported BertForPreTraining: max |logit difference| masked LM {masked_lm:.2e}, pair {pair:.2e}")
    assert masked_lm < 1e-3 and pair < 1e-3


def test_a_roberta_style_model_trains_exports_and_fills_masks_in_transformers(tmp_path, real_data):
    """train-tokenizer --model bpe, the job, the trainer, export and transformers' fill-mask with <mask>."""
    pytest.importorskip("keras_hub")
    from mlmprep.trainer import export
    from mlmprep.trainer.fill_mask import fill_mask, load
    from mlmprep.trainer.train import TrainConfig, train

    corpus = tmp_path / "kjv.txt"
    corpus.write_bytes(
        (real_data / "corpora" / "small" / "kjv.txt").read_bytes()[:600_000].rsplit(b"\n\n", 1)[0]
    )
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    cli = [sys.executable, "-m", "mlmprep.pipeline.cli"]
    subprocess.run(
        [*cli, "train-tokenizer", f"--input={corpus}", f"--output={tokenizer_dir / 'tokenizer.json'}",
         "--model=bpe", "--vocab_size=2000"],
        check=True, capture_output=True,
    )  # fmt: skip
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    assert hf_tokenizer.mask_token == "<mask>" and hf_tokenizer.pad_token == "<pad>"
    the = hf_tokenizer("the", add_special_tokens=False)["input_ids"]
    masked = hf_tokenizer("the <mask>", add_special_tokens=False)["input_ids"]
    assert masked == [*the, hf_tokenizer.mask_token_id]  # the mask takes its space: no stray "Ġ" before it

    run_job(
        tmp_path / "data", f"--input={corpus}", f"--tokenizer={tokenizer_dir / 'tokenizer.json'}",
        "--max_seq_length=64", "--max_predictions_per_seq=10", "--validation_fraction=0.05", "--num_shards=2",
    )  # fmt: skip
    model_dir, hf_dir = tmp_path / "model", tmp_path / "hf"
    train(
        TrainConfig(data_dir=str(tmp_path / "data"), output_dir=str(model_dir), steps=60, checkpoint_every=60)
    )
    export.export(str(model_dir), str(hf_dir))

    keras_model, tokenizer, manifest = load(str(model_dir))
    text = "And God said, Let there be <mask>: and there was <mask>."
    fill = transformers.pipeline("fill-mask", model=str(hf_dir), top_k=5)
    encoded = fill.tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"][0].tolist()
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    assert ids == [bos, *tokenizer.encode(text, add_special_tokens=False).ids, eos]  # RoBERTa's frame
    positions = [i for i, t in enumerate(ids) if t == tokenizer.token_to_id("<mask>")]
    assert len(positions) == 2
    with torch.no_grad():
        hf_logits = fill.model(**encoded).logits[0, positions].numpy()
    seq = manifest["settings"]["max_seq_length"]
    keras_logits = _keras_logits(keras_model, ids, positions, seq, pad_id=tokenizer.token_to_id("<pad>"))
    difference = float(np.abs(hf_logits - keras_logits).max())
    print(
        f"exported RoBERTa-style model: max |logit difference| {difference:.2e} over {hf_logits.size} logits"
    )
    assert difference < 1e-3
    roles = {role: i for role, i in manifest["tokenizer"]["special_ids"].items() if i is not None}
    hf_top = [[c["token"] for c in candidates] for candidates in fill(text)]
    keras_top = [
        [tokenizer.token_to_id(token) for token, _ in candidates]
        for candidates in fill_mask(keras_model, tokenizer, text, top_k=5, max_seq_length=seq, roles=roles)
    ]
    assert hf_top == keras_top
    done = subprocess.run(
        [*cli, "fill-mask", f"--model={model_dir}", "Let there be <mask>."], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("<mask> 1:"), done.stderr
