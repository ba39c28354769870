"""Byte identity across a change: each configuration built by an older commit's code and by this tree's.

A refactor must not move a byte of any shard. This builds every configuration
below twice, once with the code of ``--base`` (checked out with ``git
worktree``) and once with this tree's, and prints, per configuration, whether
every shard file is the same, which manifest keys differ and whether the
input fingerprint (what a scheduled rebuild compares) held::

  python bench/identity.py --base 72e968b --corpus small/kjv.txt
"""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CONFIGURATIONS = {
    "bert defaults": [],
    "--recipe roberta": ["--recipe=roberta"],
    "--recipe modernbert": ["--recipe=modernbert"],
    "--recipe albert": ["--recipe=albert", "--dupe_factor=2"],
    "span, best fit, 256": ["--masking=span", "--packing=best_fit", "--max_seq_length=256"],
    "nsp pairs": ["--sentence_pairs=nsp", "--whole_word_masking"],
}


def _code_of(base: str, root: pathlib.Path) -> pathlib.Path:
    """A folder that imports as the ``mlmprep`` of commit ``base`` (put first on PYTHONPATH)."""
    tree = root / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), base], check=True,
                   capture_output=True)  # fmt: skip
    package = root / "path" / "mlmprep"
    package.mkdir(parents=True)
    for name in ("pipeline", "transforms", "trainer"):
        (package / name).symlink_to(tree / name)
    return root / "path"


def _build(out: pathlib.Path, flags: list[str], args, pythonpath: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    command = [
        sys.executable,
        "-m",
        "mlmprep.pipeline.cli",
        "run",
        f"--input={DATA / 'corpora' / args.corpus}",
    ]
    command += [f"--tokenizer={DATA / 'vocab' / 'bert-base-uncased' / 'tokenizer.json'}", f"--output={out}"]
    command += ["--num_shards=2", "--validation_fraction=0.05", *flags]
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=out.parent)
    return json.loads((out / "manifest.json").read_text())


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base", required=True, help="The commit to compare with (e.g. the change's parent)."
    )
    parser.add_argument("--corpus", default="small/kjv.txt", help="Under shared/data/corpora.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlmprep-identity-") as tmp:
        root = pathlib.Path(tmp)
        old_code = _code_of(args.base, root)
        try:
            print("| configuration | shard files | identical | manifest keys that differ | fingerprint |")
            print("|---|---|---|---|---|")
            for name, flags in CONFIGURATIONS.items():
                slug = "".join(c if c.isalnum() else "_" for c in name)
                old = _build(root / f"old_{slug}", flags, args, str(old_code))
                new = _build(root / f"new_{slug}", flags, args, None)
                same = [s["file"] for s in old["shards"]] == [s["file"] for s in new["shards"]] and all(
                    _sha256(root / f"old_{slug}" / s["file"]) == _sha256(root / f"new_{slug}" / s["file"])
                    for s in old["shards"]
                )
                keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                held = "same" if old["input_fingerprint"] == new["input_fingerprint"] else "differs"
                row = [name, len(new["shards"]), "yes" if same else "NO", ", ".join(keys), held]
                print("| " + " | ".join(map(str, row)) + " |")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(root / "tree")],
                           capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
