"""manifest.json: what a run wrote, and how, for the tools that read it.

It is written last, after every shard, so its presence marks a complete
output (as TFDS writes its info files after the shards). Replacing it is
how a build over an earlier one commits: the new build's files have names
of their own (``shards.generation_tag``), the old build stays whole until the
new manifest.json takes the old one's place in one step, and only then are
the old build's files removed. A run that fails or is killed before that
leaves the previous build as it was.
"""

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from typing import NotRequired, TypedDict

import pyarrow.fs

from mlmprep.pipeline.settings import SETTINGS, Settings
from mlmprep.transforms import encode, mds, near_dedup, profile
from mlmprep.transforms.shards import MDS_FOLDER, SUFFIXES, TEMP_SUFFIX, generation_tag, mds_folder
from mlmprep.transforms.tokenize import SPLITS, load_tokenizer
from mlmprep.transforms.tokenize import vocabulary as tokenize_vocabulary

FORMAT_VERSION = 2  # what this mlmprep writes
# What it reads: 1 kept every run option as "config", a dict of flags; 2 keeps the resolved "settings".
READS = (1, 2)


class ShardEntry(TypedDict):
    file: str  # relative to the output directory
    split: str  # SPLITS
    format: str  # shards.FORMATS
    records: int
    tokens: int
    predictions: int
    sha256: str
    bytes: NotRequired[int]  # the file's size (written since mlmprep wrote MDS)
    raw_bytes: NotRequired[int]  # MDS: the file's size uncompressed, which index.json records
    unk_tokens: int  # real positions whose token before masking is the unknown token
    padding: int  # positions holding [PAD]
    pieces: int  # documents or parts of one, each framed: one a sequence but with best-fit packing
    sequence_lengths: list[int]  # records by real length, profile.length_buckets
    next_sentence_labels: NotRequired[list[int]]  # sentence pairs: records of label 0 and of label 1


class SplitCounts(TypedDict):
    documents: int
    sequences: int
    tokens: int
    predictions: int
    shards: int  # per format
    unk_tokens: int  # what the tokenizer did not know: tokens that are its unknown token, before masking
    padding: int  # positions holding [PAD]: sequences * max_seq_length - tokens
    pieces: int  # as ShardEntry's
    sequence_lengths: list[int]  # sequences by real length (profile.length_buckets)
    document_tokens: list[int]  # documents by tokens (profile.document_buckets)
    next_sentence_labels: NotRequired[list[int]]  # sentence pairs: sequences of label 0 and of label 1


class Counts(TypedDict):
    documents_read: int
    documents_written: int
    documents_dropped: dict[str, int]  # every DROP_REASONS
    splits: dict[str, SplitCounts]
    counters: dict[str, int]  # every Beam counter's total
    spans: NotRequired[dict[str, list[int]]]  # span masking: spans by words and by tokens (span_histogram)
    documents_kept: NotRequired[int]  # a phase of a build: the build's documents, read less dropped


class Manifest(TypedDict):
    """manifest.json, the contract between the job and every tool that reads its output."""

    format_version: int
    settings: dict  # every setting but --overwrite, by name (settings.Settings.flat); "config" in version 1
    generation: int
    tokenizer: dict  # file, sha256, vocab_size, special_ids
    versions: dict[str, str | None]
    input_files: int
    input_fingerprint: str | None
    counts: Counts
    shards: list[ShardEntry]
    recipe: NotRequired[dict]  # --recipe: its name, what it set, what the user's flags kept (recipes.Applied)
    mds: NotRequired[dict]  # --formats mds: the shards' config (mds.config) and each split's index.json
    near_dedup: NotRequired[dict]  # --near_dedup: clusters, rounds, examples (near_dedup_sections)
    decontamination: NotRequired[dict]  # --decontaminate: what was removed, with examples


class ManifestError(ValueError):
    """An output without a manifest.json this mlmprep can read; the message says why."""


