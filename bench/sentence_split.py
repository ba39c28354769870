"""What splitting sentences costs beside tokenizing: sentencex (mlmprep's), and blingfire and pysbd where
installed (``pip install blingfire pysbd``), on the same documents.

  python bench/sentence_split.py [--mb 2]

For each of six languages of the bench corpora, the first ``--mb`` MB cut
into documents at blank lines: MB/s of each splitter on every line of every
document (as ``--sentence_pairs`` splits them), beside MB/s of the
bert-base-uncased tokenizer (``encode_batch_fast``, one thread) on the same
text. pysbd is timed on a twentieth of the text: it is that slow.
"""

import argparse
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizer on one thread, as the splitters run

import corpora  # noqa: E402  (this folder is on the path of a script run from it)

from mlmprep.transforms.pairs import split_sentences  # noqa: E402
from mlmprep.transforms.tokenize import load_tokenizer, tokenizer_json  # noqa: E402

SAMPLES = {  # language: a bench file in it
    "en": "bench/linux_docs_en.txt",
    "de": "bench/fortunes_de.txt",
    "ru": "bench/fortunes_ru.txt",
    "zh": "bench/fortunes_zh.txt",
    "fr": "bench/debian_handbook/fr-FR.txt",
    "ja": "bench/debian_handbook/ja-JP.txt",
}


def _rate(function, documents) -> tuple[float, int]:
    """MB/s of ``function`` over the documents, and how many pieces it returned."""
    size = sum(len(d.encode()) for d in documents)
    start = time.perf_counter()
    pieces = sum(len(function(d)) for d in documents)
    return size / (time.perf_counter() - start) / 1e6, pieces


def _lines_then(split):
    """A splitter applied to each line of a document, as --sentence_pairs applies sentencex."""
    return lambda document: [s for line in document.split("\n") if line.strip() for s in split(line)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=2.0, help="MB of each language's text.")
    args = parser.parse_args()
    tokenizer = load_tokenizer(tokenizer_json(corpora.VOCAB.read_bytes()))
    splitters = {}
    try:
        import blingfire

        splitters["blingfire"] = _lines_then(lambda line: blingfire.text_to_sentences(line).split("\n"))
    except ImportError:
        pass
    try:
        import pysbd
    except ImportError:
        pysbd = None
    print(f"{'language':8} {'tokenizer':>10} {'sentencex':>10} " + "".join(f"{n:>10}" for n in splitters)
          + (f"{'pysbd':>10}" if pysbd else "") + "   (MB/s, one thread)")  # fmt: skip
    for language, name in SAMPLES.items():
        path = corpora.CORPORA / name
        if not path.exists():
            continue
        text = path.read_bytes()[: int(args.mb * 1e6)].decode("utf-8", "ignore")
        documents = [d for d in text.split("\n\n") if d.strip()]
        tokenize, _ = _rate(lambda d: tokenizer.encode_batch_fast([d], add_special_tokens=False), documents)
        ours, sentences = _rate(lambda d, language=language: split_sentences(d, language), documents)
        row = f"{language:8} {tokenize:10.2f} {ours:10.2f} "
        row += "".join(f"{_rate(split, documents)[0]:10.2f}" for split in splitters.values())
        if pysbd:
            segmenter = pysbd.Segmenter(language=language, clean=False)
            row += (
                f"{_rate(_lines_then(segmenter.segment), documents[: max(1, len(documents) // 20)])[0]:10.3f}"
            )
        print(row + f"   sentencex: {sentences:,} sentences, {tokenize / ours:.0%} of the tokenizer's time")


if __name__ == "__main__":
    main()
