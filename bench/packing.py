"""How full the sequences are under each packing, and best-fit's window: slot utilization (real tokens /
slots) and pieces per sequence, side by side on the same documents.

  python bench/packing.py [--corpus foldoc fortunes_en linux_docs_en] [--length 128 512 2048]
                          [--window 16 64 256 1024 4096]

Documents are read and tokenized once per corpus (bert-base-uncased), in a pseudo-random order as
the job's key order is, then packed in groups as the job packs them: ``document`` (one document per
sequence, its tail padded), ``concat`` (joined, filling every sequence) and ``best_fit`` at each
window. The time is the packer's own, per million tokens.
"""

import argparse
import sys
import time

import corpora  # this folder is on the path of a script run from it
import numpy as np

FILES = {
    "foldoc": "bench/foldoc.txt",
    "fortunes_en": "small/fortunes_en.txt",
    "linux_docs_en": "bench/linux_docs_en.txt",
    "devils_dictionary": "small/devils_dictionary.txt",
}


def documents(name: str):
    from mlmprep.transforms import keys
    from mlmprep.transforms.text_input import iter_documents
    from mlmprep.transforms.tokenize import encode_batch, load_tokenizer, tokenizer_json, vocabulary

    tokenizer = load_tokenizer(tokenizer_json(corpora.VOCAB.read_bytes()))
    with open(corpora.CORPORA / FILES[name], encoding="utf-8") as f:
        texts = list(iter_documents(f, "text"))
    ids = encode_batch(tokenizer, texts)
    order = np.argsort(
        keys.content_keys(b"".join(t.encode() for t in texts), [len(t.encode()) for t in texts])
    )
    return [ids[i] for i in order], vocabulary(tokenizer)


def _pack(packing: str, ids, vocab, length: int, window: int | None = None):
    from mlmprep.transforms import pack

    shape = dict(max_seq_length=length, frame=vocab.frame, pad_id=vocab.pad_id)
    start = time.process_time()
    if packing == "document":
        _, lengths, _, _ = pack.pack_documents(ids, **shape)
    elif packing == "concat":
        _, lengths, _ = pack.pack_concat(ids, **shape, joiner_id=vocab.joiner_id)
    else:
        packer = pack.BestFitPacker(**shape, window=window)
        parts = [
            packer.add(ids[i : i + pack.CONCAT_SLICE_DOCS])
            for i in range(0, len(ids), pack.CONCAT_SLICE_DOCS)
        ]
        parts.append(packer.finish())
        lengths = np.concatenate([p[1] for p in parts])
        rows = np.concatenate([p[0] for p in parts])
        pieces = int(np.sum(rows == vocab.frame.prefix[0]))
    seconds = time.process_time() - start
    if packing != "best_fit":
        pieces = len(lengths)
    tokens = int(lengths.sum())
    return tokens / (len(lengths) * length), pieces / len(lengths), seconds / tokens * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", nargs="+", default=["foldoc", "fortunes_en", "linux_docs_en"], choices=FILES
    )
    parser.add_argument("--length", nargs="+", type=int, default=[128, 512, 2048])
    parser.add_argument("--window", nargs="+", type=int, default=[16, 64, 256, 1024, 4096])
    args = parser.parse_args()
    header = ("corpus", "length", "packing", "utilization", "pieces/seq", "s/M tokens")
    print("{:14s} {:>6s} {:>16s} {:>11s} {:>10s} {:>10s}".format(*header))
    for name in args.corpus:
        ids, vocab = documents(name)
        print(f"{name}: {len(ids):,} documents, {sum(i.size for i in ids):,} tokens", file=sys.stderr)
        for length in args.length:
            runs = [("document", None), ("concat", None)] + [("best_fit", w) for w in args.window]
            for packing, window in runs:
                utilization, pieces, seconds = _pack(packing, ids, vocab, length, window)
                label = packing if window is None else f"best_fit w={window}"
                print(
                    f"{name:14s} {length:6d} {label:>16s} {utilization:11.2%} {pieces:10.2f} {seconds:10.3f}"
                )


if __name__ == "__main__":
    main()