# Every reason a document can be dropped for, listed (with 0) even when none was.
DROP_REASONS = (
    "binary",
    "contaminated",
    "duplicate",
    "empty",
    "malformed_json",
    "near_duplicate",
    "no_text_field",
    "no_tokens",
    "too_short",
    "unreadable_file",
)
MANIFEST = "manifest.json"
# The files a build writes; "generation" is absent in a build that replaced none.
SHARD_FILE = re.compile(
    rf"(?:{MDS_FOLDER}/(?:{'|'.join(SPLITS)})/)?(?:{'|'.join(SPLITS)})-\d{{5,}}-of-\d{{5,}}"
    rf"(?:\.g(?P<generation>\d+))?\.(?:{'|'.join(SUFFIXES.values())})(?:\.(?:{'|'.join(mds.COMPRESSIONS)}))?"
)
TOKENIZER_FILE = re.compile(r"tokenizer(?:\.g(?P<generation>\d+))?\.json")
TEMP_FILE = re.compile(rf"(?P<name>.+)\.[0-9a-f]{{32}}{re.escape(TEMP_SUFFIX)}")  # while being written


def tokenizer_name(generation: int = 0) -> str:
    return f"tokenizer{generation_tag(generation)}.json"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    names = ("mlmprep", "apache-beam", "tokenizers", "pyarrow", "numpy")
    return {**{n: _version(n) for n in names}, "python": platform.python_version()}


def build(
    *,
    settings: dict,
    tokenizer_json: str,
    vocab,
    shards: list[dict],
    counts: dict,
    formats,
    input_files: int = 0,
    input_fingerprint: str | None = None,
    generation: int = 0,
    tokenizer_file: str | None = None,
    recipe: dict | None = None,
    mds_config: dict | None = None,
    near_dedup: dict | None = None,
    source_names: list[str] | None = None,
) -> dict:
    """The manifest of a run, from its shard infos and its summed counts; ``mds_config``: what its MDS
    shards say of themselves (``mds.config``), from which commit writes each split's index.json."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    dropped.update({k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("documents_dropped.")})
    splits = {}
    for split in SPLITS:
        files = [s for s in shards if s["split"] == split and s["format"] == formats[0]]
        if not files and not counts.get(f"documents.{split}"):
            continue
        splits[split] = {
            "documents": counts.get(f"documents.{split}", 0),
            "sequences": sum(s["records"] for s in files),
            "tokens": sum(s["tokens"] for s in files),
            "predictions": sum(s["predictions"] for s in files),
            "shards": len(files),
            "unk_tokens": sum(s.get("unk_tokens", 0) for s in files),
            "padding": sum(s.get("padding", 0) for s in files),
            "pieces": sum(s.get("pieces", 0) for s in files),
            "sequence_lengths": [sum(n) for n in zip(*(s["sequence_lengths"] for s in files))]
            if files
            else [0] * profile.BUCKETS,
            "document_tokens": [
                counts.get(f"{profile.DOCUMENT_TOKENS}.{split}.{bucket}", 0)
                for bucket in range(profile.BUCKETS)
            ],
        }
        if any("next_sentence_labels" in s for s in files):
            labels = [s.get("next_sentence_labels", [0, 0]) for s in files]
            splits[split]["next_sentence_labels"] = [sum(n[0] for n in labels), sum(n[1] for n in labels)]
    built = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "generation": generation,
        "tokenizer": {
            "file": tokenizer_file or tokenizer_name(generation),
            "sha256": encode.sha256(tokenizer_json.encode("utf-8")),
            **vocab.manifest_entry(),
        },
        "versions": versions(),
        "input_files": input_files,
        "input_fingerprint": input_fingerprint,
        "counts": {
            "documents_read": counts.get("documents_read", 0),
            "documents_written": sum(s["documents"] for s in splits.values()),
            "documents_dropped": dropped,
            "splits": splits,
            "counters": counts,
        },
        "shards": sorted(shards, key=lambda s: s["file"]),
    }
    built.update(near_dedup_sections(settings, counts, near_dedup or {}, source_names))
    if "documents_kept" in counts:  # a phase of a build: what the build kept, of which the phase chose
        built["counts"]["documents_kept"] = counts["documents_kept"]
    spans = span_histogram(counts)
    if spans is not None:
        built["counts"]["spans"] = spans
    if recipe is not None:
        built["recipe"] = recipe
    if mds_config is not None:
        splits_written = sorted({s["split"] for s in shards if s["format"] == "mds"}, key=SPLITS.index)
        built["mds"] = {
            "config": mds_config,
            "indexes": {split: mds_index_name(split) for split in splits_written},
        }
    return built


def mds_index_name(split: str) -> str:
    return f"{mds_folder(split)}/{mds.INDEX}"


def mds_indexes(manifest: Manifest) -> dict[str, bytes]:
    """Each split's MDS index.json, by its name in the output: what the manifest's MDS shards make."""
    if "mds" not in manifest:
        return {}
    config = manifest["mds"]["config"]
    return {
        name: mds.index_bytes(
            config, [s for s in manifest["shards"] if s["format"] == "mds" and s["split"] == split]
        )
        for split, name in manifest["mds"]["indexes"].items()
    }


def near_dedup_sections(settings: dict, counts: dict, found: dict, source_names: list[str] | None) -> dict:
    """The manifest's near_dedup and decontamination sections, where the settings asked for them: the
    counters of the job (``transforms.beam.near_dedup``) and what it found (``near_dedup.summary``)."""

    def by_source(reason: str) -> dict:
        names = source_names or [None]
        return {
            name or "input": counts.get(f"source_dropped.{i}.{reason}", 0) for i, name in enumerate(names)
        }

    sections = {}
    if settings.get("near_dedup"):
        took, converged = near_dedup.settled_rounds(counts)
        if not converged:
            logging.warning(
                "mlmprep: near-duplicate clusters had not settled after %d rounds: some clusters keep more "
                "than one document (none lost one it should keep)",
                took,
            )
        sections["near_dedup"] = {
            "removed": counts.get("documents_dropped.near_duplicate", 0),
            "clusters": counts.get("near_dedup.clusters", 0),
            "documents_in_clusters": counts.get("near_dedup.documents_in_clusters", 0),
            "keys_removed": counts.get("near_dedup.keys_removed", 0),
            "comparisons": counts.get("near_dedup.comparisons", 0),
            "confirmed_pairs": counts.get("near_dedup.confirmed_pairs", 0),
            "rounds": took,
            "converged": converged,
            "by_source": by_source("near_duplicate"),
            "largest_clusters": found.get("largest_clusters", []),
            "examples": found.get("examples", []),
        }
    if settings.get("decontaminate"):
        sections["decontamination"] = {
            "pattern": settings["decontaminate"],
            "ngram": settings.get("decontaminate_ngram"),
            "removed": counts.get("documents_dropped.contaminated", 0),
            "by_source": by_source("contaminated"),
            "examples": found.get("contamination", []),
        }
    return sections


def build_index(
    *,
    settings: dict,
    sources: list[dict],
    phases: list[dict],
    given: list[dict],
    top_given: dict,
    input_fingerprint: str | None,
) -> dict:
    """The manifest of a build of phases (OUTPUT/manifest.json): its sources and, per phase, its folder,
    what it holds and its sources table; each phase's folder is an output with a manifest of its own."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": "build",
        "settings": settings,
        "given": top_given,  # the top of the build file and the flags, as given: its phases derive the rest
        "versions": versions(),
        "input_fingerprint": input_fingerprint,
        "sources": sources,
        "phases": [
            {
                "name": m["build"]["phase"],
                "folder": m["build"]["phase"],
                "input_fingerprint": m["input_fingerprint"],
                "splits": {
                    split: {k: c[k] for k in ("documents", "sequences", "tokens")}
                    for split, c in m["counts"]["splits"].items()
                },
                "mixture": m["mixture"],
                "given": own,  # its own settings, as the build file gave them
            }
            for m, own in zip(phases, given)
        ],
    }


