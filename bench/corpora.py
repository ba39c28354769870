"""The benchmark corpora, from ../shared/data, at any scale: distinct copies, so deduplication keeps them.

``long``:  linux_docs_en.txt: 25 MB of long documents (kernel documentation).
``short``: foldoc, the English, German and Russian fortunes, the Devil's
           Dictionary and the Jargon File, two copies: 31 MB in 140 k short
           documents, where per-document work dominates.
``fortunes``: fortunes_en.txt alone: 2.5 MB in 15 k documents of about 165
           bytes.
``bench``: the whole bench folder: 76 MB in 34 files, English and 26 other
           languages.

Copy ``i > 0`` of a file has ``v<i> `` before each document's first line:
every copy is new to deduplication, and tokenizes to two tokens more a
document than the original. Such copies are near-duplicates, which
``--near_dedup`` removes: ``scrambled`` copies have the words of each line
in an order of their own as well, so that each copy is new to it too.
"""

import pathlib
import random

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = SHARED / "corpora"
VOCAB = SHARED / "vocab" / "bert-base-uncased" / "vocab.txt"
TOKENIZER_JSON = SHARED / "vocab" / "bert-base-uncased" / "tokenizer.json"

_SHORT = ["bench/foldoc.txt", "small/fortunes_en.txt", "bench/fortunes_de.txt", "bench/fortunes_ru.txt",
          "small/devils_dictionary.txt", "small/jargon.txt"]  # fmt: skip
BASE = {  # name: (files, copies at scale 1)
    "long": (["bench/linux_docs_en.txt"], 1),
    "short": (_SHORT, 2),
    "fortunes": (["small/fortunes_en.txt"], 1),  # 2.5 MB of short documents alone (~165 bytes each)
    "bench": (sorted(str(p.relative_to(CORPORA)) for p in (CORPORA / "bench").rglob("*") if p.is_file()), 1),
}


def _copy(source: pathlib.Path, target: pathlib.Path, copy: int, scrambled: bool = False) -> None:
    if copy == 0:
        target.write_bytes(source.read_bytes())
        return
    marker, first, order = f"v{copy} ".encode(), True, random.Random(copy)
    with open(source, "rb") as src, open(target, "wb") as out:
        for line in src:
            blank = not line.strip()
            if scrambled and not blank:
                words = line.split()
                order.shuffle(words)
                line = b" ".join(words) + b"\n"
            out.write(line if blank or not first else marker + line)
            first = blank


def build(name: str, scale: int, folder: pathlib.Path, scrambled: bool = False) -> list[pathlib.Path]:
    """Writes corpus ``name`` at ``scale`` into ``folder``; returns its files."""
    files, copies = BASE[name]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for copy in range(copies * scale):
        for relative in files:
            target = folder / f"{copy}{'s' if scrambled else ''}-{relative.replace('/', '-')}"
            if not target.exists():
                _copy(CORPORA / relative, target, copy, scrambled)
            out.append(target)
    return out
