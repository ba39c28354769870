"""The Parquet shards feed Hugging Face's stack as they are: datasets, a DataLoader, BertForMaskedLM."""

import itertools

import pytest

from conftest import run_job

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the [hf] extra)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (the [hf] extra)")
datasets = pytest.importorskip("datasets", reason="datasets is not installed (the [hf] extra)")

COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "labels"]  # what BertForMaskedLM takes


def _as_long(rows):
    """Stacks a batch; the shards store int32, PyTorch's embeddings and loss take int64."""
    return {name: torch.stack([row[name] for row in rows]).long() for name in COLUMNS}


def test_bert_for_masked_lm_learns_from_the_parquet_shards(tmp_path, real_data, bert_vocab):
    out = tmp_path / "data"
    run_job(
        out,
        f"--input={real_data / 'corpora' / 'small' / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--max_seq_length=64",
        "--validation_fraction=0.05",
        "--num_shards=2",
        "--formats=parquet",
    )
    files = {
        split: sorted(str(p) for p in out.glob(f"{split}-*.parquet")) for split in ("train", "validation")
    }
    shards = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    shards = shards.with_format("torch", columns=COLUMNS)
    assert shards["train"].num_rows > 1000 and shards["validation"].num_rows > 50

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
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
            losses = [model(**batch).loss.item() for batch in validation]
        model.train()
        return sum(losses) / len(losses)

    before = validation_loss()
    for batch in itertools.islice(itertools.cycle(train), 60):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = validation_loss()
    print(f"BertForMaskedLM on the Parquet shards: validation loss {before:.3f} -> {after:.3f}")
    assert before > 9.5  # untrained: about uniform over 30,522 tokens
    assert after < before - 2.5
