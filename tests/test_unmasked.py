"""``--masking none``: unmasked shards with word starts, and the trainer masking them as the job would."""

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline.errors import UsageError
from mlmprep.transforms import decode

from conftest import run_job, shard_files

tf = pytest.importorskip("tensorflow")

from mlmprep.trainer import data as data_lib  # noqa: E402
from mlmprep.trainer.masking import MaskingError, resolve  # noqa: E402

# Every test here runs the job or trains a model: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

SEED = 7


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, real_data, bert_vocab):
    """The same corpus and seed written unmasked and masked by tokens, words and spans."""
    root = tmp_path_factory.mktemp("unmasked")
    common = [
        f"--input={real_data / 'corpora' / 'small' / 'jargon.txt'}",
        f"--tokenizer={bert_vocab}",
        f"--random_seed={SEED}",
        "--validation_fraction=0.05",
        "--num_shards=2",
    ]
    return {
        mode: (root / mode, run_job(root / mode, *common, f"--masking={mode}"))
        for mode in ("none", "token", "word", "span")
    }


def _rows(out, split="train", fmt="tfrecord"):
    """The records of each shard of a split, one batch (records.MaskedBatch) per shard."""
    manifest = data_lib.read_manifest(str(out))
    config = manifest["settings"]
    batches = []
    for name in shard_files(out, fmt):
        if not name.startswith(split):
            continue
        with open(out / name, "rb") as f:
            read = decode.parquet_slices if fmt == "parquet" else decode.tfrecord_slices
            unmasked = config["masking"] == "none"
            for batch, _ in read(
                f, config["max_seq_length"], config["max_predictions_per_seq"], 10**6, None, unmasked
            ):
                batches.append(batch)
    return batches


def test_unmasked_shards_hold_the_inputs_and_word_starts_and_no_masks(outputs):
    out, manifest = outputs["none"]
    assert manifest["settings"]["masking"] == "none"
    assert all(s["predictions"] == 0 for s in manifest["counts"]["splits"].values())
    name = shard_files(out, "tfrecord")[0]
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(out / name)))).numpy())
    assert set(example.features.feature) == {
        "input_ids", "input_mask", "segment_ids", "position_ids", "piece_lengths", "next_sentence_labels",
        "word_starts",
    }  # fmt: skip
    table = pq.read_table(out / shard_files(out, "parquet")[0])
    assert table.column_names == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "position_ids",
        "piece_lengths",
        "word_starts",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "verify", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    assert "unmasked" in done.stdout


def test_unmasked_sequences_are_the_masked_outputs_originals_with_their_word_starts(
    outputs, bert_tokenizer_json
):
    """Same keys, same order: the unmasked rows are the masked rows before masking."""
    none, *_ = _rows(outputs["none"][0])
    word, *_ = _rows(outputs["word"][0])
    np.testing.assert_array_equal(none.lengths, word.lengths)
    original = word.input_ids.copy()
    rows = np.repeat(np.arange(len(word.lengths)), word.num_predictions)
    valid = word.masked_lm_weights > 0
    original[rows, word.masked_lm_positions[valid]] = word.masked_lm_ids[valid]
    np.testing.assert_array_equal(none.input_ids, original)
    # The word starts are the tokenizer's own words: a piece starts one exactly where it is not "##".
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(bert_tokenizer_json)
    tokens = np.array([tokenizer.id_to_token(int(i)) for i in none.input_ids[0]])
    real = np.arange(none.input_ids.shape[1]) < none.lengths[0]
    body = real & ~np.isin(tokens, ["[CLS]", "[SEP]"])
    expected = body & ~np.char.startswith(tokens, "##")
    np.testing.assert_array_equal(none.word_starts[0][body][1:] > 0, expected[body][1:])


@pytest.mark.parametrize("mode", ["token", "word", "span"])
def test_the_trainers_masking_is_the_jobs_for_the_same_key_and_seed(outputs, mode):
    none_out, none_manifest = outputs["none"]
    none, *_ = _rows(none_out)
    masked, *_ = _rows(outputs[mode][0])
    masker = data_lib.DynamicMasker(
        str(none_out), none_manifest, SEED, resolve(none_manifest, {"masking": mode}, dynamic=False)
    )
    ids, positions, originals, weights = masker.mask(0, none.input_ids, none.lengths, none.word_starts)
    np.testing.assert_array_equal(ids, masked.input_ids)
    np.testing.assert_array_equal(weights.sum(axis=1), masked.num_predictions)
    width = masked.masked_lm_positions.shape[1]
    np.testing.assert_array_equal(positions[:, :width], masked.masked_lm_positions)
    np.testing.assert_array_equal(originals[:, :width], masked.masked_lm_ids)
    # A later epoch (batch index) masks anew.
    again, *_ = masker.mask(1, none.input_ids, none.lengths, none.word_starts)
    assert np.mean(np.any(again != ids, axis=1)) > 0.9


