"""docs/training.md's PyTorch recipe for packed rows, run as written there on best-fit Parquet rows from the
job: cu_seqlens are the prefix sums of piece_lengths and where position_ids restart; BertForMaskedLM given the
position ids and the block mask, and ModernBertForMaskedLM given a mask per layer type, give every piece the
logits it gets alone, and ModernBERT given position_ids alone or one 4-D mask does not."""

import re

import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_job, shard_files

# The fixture runs the job: the quick loop (-m 'not slow') leaves this module out.
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the [hf] extra)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (the [hf] extra)")

SEQ = 256
ROWS = 4
LOCAL_ATTENTION = 16  # ModernBERT's local layers see 8 tokens either side: less than most verses
TOLERANCE = 1e-5  # float32


@pytest.fixture(scope="module")
def packed(tmp_path_factory, real_data):
    """The first rows of the train split of 40 KB of KJV, a verse a document, best-fit packed at 256 tokens
    with a 1,000-token tokenizer: (batch of tensors, piece_lengths as lists, the manifest, the rows as
    dicts)."""
    from mlmprep.pipeline import train_tokenizer

    root = tmp_path_factory.mktemp("varlen")
    corpus = root / "kjv.txt"
    corpus.write_bytes(
        (real_data / "corpora" / "small" / "kjv.txt").read_bytes()[:40_000].rsplit(b"\n", 1)[0]
    )
    tokenizer = train_tokenizer.train([str(corpus)], vocab_size=1000)
    tokenizer.save(str(root / "tokenizer.json"))
    manifest = run_job(
        root / "data", f"--input={corpus}", "--input_format=lines", f"--tokenizer={root / 'tokenizer.json'}",
        "--packing=best_fit", f"--max_seq_length={SEQ}", "--validation_fraction=0.1", "--num_shards=1",
    )  # fmt: skip
    table = pq.read_table(root / "data" / shard_files(root / "data", "parquet")[0])
    rows = table.to_pylist()
    # The first rows, and the first that has padding: the masks must hold on both.
    chosen = rows[: ROWS - 1] + [next(r for r in rows if sum(r["attention_mask"]) < SEQ)]
    names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
    batch = {k: torch.tensor([r[k] for r in chosen]) for k in names}
    lengths = [r["piece_lengths"] for r in chosen]
    assert all(len(row) > 1 for row in lengths) and max(max(row) for row in lengths) > LOCAL_ATTENTION + 1
    return batch, lengths, manifest, chosen


def _docs_block() -> str:
    page = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def block_mask" in b]
    return block


@pytest.fixture(scope="module")
def recipe() -> dict:
    """docs/training.md's block's functions (its part above the usage)."""
    namespace = {}
    exec(_docs_block().split("# --- usage ---")[0], namespace)
    return namespace


def _bert(manifest, implementation):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, max_position_embeddings=SEQ,
        attn_implementation=implementation,
    )  # fmt: skip
    model = transformers.BertForMaskedLM(config).eval()
    assert model.config._attn_implementation == implementation
    return model


def _modernbert(manifest, implementation):
    """Four layers, global and local in turn, the local ones seeing 8 tokens either side."""
    special = manifest["tokenizer"]["special_ids"]
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(
        vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=64, intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=4, global_attn_every_n_layers=2,
        local_attention=LOCAL_ATTENTION, max_position_embeddings=SEQ, pad_token_id=special["pad"],
        bos_token_id=special["cls"], eos_token_id=special["sep"], cls_token_id=special["cls"],
        sep_token_id=special["sep"], attn_implementation=implementation,
    )  # fmt: skip
    model = transformers.ModernBertForMaskedLM(config).eval()
    assert model.config._attn_implementation == implementation
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    assert config.sliding_window == LOCAL_ATTENTION // 2
    return model


def _pieces(lengths) -> list[tuple[int, int]]:
    ends = torch.cumsum(torch.tensor(lengths), 0).tolist()
    return list(zip([0] + ends[:-1], ends))


