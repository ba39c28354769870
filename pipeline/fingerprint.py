"""What a build is made of, as one hash: the config and the input files with their sizes and times.

Scheduled corpus rebuilds compare it with the last build's manifest and skip
a rebuild whose inputs and options have not changed. A file counts as changed
when its size or its modification time does, as the file system reports them
(local files, gs://, s3://, ... all do): an edit that keeps the size still
moves the time, and hashing the content instead would read the whole corpus
before deciding whether to read it.
"""

import hashlib
import json
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems


class InputFile(NamedTuple):
    path: str
    size: int
    modified: float  # seconds since the epoch; 0.0 where a file system does not say


def list_inputs(patterns) -> list[InputFile]:
    """Every file the patterns match, sorted by path."""
    files = set()
    for pattern in patterns:
        for m in FileSystems.match([pattern])[0].metadata_list:
            if not m.path.endswith("/"):
                files.add(InputFile(m.path, m.size_in_bytes, m.last_updated_in_seconds))
    return sorted(files)


# Options that say where and how a build runs, not what it builds; --recipe is a name for the options it set.
NOT_THE_BUILD = ("output", "overwrite", "split_input_mb", "grouping", "recipe")
# Options that change nothing without sentence pairs: a build from before they existed keeps its fingerprint.
PAIR_OPTIONS = ("sentence_pairs", "short_seq_prob", "sentence_language")
NEAR_DEDUP_OPTIONS = ("near_dedup_shingle", "near_dedup_hashes", "near_dedup_bands", "near_dedup_rows",
                      "near_dedup_threshold")  # fmt: skip
# Options added later, at the value builds from before them had: left out, so those keep their fingerprint.
AS_BEFORE = {
    "span_lengths": "geometric",
    "mds_compression": "zstd",
    "near_dedup": False,
    "near_dedup_shingle": 5,
    "near_dedup_hashes": 112,
    "near_dedup_bands": 14,
    "near_dedup_rows": 8,
    "near_dedup_threshold": 0.75,
    "decontaminate": None,
    "decontaminate_ngram": 13,
    **dict.fromkeys(("tokens", "temperature", "weights", "max_repeats", "max_doc_tokens")),
}


def fingerprint(config: dict, files: list[InputFile], tokenizer_sha256: str) -> str:
    """sha256 over the run's settings (not where or how it runs), the tokenizer, and the input list."""
    # Builds from before the settings were defined once recorded --whole_word_masking beside --masking.
    config = {**config, "whole_word_masking": config.get("masking") == "word"}
    ignored = NOT_THE_BUILD + (PAIR_OPTIONS if config.get("sentence_pairs", "none") == "none" else ())
    ignored += () if config.get("near_dedup") else NEAR_DEDUP_OPTIONS
    ignored += () if config.get("decontaminate") else ("decontaminate_ngram",)
    options = {
        k: v for k, v in config.items() if k not in ignored and not (k in AS_BEFORE and v == AS_BEFORE[k])
    }
    payload = json.dumps({"config": options, "tokenizer": tokenizer_sha256, "inputs": files}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def needs_rebuild(previous_manifest: dict | None, current: str) -> bool:
    """True unless the previous build finished with the same fingerprint."""
    return previous_manifest is None or previous_manifest.get("input_fingerprint") != current
