"""The build file: every setting of a run in one YAML file (``mlmprep run --config build.yaml``).

Its keys are the settings' names, flat (``max_seq_length: 512``), and Beam's
pipeline options sit under one key of their own (``pipeline_options:
{runner: ..., direct_num_workers: 2}``). Each value parses by its setting's
type, as the flag's text would (``settings.coerce``). A manifest.json
(read as JSON) is a build file too: its settings remake the output.
No Beam here: the caller reads the file (from any file system) and says which
Beam options exist.
"""

import difflib
import json
import re
from collections.abc import Collection
from typing import NamedTuple

import yaml

from mlmprep.pipeline import build_spec
from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import settings as settings_lib
from mlmprep.pipeline.errors import UsageError

PIPELINE_OPTIONS = "pipeline_options"
LISTS = (PIPELINE_OPTIONS, build_spec.SOURCES, build_spec.PHASES)  # keys that are not settings


class BuildFile(NamedTuple):
    settings: dict  # by name, parsed by type, aliases resolved
    pipeline_options: dict  # Beam's, by name, as written
    sources: list | None = None  # the sources list as written (build_spec reads it); None: not given
    phases: list | None = None  # the phases list as written (build_spec reads it); None: not given


class _Loader(yaml.SafeLoader):
    """A scalar is its text, as a flag's is: the setting parses it by its type (``settings.coerce``), so
    YAML 1.1's guesses never decide a value (``no`` is Norwegian, ``012345`` is 12345, not octal 5349,
    ``1e-06`` is a number). Only true, false and null are read as such; a key given twice is an error,
    not the last one silently."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _mapping(loader: _Loader, node: yaml.MappingNode):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a name, got {key!r}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def _yaml_error(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "alias" in f"{getattr(e, 'context', '')} {problem}":  # *.txt unquoted reads as a YAML alias
        problem += " (a value that starts with * or & must be quoted: '*.txt')"
    return where + problem


def _nearest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _unique(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ValueError(f"the key {twice!r} is given twice")
    return dict(pairs)


SOURCE_ENTRY = ("name", "input", "input_format", "text_field", "weight", "max_repeats")


def _remake(manifest: dict) -> dict:
    """A manifest as a build file that makes its output again: every setting, resolved (an older
    manifest's as well; its recipe's are among them, so the recipe's name would only say it set nothing).
    A build of sources keeps its sources; the build's own manifest its phases too, each as it was given;
    a phase's manifest makes that phase alone (in OUTPUT/PHASE), which selects and packs the same."""
    values = {k: v for k, v in manifest_lib.settings(manifest).flat().items() if k != "recipe"}
    if "sources" not in manifest:
        return values
    values.pop("input")
    values[build_spec.SOURCES] = [{k: s[k] for k in SOURCE_ENTRY if k in s} for s in manifest["sources"]]
    if manifest_lib.is_build_index(manifest):
        # The top as given, not as resolved: a derived value (the prediction cap) is each phase's own.
        values = {k: v for k, v in manifest["given"].items() if k not in ("recipe", "overwrite")}
        values[build_spec.SOURCES] = [{k: s[k] for k in SOURCE_ENTRY if k in s} for s in manifest["sources"]]
        values[build_spec.PHASES] = [{"name": p["name"], **p["given"]} for p in manifest["phases"]]
    elif manifest.get("build", {}).get("phase"):  # one phase of several: a build of it alone, in OUTPUT/PHASE
        values[build_spec.PHASES] = [{"name": manifest["build"]["phase"], **manifest["build"]["given"]}]
    return values


def _load(path: str, text: str) -> dict:
    if path.endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_unique)
        except ValueError as e:
            raise UsageError(f"--config {path} does not parse as JSON: {e}") from None
        if isinstance(data, dict) and "format_version" in data:  # a manifest: the settings that made it
            if data["format_version"] not in manifest_lib.READS:
                raise UsageError(
                    f"--config {path} has format_version {data['format_version']!r}; this mlmprep reads "
                    f"{', '.join(map(str, manifest_lib.READS))}"
                )
            data = _remake(data)
    else:
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as e:
            raise UsageError(f"--config {path}: {_yaml_error(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must hold a mapping of settings (max_seq_length: 512, ...)")
    return data


def parse(path: str, text: str, beam_options: Collection[str]) -> BuildFile:
    """The build file ``path`` that holds ``text``; ``beam_options``: every Beam pipeline option's name. A
    mistake in it (a syntax error, an unknown or duplicate key, a value of the wrong type) is one
    UsageError naming it."""
    data = _load(path, text)
    values = {}
    for key, value in data.items():
        if key in LISTS or value is None:  # null: not given, as a flag not typed
            continue
        if not isinstance(key, str) or key not in settings_lib.RUN_FLAGS:
            known = (*settings_lib.RUN_FLAGS, *LISTS)
            hint = _nearest(str(key), known)
            if isinstance(key, str) and key in beam_options:
                hint = f"; Beam's options go under {PIPELINE_OPTIONS}:"
            raise UsageError(f"--config {path}: unknown key {key!r}{hint}")
        try:
            if key in settings_lib.ALIASES:  # a switch that stands for another setting's value
                if not isinstance(value, bool):
                    raise settings_lib.SettingError(f"{key} must be true or false, got {value!r}")
                values[key] = value
            else:
                values[key] = settings_lib.coerce(key, value, label=key)
        except settings_lib.SettingError as e:
            raise UsageError(f"--config {path}: {e}") from None
    options = data.get(PIPELINE_OPTIONS) or {}
    if not isinstance(options, dict):
        raise UsageError(f"--config {path}: {PIPELINE_OPTIONS} must be a mapping (runner: ..., ...)")
    for key in options:
        if key not in beam_options:
            raise UsageError(
                f"--config {path}: {PIPELINE_OPTIONS} has an unknown key {key!r}"
                + _nearest(str(key), beam_options)
            )
    return BuildFile(values, options, data.get(build_spec.SOURCES), data.get(build_spec.PHASES))


def to_yaml(values: dict, pipeline_options: dict | None = None) -> str:
    """A build file of these settings (and Beam options)."""
    data = dict(values)
    if pipeline_options:
        data[PIPELINE_OPTIONS] = pipeline_options
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
