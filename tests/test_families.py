"""Any encoder's tokenizer, end to end: RoBERTa, XLM-R, ALBERT, ModernBERT and DeBERTa-v3 vocabularies and
frames, each built in the test (``families``), through the job, verify and the shards."""

import collections
import json
import pathlib
import subprocess
import sys

import families
import numpy as np
import pyarrow.parquet as pq
import pytest

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import verify
from mlmprep.transforms import decode, keys, tokenize
from mlmprep.transforms.mask import MaskingConfig, mask_batch
from mlmprep.transforms.pack import pack_documents
from mlmprep.transforms.text_input import iter_documents

from conftest import run_job, shard_files

SEQ, PREDICTIONS = 64, 10


@pytest.fixture(scope="module")
def corpus(real_data):
    """English and Russian text: several scripts, lines and paragraphs."""
    tiny = real_data / "corpora" / "tiny"
    return [tiny / "kjv.txt", tiny / "fortunes_en.txt", tiny / "debian_handbook_ru-RU.txt"]


@pytest.fixture(scope="module", params=sorted(families.BUILDERS))
def family(request, corpus, tmp_path_factory):
    """(name, tokenizer.json path, its output with --whole_word_masking, its output with SOP pairs)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    tokenizer = families.BUILDERS[name](corpus)
    path = root / "tokenizer.json"
    path.write_text(tokenizer.to_str(), encoding="utf-8")
    common = [*(f"--input={p}" for p in corpus), f"--tokenizer={path}", f"--max_seq_length={SEQ}"]
    common += [f"--max_predictions_per_seq={PREDICTIONS}", "--validation_fraction=0.1", "--num_shards=2"]
    words = run_job(root / "words", *common, "--whole_word_masking")
    pairs = run_job(root / "sop", *common, "--sentence_pairs=sop")
    return name, path, (root / "words", words), (root / "sop", pairs)


def _rows(output: pathlib.Path, manifest: dict, fmt: str, frame=None):
    seq, preds = manifest["settings"]["max_seq_length"], manifest["settings"]["max_predictions_per_seq"]
    batches = []
    for name in shard_files(output, fmt):
        with open(output / name, "rb") as f:
            read = decode.parquet_slices if fmt == "parquet" else decode.tfrecord_slices
            batches += [batch for batch, _ in read(f, seq, preds, 10**6, frame)]
    return batches


@pytest.mark.slow
def test_the_manifest_names_the_familys_roles_and_frames(family):
    name, _, (_, manifest), (_, pairs) = family
    entry = manifest["tokenizer"]
    assert entry["frames"] == families.FRAMES[name]
    assert entry["special_tokens"]["mask"] == families.MASKS[name]
    ids, tokens = entry["special_ids"], entry["special_tokens"]
    tokenizer = tokenize.load_tokenizer((pathlib.Path(family[1])).read_text(encoding="utf-8"))
    assert all(tokenizer.id_to_token(ids[role]) == tokens[role] for role in ids if ids[role] is not None)
    assert pairs["tokenizer"] == entry


@pytest.mark.slow
def test_verify_passes_with_exact_counts_and_80_10_10(family):
    for output, manifest in family[2:]:
        report = verify.verify(str(output))
        assert report.problems == []
        total = sum(report.outcomes.values())
        predictions = sum(s["predictions"] for s in manifest["counts"]["splits"].values())
        assert total == 2 * predictions > 2000  # every prediction of the TFRecord and the Parquet shards
        shares = [report.outcomes[k] / total for k in ("mask", "random", "same")]
        assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.02 and abs(shares[2] - 0.1) < 0.02


@pytest.mark.slow
def test_no_token_is_lost_invented_or_special_and_parquet_equals_tfrecord(family, corpus):
    name, path, (output, manifest), _ = family
    text = path.read_text(encoding="utf-8")
    tokenizer, vocab = manifest_lib.vocabulary(manifest, text)
    frame = vocab.frame
    body = SEQ - frame.specials
    expected = collections.Counter()
    for p in corpus:
        with open(p, encoding="utf-8") as f:
            for ids in tokenize.encode_batch(tokenizer, list(iter_documents(f, "text"))):
                expected.update(tuple(ids[i : i + body].tolist()) for i in range(0, ids.size, body))
    assert sum(manifest["counts"]["documents_dropped"].values()) == 0
    tfrecord, parquet = _rows(output, manifest, "tfrecord"), _rows(output, manifest, "parquet")
    seen = collections.Counter()
    special = vocab.special_lookup()
    for a, b in zip(tfrecord, parquet, strict=True):
        for field in ("input_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_predictions"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        original = a.input_ids.copy()
        for row, n in enumerate(a.num_predictions):
            original[row, a.masked_lm_positions[row, :n]] = a.masked_lm_ids[row, :n]
            assert not special[a.masked_lm_ids[row, :n]].any()  # never selected
            replaced = a.input_ids[row, a.masked_lm_positions[row, :n]]
            drawn = replaced[(replaced != vocab.mask_id) & (replaced != a.masked_lm_ids[row, :n])]
            assert not special[drawn].any()  # never drawn
        for row, n in enumerate(a.lengths):
            assert original[row, : frame.prefix.size].tolist() == frame.prefix.tolist()
            assert original[row, n - frame.suffix.size : n].tolist() == frame.suffix.tolist()
            seen[tuple(original[row, frame.prefix.size : n - frame.suffix.size].tolist())] += 1
    assert seen == expected


def _own_pair_frame(tokenizer) -> list:
    """The tokenizer's own pair frame, read off its encoding of a dummy pair: (id or "A"/"B", type id)."""
    encoding = tokenizer.encode("a", "b", add_special_tokens=True)
    frame = []
    for token_id, sequence, type_id in zip(encoding.ids, encoding.sequence_ids, encoding.type_ids):
        item = token_id if sequence is None else "AB"[sequence]
        if not (frame and isinstance(item, str) and frame[-1][0] == item):
            frame.append((item, type_id))
    return frame