def is_build_index(m: dict) -> bool:
    """Whether a manifest lists a build's phases (each phase's folder holds the output)."""
    return m.get("kind") == "build"


def span_histogram(counts: dict) -> dict | None:
    """Span masking: {"words": [...], "tokens": [...]}, spans of 1, 2, ... words and tokens (every split
    and copy), from the mask step's counters; None without spans."""
    found = {}
    for name, n in counts.items():
        unit, _, length = name.partition(".")
        if unit in ("span_words", "span_tokens") and length.isdigit():
            found.setdefault(unit.removeprefix("span_"), {})[int(length)] = n
    if not found:
        return None
    return {unit: [by.get(k, 0) for k in range(1, max(by) + 1)] for unit, by in sorted(found.items())}


def generation_of(name: str) -> int | None:
    """The generation of a shard or tokenizer file name a build writes, finished or being written
    (0: untagged); None: not one."""
    temp = TEMP_FILE.fullmatch(name)
    name = temp["name"] if temp else name
    match = SHARD_FILE.fullmatch(name) or TOKENIZER_FILE.fullmatch(name)
    return None if match is None else int(match["generation"] or 0)


def stale_files(names, keep, replaces: list[str] | None) -> list[str]:
    """What a committed build removes from its output: every other build's files, and nothing else.

    That is: the files of the build it replaced (``replaces``, the old manifest's list; None where
    there was no finished build), files of other generations (tagged, so none can be a user's), and
    what attempts that died left under temporary names. An untagged shard name is taken for a failed
    attempt's only when no finished build was there; an untagged tokenizer.json that no manifest
    lists is kept: it may be the very tokenizer the user gave.
    """
    stale = []
    for name in names:
        if name in keep:
            continue
        temp = TEMP_FILE.fullmatch(name)
        if temp and (
            temp["name"] in (MANIFEST, *map(mds_index_name, SPLITS))
            or generation_of(temp["name"]) is not None
        ):
            stale.append(name)
        elif replaces is not None and name in replaces:
            stale.append(name)
        elif not temp and (generation_of(name) or (replaces is None and SHARD_FILE.fullmatch(name))):
            stale.append(name)
    return stale


