"""What a build is made of, as one hash: the config and the input files with their sizes.

Scheduled corpus rebuilds compare it with the last build's manifest and skip
a rebuild whose inputs and options have not changed.
"""

import hashlib
import json

from apache_beam.io.filesystems import FileSystems


def list_inputs(patterns) -> list[tuple[str, int]]:
    """(path, size) of every file the patterns match, sorted."""
    files = set()
    for pattern in patterns:
        for m in FileSystems.match([pattern])[0].metadata_list:
            if not m.path.endswith("/"):
                files.add((m.path, m.size_in_bytes))
    return sorted(files)


# Options that say where and how a build runs, not what it builds.
NOT_THE_BUILD = ("output", "overwrite", "split_input_mb", "grouping")


def fingerprint(config: dict, files: list[tuple[str, int]], tokenizer_sha256: str) -> str:
    """sha256 over the run's options (not where or how it runs), the tokenizer, and the input list."""
    options = {k: v for k, v in config.items() if k not in NOT_THE_BUILD}
    payload = json.dumps({"config": options, "tokenizer": tokenizer_sha256, "inputs": files}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def needs_rebuild(previous_manifest: dict | None, current: str) -> bool:
    """True unless the previous build finished with the same fingerprint."""
    return previous_manifest is None or previous_manifest.get("input_fingerprint") != current