@pytest.mark.slow
def test_sop_pairs_are_framed_as_the_tokenizer_frames_pairs(family):
    _, path, _, (output, manifest) = family
    tokenizer = tokenize.load_tokenizer(path.read_text(encoding="utf-8"))
    own = _own_pair_frame(tokenizer)
    specials = sum(not isinstance(item, str) for item, _ in own)
    table = pq.read_table(output / shard_files(output, "parquet")[0])
    assert table.num_rows > 100
    columns = ("input_ids", "attention_mask", "token_type_ids", "labels")
    for ids, mask, types, labels in zip(*(table.column(c).to_numpy(zero_copy_only=False) for c in columns)):
        n = int(mask.sum())
        original = np.where(labels != -100, labels, ids)[:n]
        # Where B starts: the pair frame's specials are the only special tokens in a row.
        is_frame = np.isin(original, [item for item, _ in own if not isinstance(item, str)])
        assert is_frame.sum() == specials
        runs = np.split(np.arange(n), np.nonzero(np.diff(is_frame.astype(int)))[0] + 1)
        segments = [r for r in runs if not is_frame[r[0]]]
        assert len(segments) == 2  # A and B, each at least one token
        expected_ids, expected_types = [], []
        for item, type_id in own:
            part = original[segments["AB".index(item)]].tolist() if isinstance(item, str) else [item]
            expected_ids += part
            expected_types += [type_id] * len(part)
        assert original.tolist() == expected_ids
        assert types[:n].tolist() == expected_types and not types[n:].any()


