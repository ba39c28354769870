"""Consumers of packed rows honour their boundaries: the Keras model on best-fit rows gives each piece the
logits it gets alone, the trainer trains at 1,024 tokens on them, and docs/training.md's PyTorch recipe feeds
the Parquet rows to the exported BertForMaskedLM with the same result on the eager and sdpa paths."""

import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_job, shard_files

# Every test here runs the job or trains a model: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

keras = pytest.importorskip("keras")
pytest.importorskip("keras_hub")

SEQ = 1024
TOLERANCE = 1e-4  # float32


@pytest.fixture(scope="module")
def packed_data(tmp_path_factory, real_data):
    """KJV (300 KB) best-fit packed at 1,024 tokens, with a 2,000-token tokenizer."""
    from mlmprep.pipeline import train_tokenizer

    root = tmp_path_factory.mktemp("packed")
    corpus = root / "kjv.txt"
    corpus.write_bytes(
        (real_data / "corpora" / "small" / "kjv.txt").read_bytes()[:300_000].rsplit(b"\n\n", 1)[0]
    )
    tokenizer = train_tokenizer.train([str(corpus)], vocab_size=2000)
    tokenizer.save(str(root / "tokenizer.json"))
    manifest = run_job(
        root / "data", f"--input={corpus}", f"--tokenizer={root / 'tokenizer.json'}", "--packing=best_fit",
        f"--max_seq_length={SEQ}", "--validation_fraction=0.1", "--num_shards=1",
    )  # fmt: skip
    return root / "data", manifest


def _rows(data_dir, n: int) -> dict:
    """The first ``n`` Parquet rows of the train split that hold several pieces, as numpy arrays (and their
    ``piece_lengths``, ragged, as lists)."""
    table = pq.read_table(data_dir / shard_files(data_dir, "parquet")[0])
    names = ("input_ids", "attention_mask", "position_ids", "labels")
    columns = {c: np.array(table.column(c).to_pylist(), np.int64) for c in names}
    padding = SEQ - columns["attention_mask"].sum(axis=1)
    several = np.nonzero((columns["position_ids"] == 0).sum(axis=1) - padding > 1)[0]  # pieces > 1
    lengths = table.column("piece_lengths").to_pylist()
    return {k: v[several[:n]] for k, v in columns.items()} | {
        "piece_lengths": [lengths[i] for i in several[:n]]
    }


def _pieces(position_ids: np.ndarray, n: int) -> list[tuple[int, int]]:
    starts = [i for i in range(n) if position_ids[i] == 0] + [n]
    return list(zip(starts[:-1], starts[1:]))


def _keras_logits(model, ids, positions, n):
    inputs = {
        "token_ids": ids[None].astype(np.int32),
        "segment_ids": np.zeros((1, ids.size), np.int32),
        "padding_mask": (np.arange(ids.size) < n).astype(np.int32)[None],
        "position_ids": positions[None].astype(np.int32),
        "mask_positions": np.arange(n, dtype=np.int32)[None],
    }
    return np.asarray(model.predict(inputs, verbose=0)[0], np.float64)


def test_a_packed_rows_logits_equal_its_pieces_run_alone(packed_data):
    from mlmprep.trainer import model as model_lib

    data_dir, manifest = packed_data
    keras.utils.set_random_seed(0)
    config = model_lib.backbone_config(
        "tiny", vocabulary_size=manifest["tokenizer"]["vocab_size"], max_sequence_length=SEQ
    )
    model = model_lib.build(config, packed=True)
    rows = _rows(data_dir, 2)
    worst, crossing = 0.0, 0.0
    for ids, mask, positions in zip(rows["input_ids"], rows["attention_mask"], rows["position_ids"]):
        n = int(mask.sum())
        packed = _keras_logits(model, ids, positions, n)
        # The same row read as one piece, attention crossing its documents: what the mask prevents.
        whole = _keras_logits(model, ids, np.where(np.arange(SEQ) < n, np.arange(SEQ), 0), n)
        for start, end in _pieces(positions, n):
            alone_ids = np.zeros(SEQ, np.int64)
            alone_ids[: end - start] = ids[start:end]
            alone = _keras_logits(
                model, alone_ids, np.where(np.arange(SEQ) < end - start, np.arange(SEQ), 0), end - start
            )
            worst = max(worst, float(np.abs(packed[start:end] - alone).max()))
            if start:
                crossing = max(crossing, float(np.abs(whole[start:end] - alone).max()))
    print(f"Keras packed row against its pieces alone: max |logit difference| {worst:.2e}")
    print(f"the same row with attention crossing its pieces: {crossing:.2e}")
    assert worst <= TOLERANCE < crossing


