"""The Hugging Face way of preparing MLM data, for bench/throughput.py to compare with.

As transformers' run_mlm.py does it, in its fastest form: a ``datasets``
``map`` (batched, fast tokenizer), ``group_texts`` packing into blocks of
128, then ``DataCollatorForLanguageModeling(mlm_probability=0.15)`` over all
rows at once (numpy) and a Parquet write. One process (num_proc=1). Prints
one JSON line: seconds, start-up seconds, tokens and rows.

  python bench/hf_baseline.py TOKENIZER_JSON OUT_DIR CORPUS [CORPUS ...]
"""

import itertools
import json
import os
import sys
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(tokenizer_file, out_dir, *corpora, block_size=128):
    start = time.perf_counter()
    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from mlmprep.transforms.text_input import iter_documents

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
    docs = []
    for corpus in corpora:
        with open(corpus, encoding="utf-8") as f:
            docs += list(iter_documents(f, "text"))
    dataset = datasets.Dataset.from_dict({"text": docs})
    loaded = time.perf_counter()

    def tokenize(batch):
        return tokenizer(batch["text"], return_special_tokens_mask=True)

    def group_texts(examples):  # run_mlm.py's
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        return {
            k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()
        }

    tokenized = dataset.map(tokenize, batched=True, num_proc=1, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True, num_proc=1).with_format("numpy")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, return_tensors="np")
    input_ids, labels = collator.numpy_mask_tokens(
        np.asarray(grouped["input_ids"]), special_tokens_mask=np.asarray(grouped["special_tokens_mask"])
    )

    def column(matrix):
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).ravel()), block_size)

    table = pa.table(
        {
            "input_ids": column(input_ids),
            "attention_mask": column(grouped["attention_mask"]),
            "token_type_ids": column(np.zeros_like(input_ids)),
            "labels": column(labels),
        }
    )
    os.makedirs(out_dir, exist_ok=True)
    pq.write_table(table, os.path.join(out_dir, "train.parquet"))
    end = time.perf_counter()
    tokens = int(sum(len(ids) for ids in tokenized["input_ids"]))
    print(
        json.dumps(
            {"seconds": end - start, "startup_seconds": loaded - start, "tokens": tokens, "rows": len(labels)}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