def _worst(packed_logits, batch, lengths, alone) -> float:
    """The largest |logit difference| of the packed rows' pieces against each piece run alone."""
    worst = 0.0
    for row, row_lengths in enumerate(lengths):
        for start, end in _pieces(row_lengths):
            difference = packed_logits[row, start:end] - alone(row, start, end)
            worst = max(worst, float(difference.abs().max()))
    return worst


def test_cu_seqlens_are_the_piece_lengths_prefix_sums_and_where_position_ids_restart(packed, recipe):
    batch, lengths, _, _ = packed
    cu = recipe["cu_seqlens"](lengths)
    flat = [n for row in lengths for n in row]
    assert cu.dtype == torch.int32 and cu.tolist() == [0] + torch.cumsum(torch.tensor(flat), 0).tolist()
    real = batch["attention_mask"].bool()
    positions = batch["position_ids"][real]  # every row's real tokens in one row
    assert cu[-1] == real.sum() == positions.numel()
    assert torch.nonzero(positions == 0).flatten().tolist() == cu[:-1].tolist()
    assert torch.equal(positions, torch.cat([torch.arange(n) for n in flat]))  # 0, 1, ... within every piece


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bert_gives_each_piece_its_logits_alone(packed, recipe, implementation):
    batch, lengths, manifest, _ = packed
    model = _bert(manifest, implementation)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            token_type_ids=types,
            position_ids=batch["position_ids"],
            attention_mask=recipe["block_mask"](lengths, SEQ),
        ).logits

        def alone(row, start, end):
            return model(
                input_ids=ids[row : row + 1, start:end], token_type_ids=types[row : row + 1, start:end]
            ).logits[0]

        worst = _worst(logits, batch, lengths, alone)
    print(
        f"\nBertForMaskedLM {implementation}, position_ids and the block mask: max |difference| {worst:.2e}"
    )
    assert worst <= TOLERANCE


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_modernbert_gives_each_piece_its_logits_alone_given_a_mask_per_layer_type(
    packed, recipe, implementation
):
    batch, lengths, manifest, _ = packed
    model = _modernbert(manifest, implementation)
    block_mask, ids, positions = recipe["block_mask"], batch["input_ids"], batch["position_ids"]
    masks = {
        "full_attention": block_mask(lengths, SEQ),
        "sliding_attention": block_mask(lengths, SEQ, window=model.config.sliding_window),
    }
    with torch.no_grad():
        cache = {}

        def alone(row, start, end):
            if (row, start) not in cache:
                cache[row, start] = model(input_ids=ids[row : row + 1, start:end]).logits[0]
            return cache[row, start]

        worst = {
            "a mask per layer type": model(input_ids=ids, position_ids=positions, attention_mask=masks),
            "position_ids alone": model(
                input_ids=ids, position_ids=positions, attention_mask=batch["attention_mask"]
            ),
            "one 4-D block mask": model(
                input_ids=ids, position_ids=positions, attention_mask=masks["full_attention"]
            ),
        }
        worst = {name: _worst(out.logits, batch, lengths, alone) for name, out in worst.items()}
    for name, value in worst.items():
        print(f"\nModernBertForMaskedLM {implementation}, {name}: max |difference| {value:.2e}", end="")
    print()
    assert worst["a mask per layer type"] <= TOLERANCE
    assert worst["position_ids alone"] > TOLERANCE and worst["one 4-D block mask"] > TOLERANCE


def test_the_docs_usage_runs_on_the_parquet_rows(packed):
    """The whole block, its usage too, on the rows as pyarrow gives them, with the default (sdpa) models."""
    _, _, manifest, rows = packed
    namespace = {"rows": rows, "bert": _bert(manifest, "sdpa"), "modernbert": _modernbert(manifest, "sdpa")}
    with torch.no_grad():
        exec(_docs_block(), namespace)
    assert namespace["out"].logits.shape == (len(rows), SEQ, manifest["tokenizer"]["vocab_size"])
    assert torch.isfinite(namespace["out"].loss)
    assert namespace["cu"][-1] == namespace["flat_ids"].shape[1] == namespace["flat_positions"].shape[1]
    assert namespace["max_len"] == int((namespace["cu"][1:] - namespace["cu"][:-1]).max())