@pytest.mark.slow
def test_whole_words_follow_the_tokenizers_own_pre_tokenization(family, corpus):
    """A word is a run of tokens with one ``Encoding.word_ids`` value (``##`` pieces, byte-level ``Ġ`` or
    Metaspace ``▁`` alike): its tokens are selected together with one 80/10/10 decision; blank tokens
    (whitespace alone) never are."""
    name, path, (_, manifest), _ = family
    tokenizer, vocab = manifest_lib.vocabulary(manifest, path.read_text(encoding="utf-8"))
    with open(corpus[1], encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))[:40]
    encodings = tokenizer.encode_batch(docs, add_special_tokens=False)
    ids, starts = tokenize.encode_with_word_starts(tokenizer, docs)
    for encoding, flags in zip(encodings, starts):
        words = np.array([-1 if w is None else w for w in encoding.word_ids])
        np.testing.assert_array_equal(flags[1:], words[1:] != words[:-1])
    input_ids, lengths, _, word_starts = pack_documents(
        ids, max_seq_length=SEQ, frame=vocab.frame, pad_id=vocab.pad_id, word_starts=starts
    )
    copies = 8
    many = np.tile(input_ids, (copies, 1))
    out = mask_batch(
        many,
        np.tile(lengths, copies),
        keys.record_keys(np.arange(len(many), dtype=np.uint64), seed=7, dupe=0),
        config=MaskingConfig(max_predictions_per_seq=PREDICTIONS, masking="word"),
        is_special=vocab.unselectable_lookup(),
        mask_id=vocab.mask_id,
        random_ids=vocab.random_ids,
        word_starts=np.tile(word_starts, (copies, 1)),
    )
    blank = np.isin(many, vocab.blank_ids)
    multi = 0
    for row, flags in enumerate(np.tile(word_starts, (copies, 1))):
        k, n = out.num_predictions[row], np.tile(lengths, copies)[row]
        selected = np.zeros(SEQ, bool)
        selected[out.masked_lm_positions[row, :k]] = True
        assert not (selected & blank[row]).any()
        body = np.arange(vocab.frame.prefix.size, n - vocab.frame.suffix.size)
        cuts = [c for c in body if flags[c] or c == body[0]] + [body[-1] + 1]
        for start, end in zip(cuts[:-1], cuts[1:]):
            usable = ~blank[row, start:end]
            chosen = selected[start:end][usable]
            assert chosen.all() or not chosen.any(), "part of a word was selected"
            if chosen.all() and chosen.size:
                is_mask = out.input_ids[row, start:end][usable] == vocab.mask_id
                assert is_mask.all() or not is_mask.any(), "one decision per word"
                multi += chosen.size > 1
    assert multi > 20


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", *args], capture_output=True, text=True, timeout=300
    )


def _refused(done, *words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.fixture(scope="module")
def family_paths(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    paths = {}
    for name in ("roberta", "xlmr"):
        paths[name] = root / f"{name}.json"
        paths[name].write_text(families.BUILDERS[name](corpus).to_str(), encoding="utf-8")
    return paths


@pytest.mark.slow
def test_unusable_tokenizers_are_one_line_naming_what_is_missing(tmp_path, corpus, family_paths):
    run = ["run", f"--input={corpus[0]}", f"--output={tmp_path / 'out'}"]
    not_json = tmp_path / "notes.json"
    not_json.write_text('{"notes": "not a tokenizer"}')
    _refused(_run(*run, f"--tokenizer={not_json}"), "--tokenizer", "cannot load tokenizer.json")
    text = family_paths["roberta"].read_text(encoding="utf-8")
    data = json.loads(text)
    for token in data["added_tokens"]:
        token["special"] = token["content"] != "<mask>"
    not_special = tmp_path / "mask-not-special.json"
    not_special.write_text(json.dumps(data))
    _refused(_run(*run, f"--tokenizer={not_special}"), "mask token '<mask>' is not a special token")
    _refused(
        _run(*run, f"--tokenizer={family_paths['roberta']}", "--special_tokens=mask=<msk>"),
        "--special_tokens mask=<msk>",
        "not in the vocabulary",
    )
    _refused(
        _run(*run, f"--tokenizer={family_paths['roberta']}", "--special_tokens=mask"), "--special_tokens"
    )
    data = json.loads(text)
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in ("<mask>", "<pad>")]
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if k not in ("<mask>", "<pad>")}
    no_mask = tmp_path / "no-mask.json"
    no_mask.write_text(json.dumps(data))
    _refused(_run(*run, f"--tokenizer={no_mask}"), "mask", "pad", "--special_tokens mask=TOKEN,pad=TOKEN")
    data = json.loads(text)
    data["post_processor"] = None
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in ("<s>", "</s>")]
    no_frame = tmp_path / "no-frame.json"
    no_frame.write_text(json.dumps(data))
    _refused(
        _run(*run, f"--tokenizer={no_frame}"), "frames no sequence", "--special_tokens cls=TOKEN,sep=TOKEN"
    )
    assert not (tmp_path / "out").exists()
    done = _run(
        "train-tokenizer", f"--input={corpus[0]}", f"--output={tmp_path / 't.json'}", "--model=wordlevel"
    )
    _refused(done, "--model", "wordpiece, bpe, unigram")
    assert not (tmp_path / "t.json").exists()


