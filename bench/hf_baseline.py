"""The Hugging Face way of preparing MLM data, for bench/throughput.py to compare with.

As transformers' run_mlm.py does it: ``datasets`` ``map`` (batched, fast
tokenizer), ``group_texts`` packing into blocks of 128, then
``DataCollatorForLanguageModeling(mlm_probability=0.15)`` and a Parquet write.
One process (num_proc=1). Prints one JSON line: seconds and tokens.

  python bench/hf_baseline.py CORPUS TOKENIZER_JSON OUT_DIR
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(corpus, tokenizer_file, out_dir, block_size=128):
    start = time.perf_counter()
    import datasets
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from mlmprep.transforms.documents import iter_documents

    datasets.disable_caching()
    datasets.disable_progress_bars()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=1 << 30,
    )
    with open(corpus, encoding="utf-8") as f:
        docs = list(iter_documents(f, "text"))
    dataset = datasets.Dataset.from_dict({"text": docs})
    loaded = time.perf_counter()

    def tokenize(batch):
        return tokenizer(batch["text"], return_special_tokens_mask=True)

    def group_texts(examples):  # run_mlm.py's
        concatenated = {k: sum(examples[k], []) for k in examples}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        return {
            k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()
        }

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, return_tensors="np")

    def mask(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        out = collator(rows)
        return {k: v.tolist() for k, v in out.items()}

    tokenized = dataset.map(tokenize, batched=True, num_proc=1, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True, num_proc=1)
    masked = grouped.map(
        mask, batched=True, batch_size=1000, num_proc=1, remove_columns=["special_tokens_mask"]
    )
    os.makedirs(out_dir, exist_ok=True)
    masked.to_parquet(os.path.join(out_dir, "train.parquet"))
    end = time.perf_counter()
    tokens = sum(len(ids) for ids in tokenized["input_ids"])
    print(
        json.dumps(
            {"seconds": end - start, "startup_seconds": loaded - start, "tokens": tokens, "rows": len(masked)}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