@pytest.fixture(scope="module")
def trained_packed(packed_data, tmp_path_factory):
    from mlmprep.trainer.train import TrainConfig, train

    data_dir, _ = packed_data
    out = tmp_path_factory.mktemp("model") / "model"
    history = train(
        TrainConfig(data_dir=str(data_dir), output_dir=str(out), steps=30, checkpoint_every=30, batch_size=8)
    )
    return out, history


def test_the_trainer_trains_at_the_datas_length_on_packed_rows(trained_packed, packed_data):
    from mlmprep.trainer.fill_mask import load

    out, history = trained_packed
    assert history[-1]["step"] == 30 and np.isfinite(history[-1]["val_loss"])
    assert history[-1]["val_loss"] < history[-1]["val_unigram_loss"] + 2
    model, _, manifest = load(str(out))
    assert manifest["settings"]["max_seq_length"] == SEQ and "position_ids" in model.input
    assert type(model.backbone).__name__ == "Encoder" and model.backbone.packed


def _docs_recipe() -> dict:
    """docs/training.md's PyTorch recipe for packed rows, run as it is written there."""
    page = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def block_mask" in b]
    namespace = {}
    exec(block.split("# --- usage ---")[0], namespace)
    return namespace


def test_the_docs_recipe_feeds_packed_parquet_rows_to_transformers(trained_packed, packed_data, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the [hf] extra)")
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (the [hf] extra)"
    )
    from mlmprep.trainer import export

    out, _ = trained_packed
    data_dir, _ = packed_data
    hf_dir = tmp_path / "hf"
    export.export(str(out), str(hf_dir))
    block_mask = _docs_recipe()["block_mask"]
    rows = _rows(data_dir, 2)
    lengths = rows.pop("piece_lengths")
    rows = {k: torch.tensor(v) for k, v in rows.items()}
    for implementation in ("eager", "sdpa"):
        model = transformers.BertForMaskedLM.from_pretrained(
            hf_dir, attn_implementation=implementation
        ).eval()
        with torch.no_grad():
            packed = model(
                input_ids=rows["input_ids"],
                position_ids=rows["position_ids"],
                attention_mask=block_mask(lengths, SEQ),
            ).logits
            boolean = model(  # the mistake the recipe avoids: a boolean 4-D mask
                input_ids=rows["input_ids"],
                position_ids=rows["position_ids"],
                attention_mask=block_mask(lengths, SEQ) == 0,
            ).logits
            worst = wrong = 0.0
            for row in range(len(rows["input_ids"])):
                n = int(rows["attention_mask"][row].sum())
                for start, end in _pieces(rows["position_ids"][row].numpy(), n):
                    alone = model(input_ids=rows["input_ids"][row : row + 1, start:end]).logits[0]
                    worst = max(worst, float((packed[row, start:end] - alone).abs().max()))
                    wrong = max(wrong, float((boolean[row, start:end] - alone).abs().max()))
        print(f"transformers {implementation}: packed rows against pieces alone {worst:.2e}")
        print(f"transformers {implementation}, a boolean mask: {wrong:.2e}")
        assert worst <= TOLERANCE
        if implementation == "eager":
            assert wrong > TOLERANCE  # the comparison catches a boolean mask on the eager path