def test_the_trainer_masks_unmasked_shards_at_any_rate_and_ratios(outputs):
    out, manifest = outputs["none"]
    seq = manifest["settings"]["max_seq_length"]
    # ModernBERT's 30%; NeoBERT's 20% all [MASK]; both with spans.
    for flags in (
        {"masked_lm_prob": 0.3, "masking": "span"},
        {"masked_lm_prob": 0.2, "mask_token_ratio": 1.0, "random_token_ratio": 0.0},
    ):
        masking = resolve(manifest, flags, dynamic=False)
        assert masking.max_predictions_per_seq == max(20, int(np.ceil(seq * flags["masked_lm_prob"])))
        dataset = data_lib.make_dataset(
            str(out), "train", batch_size=64, training=False, masking=masking, model_inputs=False
        )
        mask_id = manifest["tokenizer"]["special_ids"]["mask"]
        replaced = total = 0
        for batch in dataset.take(4):
            lengths = batch["input_mask"].numpy().sum(axis=1)
            counts = batch["masked_lm_weights"].numpy().sum(axis=1)
            # [CLS] and [SEP] are counted in n, as BERT counts them; no sequence here is short of candidates.
            np.testing.assert_array_equal(
                counts,
                np.minimum(
                    np.maximum(1, np.rint(lengths * flags["masked_lm_prob"])), masking.max_predictions_per_seq
                ),
            )
            rows, slots = np.nonzero(batch["masked_lm_weights"].numpy())
            after = batch["input_ids"].numpy()[rows, batch["masked_lm_positions"].numpy()[rows, slots]]
            replaced += int(np.sum(after == mask_id))
            total += len(rows)
        share = replaced / total
        expected = flags.get("mask_token_ratio", 0.8)
        assert share == 1.0 if expected == 1.0 else abs(share - expected) < 0.05


def test_unmasked_data_needs_the_trainer_to_mask_and_masked_data_refuses_word_masking(outputs):
    none_manifest = outputs["none"][1]
    token_manifest = outputs["token"][1]
    assert (
        resolve(none_manifest, {}, dynamic=False).masking == "token"
    )  # unmasked: masked by tokens by default
    with pytest.raises(MaskingError, match="the shards are masked already; add --dynamic_masking"):
        resolve(token_manifest, {"masked_lm_prob": 0.3}, dynamic=False)
    with pytest.raises(MaskingError, match="needs word starts"):
        resolve(token_manifest, {"masking": "span"}, dynamic=True)
    assert resolve(token_manifest, {}, dynamic=False) is None
    for flags, message in (
        ({"span_p": 0.0}, "--span_p must be in (0, 1]"),
        ({"max_span_words": 0}, "--max_span_words must be at least 1"),
        ({"mask_token_ratio": 0.9, "random_token_ratio": 0.2}, "--random_token_ratio must be at most 1"),
        ({"masked_lm_prob": 1.5}, "--masked_lm_prob must be in (0, 1]"),
    ):
        # The job's own checks of its masking settings: a UsageError, the user's one line.
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            resolve(none_manifest, flags, dynamic=False)
    with pytest.raises(data_lib.DataError, match="unmasked"):
        data_lib.make_dataset(str(outputs["none"][0]), "train", batch_size=8)


def test_mlmprep_train_on_unmasked_shards_with_span_masking(outputs, tmp_path):
    out, _ = outputs["none"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "train",
            f"--data={out}",
            f"--output={tmp_path / 'm'}",
            "--steps=4",
            "--checkpoint_every=4",
            "--batch_size=8",
            "--eval_batches=2",
            "--masking=span",
            "--masked_lm_prob=0.3",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 4: val_loss" in done.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "train",
            f"--data={outputs['span'][0]}",
            f"--output={tmp_path / 'n'}",
            "--masked_lm_prob=0.3",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "masked already" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_transformers_collator_masks_the_unmasked_parquet_on_the_fly(outputs):
    """transformers' DataCollatorForLanguageModeling takes the Parquet columns as they are."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    out, manifest = outputs["none"]
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(out / manifest["tokenizer"]["file"]),
        mask_token="[MASK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
    )
    table = pq.read_table(out / shard_files(out, "parquet")[0], columns=["input_ids", "attention_mask"])
    rows = table.slice(0, 64).to_pylist()
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    torch.manual_seed(0)
    batch = collator(rows)
    labels = batch["labels"]
    real = batch["attention_mask"] > 0
    share = float((labels[real] != -100).float().mean())
    assert 0.25 < share < 0.35  # the collator's 30%, over real tokens (it spares the special ones)
    masked = batch["input_ids"][labels != -100]
    assert float((masked == tokenizer.mask_token_id).float().mean()) > 0.7
    config = transformers.BertConfig(
        vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    loss = transformers.BertForMaskedLM(config)(**batch).loss
    assert torch.isfinite(loss)