def to_json(manifest: Manifest) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def join(output_dir: str, name: str) -> str:
    """The path of a file of an output: ``output_dir`` may be local or a URI (gs://, s3://, hdfs://)."""
    return f"{output_dir.rstrip('/')}/{name}" if "://" in output_dir else os.path.join(output_dir, name)


def open_file(output_dir: str, name: str, *, seekable: bool = False):
    """A file of an output, opened for reading with pyarrow's file systems (local, gs://, s3://,
    hdfs://): the tools that read an output need neither Beam nor TensorFlow. ``seekable`` for
    Parquet's footer; otherwise a buffered stream, read front to back."""
    path = join(output_dir, name)
    if "://" in path:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(path)
    else:
        filesystem, path = pyarrow.fs.LocalFileSystem(), os.path.abspath(path)
    if seekable:
        return filesystem.open_input_file(path)
    return filesystem.open_input_stream(path, buffer_size=1 << 20)


@contextlib.contextmanager
def local_copy(output_dir: str, name: str):
    """A local path holding a file of an output, for readers that take only paths (ArrayRecord's): the file
    itself where the output is local, else a temporary copy."""
    path = join(output_dir, name)
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlmprep-") as folder:
        local = os.path.join(folder, os.path.basename(name))
        with open_file(output_dir, name) as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 22)
        yield local


def read(output_dir: str, build_index: bool = False) -> Manifest:
    """The manifest of an output; ManifestError where there is none this mlmprep can read. ``build_index``:
    a build of phases' own manifest is welcome too (else its phases' folders are the outputs)."""
    try:
        with open_file(output_dir, MANIFEST) as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise ManifestError(f"{output_dir} has no {MANIFEST}: not a finished mlmprep output") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise ManifestError(f"{join(output_dir, MANIFEST)} does not parse: {e}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in READS:
        raise ManifestError(
            f"{join(output_dir, MANIFEST)} has format_version {version!r}; this mlmprep reads "
            f"{', '.join(map(str, READS))} (an output of another mlmprep version: read it with that one)"
        )
    if is_build_index(manifest) and not build_index:
        phases = [p["folder"] for p in manifest["phases"]]
        raise ManifestError(
            f"{output_dir} is a build of phases ({', '.join(phases)}); each phase's folder is an output: "
            f"give one, such as {join(output_dir, phases[0])}"
        )
    return manifest


def settings(manifest: Manifest) -> Settings:
    """The settings that made an output, typed; an output from before a setting existed has its default."""
    if "settings" in manifest:
        return Settings.from_flat(manifest["settings"])
    config = dict(manifest["config"])  # format_version 1: the run's options, --whole_word_masking among them
    if config.get("masking") is None:
        config["masking"] = "word" if config.get("whole_word_masking") else "token"
    return Settings.from_flat({k: v for k, v in config.items() if k in SETTINGS})


def roles(manifest: Manifest) -> dict[str, int]:
    """The tokenizer's roles (cls, sep, pad, mask, unk) by id, as the job resolved them: from its
    ``--special_tokens`` and the files beside the tokenizer, which the output does not keep."""
    return {role: i for role, i in manifest["tokenizer"].get("special_ids", {}).items() if i is not None}


def vocabulary(manifest: Manifest, tokenizer_json_text: str):
    """(the tokenizer as the job ran it, its ``Vocabulary`` with the roles the job resolved)."""
    tokenizer = load_tokenizer(tokenizer_json_text)
    return tokenizer, tokenize_vocabulary(tokenizer, roles(manifest))
