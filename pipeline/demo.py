"""Runs the whole job on a corpus every Python has: the Language Reference.

CPython ships the text of its Language Reference topics in
``pydoc_data.topics``; the demo writes it out as a corpus (one topic a
document), trains a small WordPiece tokenizer on it with mlmprep's own
trainer, runs ``mlmprep run`` and shows one decoded example.
"""

import os
import re

import pyarrow.parquet as pq

from mlmprep.pipeline import inspect, job, manifest, summary, train_tokenizer


def write_corpus(path: str) -> int:
    """Writes the Language Reference topics as blank-line-separated documents."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        lines = [line.rstrip() for line in topics[name].splitlines()]
        text = "\n".join(line for line in lines if line.strip())
        if text:
            documents.append(text)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(documents) + "\n")
    return len(documents)


def main(output: str, beam_args=()):
    inputs = os.path.join(output, "inputs")
    shards = os.path.join(output, "shards")
    os.makedirs(inputs, exist_ok=True)
    corpus = os.path.join(inputs, "python_reference.txt")
    num_documents = write_corpus(corpus)
    tokenizer_path = os.path.join(inputs, "tokenizer.json")
    tokenizer = train_tokenizer.train([corpus], vocab_size=4000)
    tokenizer.save(tokenizer_path)
    print(f"corpus: {corpus} ({num_documents} documents); tokenizer: {tokenizer_path}")

    argv = [
        f"--input={corpus}",
        f"--output={shards}",
        f"--tokenizer={tokenizer_path}",
        "--validation_fraction=0.1",
        "--num_shards=2",
        "--overwrite",
        *beam_args,
    ]
    print("mlmprep run " + " ".join(argv))
    job.run(argv)
    built = manifest.read(shards)
    print(summary.format_manifest(shards, built))
    first = sorted(s["file"] for s in built["shards"] if s["format"] == "parquet" and s["records"])[0]
    row = pq.read_table(os.path.join(shards, first)).slice(0, 1).to_pylist()[0]
    text = inspect.describe_example(tokenizer, row, tokenizer.token_to_id("[MASK]"))
    print(f"\nfirst example of {first} ([MASK→original], {{random→original}}, <kept>):")
    print(re.sub(r" ##", "", text))