def test_roles_come_from_the_flag_then_the_files_beside_the_tokenizer(tmp_path, corpus, family_paths):
    """A tokenizer whose specials have names of its own: the files beside it name them, the flag wins."""
    data = json.loads(family_paths["xlmr"].read_text(encoding="utf-8"))
    renames = {"<s>": "<cls>", "</s>": "<sep>", "<mask>": "<blank>", "<pad>": "<empty>"}
    for token in data["added_tokens"]:
        token["content"] = renames.get(token["content"], token["content"])
    data["model"]["vocab"] = [[renames.get(p, p), s] for p, s in data["model"]["vocab"]]
    for item in data["post_processor"]["single"] + data["post_processor"]["pair"]:
        if "SpecialToken" in item:
            item["SpecialToken"]["id"] = renames[item["SpecialToken"]["id"]]
    data["post_processor"]["special_tokens"] = {
        renames[k]: {**v, "id": renames[k], "tokens": [renames[k]]}
        for k, v in data["post_processor"]["special_tokens"].items()
    }
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    run = ["run", f"--input={corpus[0]}", f"--tokenizer={folder / 'tokenizer.json'}"]
    _refused(_run(*run, f"--output={tmp_path / 'none'}"), "mask (", "pad (")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"mask_token": "<blank>", "pad_token": "<empty>"})
    )
    (folder / "special_tokens_map.json").write_text(json.dumps({"mask_token": {"content": "<sep>"}}))
    manifest = run_job(tmp_path / "beside", *run[1:])
    assert manifest["tokenizer"]["special_tokens"] == {
        "pad": "<empty>", "unk": "<unk>", "cls": None, "sep": None, "mask": "<blank>"
    }  # fmt: skip
    assert manifest["tokenizer"]["frames"]["pair"] == "<cls> A <sep> <sep> B <sep>"
    manifest = run_job(tmp_path / "flag", *run[1:], "--special_tokens=mask=<empty>,pad=<blank>,cls=<cls>")
    assert manifest["tokenizer"]["special_tokens"] == {
        "pad": "<blank>", "unk": "<unk>", "cls": "<cls>", "sep": None, "mask": "<empty>"
    }  # fmt: skip
    assert verify.verify(str(tmp_path / "flag")).problems == []


@pytest.mark.parametrize(
    "model, special_tokens, frames",
    [
        ("bpe", None, families.FRAMES["roberta"]),
        ("unigram", None, families.FRAMES["xlmr"]),
        ("bpe", "cls=[CLS],sep=[SEP],pad=[PAD],mask=[MASK],unk=[UNK]", families.FRAMES["modernbert"]),
    ],
)
def test_train_tokenizer_writes_each_familys_tokenizer_and_its_config(
    tmp_path, corpus, model, special_tokens, frames
):
    output = tmp_path / "tokenizer.json"
    flags = [f"--special_tokens={special_tokens}"] if special_tokens else []
    done = _run(
        "train-tokenizer", *(f"--input={p}" for p in corpus), f"--output={output}", f"--model={model}",
        "--vocab_size=1200", *flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    mapping = json.loads((tmp_path / "special_tokens_map.json").read_text())
    mask = "[MASK]" if special_tokens else "<mask>"
    assert config["mask_token"] == mapping["mask_token"]
    assert config["mask_token"]["content"] == mask and config["mask_token"]["lstrip"] is True
    tokenizer = tokenize.load_tokenizer(output.read_text(encoding="utf-8"))
    vocab = tokenize.vocabulary(tokenizer)
    assert vocab.frames == frames and tokenizer.id_to_token(vocab.mask_id) == mask
    assert tokenizer.get_vocab_size() == 1200
    if model == "bpe":  # byte-level: every text decodes back to itself, line breaks and all scripts included
        texts = [pathlib.Path(p).read_text(encoding="utf-8") for p in corpus]
        for text in texts:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            assert tokenizer.decode(ids) == text


def test_a_byte_level_bpe_output_is_byte_identical_with_one_and_two_workers(tmp_path, corpus, family_paths):
    args = [
        *(f"--input={p}" for p in corpus),
        f"--tokenizer={family_paths['roberta']}",
        "--whole_word_masking",
    ]
    one = run_job(tmp_path / "one", *args, "--direct_num_workers=1")
    two = run_job(tmp_path / "two", *args, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
