"""A build of named sources and training phases: a build file's ``sources`` and ``phases`` lists, resolved.

A source is a named share of the input (its patterns, format and text field,
and a weight); a phase is an output of its own made from the build's
documents (its length, packing, masking, mixture and budget). Each phase's
settings are the top of the build file with the phase's laid over them, so
a phase names only what it changes. No Beam here: ``flags`` calls ``make``
with what the build file and the flags gave.
"""

import dataclasses
import math
import re

from mlmprep.pipeline import settings as settings_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.pipeline.settings import SettingError, Settings

SOURCES, PHASES = "sources", "phases"
SINGLE_SOURCE = "input"  # the one source of a build without a sources list: the top-level --input
# Below 128 a source id is one byte in a TFRecord's varint list.
MAX_SOURCES = 127
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What a source says of itself; input_format and text_field default to the top of the file's.
SOURCE_KEYS = ("name", "input", "input_format", "text_field", "weight", "max_repeats")
# What a phase may set: how its sequences are made from the build's documents. Reading, the tokenizer, the
# split and where the build goes are the build's, once for every phase.
PHASE_GROUPS = ("packing", "pairs", "masking", "mixture")
PHASE_SETTINGS = (
    *(name for name, (group, _) in settings_lib.SETTINGS.items() if group in PHASE_GROUPS),
    "whole_word_masking",
    "min_doc_tokens",
    "num_shards",
    "target_shard_mb",
    "formats",
)
MIXTURE_SETTINGS = tuple(f.name for f in dataclasses.fields(settings_lib.Mixture))


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    input: tuple[str, ...]
    input_format: str = "auto"
    text_field: str = "text"
    weight: float = 1.0  # its share beside the others' (by temperature: times its natural tokens ** tau)
    max_repeats: float | None = None  # the most epochs of it in any phase (the phase's limit otherwise)


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    settings: Settings  # resolved; its output is the phase's folder (the build's output for a single phase)
    sources: tuple[str, ...] | None = None  # the sources it uses, where it names them (else all, or weights')
    given: dict = dataclasses.field(
        default_factory=dict, compare=False
    )  # its own values, as the file gave them

    def uses(self, source: str) -> bool:
        weights = self.settings.mixture.weights
        if weights is not None:
            return weights.get(source, 0) > 0
        return self.sources is None or source in self.sources


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    sources: tuple[Source, ...]
    phases: tuple[Phase, ...]
    layered: bool  # phases listed: each writes OUTPUT/PHASE, and the build's manifest lists them
    given: dict = dataclasses.field(default_factory=dict, compare=False)  # the top's values, as given

    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise UsageError(
            f"{what} must be a name of letters, digits, '_', '.' and '-' (a folder's name), got {value!r}"
        )
    return value


def _number(value, what: str, *, positive: bool) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise UsageError(
            f"{what} must be a {'positive' if positive else 'non-negative'} number, got {value!r}"
        )
    return number


def parse_source(raw, index: int, defaults: dict) -> Source:
    """One entry of a build file's ``sources`` list (a mapping), checked; ``defaults``: the top's values."""
    where = f"{SOURCES}[{index}]"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping (name: ..., input: [...]), got {raw!r}")
    unknown = [k for k in raw if k not in SOURCE_KEYS]
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; a source has {', '.join(SOURCE_KEYS)}")
    name = _name(raw.get("name"), f"{where}.name")
    where = f"{SOURCES}[{name}]"
    values = {}
    try:
        for key in ("input", "input_format", "text_field"):
            value = raw.get(key, defaults.get(key))
            if value is not None:
                values[key] = settings_lib.coerce(key, value, label=f"{where}.{key}")
                settings_lib.check_value(key, values[key])
    except SettingError as e:
        message = str(e).replace(f"--{e.names[0]}", f"{where}.{e.names[0]}", 1) if e.names else str(e)
        raise UsageError(message) from None
    if not values.get("input"):
        raise UsageError(f"{where}.input is required: the file patterns of the source")
    return Source(
        name=name,
        input=values["input"],
        input_format=values.get("input_format", "auto"),
        text_field=values.get("text_field", "text"),
        weight=_number(raw.get("weight", 1.0), f"{where}.weight", positive=False),
        max_repeats=None
        if raw.get("max_repeats") is None
        else _number(raw["max_repeats"], f"{where}.max_repeats", positive=True),
    )


def _sources(values: dict, raw) -> tuple[Source, ...]:
    if raw is None:  # the top's --input is the one source
        if not values.get("input"):
            raise SettingError("--input is required", ("input",))
        return (Source(SINGLE_SOURCE, values["input"], values.get("input_format", "auto"),
                       values.get("text_field", "text")),)  # fmt: skip
    if values.get("input"):
        raise UsageError(
            f"input is given beside {SOURCES}: a build's inputs are its sources' (give each source its input)"
        )
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{SOURCES} must be a list of sources (- name: web, input: [...]), got {raw!r}")
    if len(raw) > MAX_SOURCES:
        raise UsageError(f"{SOURCES} lists {len(raw)} sources; a build takes at most {MAX_SOURCES}")
    sources = tuple(parse_source(r, i, values) for i, r in enumerate(raw))
    names = [s.name for s in sources]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise UsageError(f"{SOURCES}: two sources are named {twice!r}; a source's name is its own")
    return sources


def _phase_values(raw, index: int) -> tuple[str | None, dict, tuple[str, ...] | None]:
    where = f"{PHASES}[{index}]"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping (name: ..., max_seq_length: ...), got {raw!r}")
    name = _name(raw.get("name"), f"{where}.name")
    where = f"{PHASES}[{name}]"
    values = {}
    chosen = raw.get(SOURCES)
    if chosen is not None and (
        not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen)
    ):
        raise UsageError(f"{where}.{SOURCES} must be a list of source names, got {chosen!r}")
    for key, value in raw.items():
        if key in ("name", SOURCES) or value is None:
            continue
        if key not in PHASE_SETTINGS:
            known = key in settings_lib.RUN_FLAGS
            raise UsageError(
                f"{where}: {key!r} is "
                + ("the build's, the same for every phase: give it at the top" if known else "not a setting")
            )
        try:
            values[key] = (
                value if key in settings_lib.ALIASES else settings_lib.coerce(key, value, f"{where}.{key}")
            )
        except SettingError as e:
            raise UsageError(str(e)) from None
    return name, settings_lib.unalias(values), None if chosen is None else tuple(chosen)


def _laid_over(top: dict, phase: dict) -> dict:
    """The phase's values over the top's; a phase that gives weights drops the top's temperature, and one
    that gives a temperature the top's weights (each decides the mixture alone)."""
    merged = {**top, **phase}
    for own, other in (("weights", "temperature"), ("temperature", "weights")):
        if own in phase and other not in phase:
            merged.pop(other, None)
    return merged


def _check_phase(phase: Phase, sources: tuple[Source, ...], where: str) -> None:
    """What a phase's settings must hold against the sources; ``where``: the phase's key ("" for a build
    of one phase, whose settings are the top's)."""

    def key(name):
        return f"{where}.{name}" if where else name

    m = phase.settings.mixture
    names = [s.name for s in sources]
    for listed, what in ((m.weights or {}, "weights"), (phase.sources or (), SOURCES)):
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise UsageError(f"{key(what)} names {unknown[0]!r}, which is not a source ({', '.join(names)})")
    if m.weights is not None and phase.sources is not None:
        raise UsageError(f"{key('weights')} and {key(SOURCES)} each say the phase's sources: give one")
    chosen = [s for s in sources if phase.uses(s.name)]
    if m.tokens is None and not (m.natural and all(s.weight == 1.0 for s in chosen)):
        raise UsageError(
            f"{key('tokens')} is required: a mixture by "
            + ("weights" if m.weights is not None else "temperature" if not m.natural else "source weights")
            + " sets shares of a budget"
        )
    if m.weights is None and not any(s.weight > 0 for s in chosen):
        raise UsageError(f"{where or SOURCES}: every source of the phase has weight 0")


def given(values: dict, sources, phases) -> bool:
    """Whether a run is a build of sources and phases (else one output from --input, as always)."""
    return sources is not None or phases is not None or any(k in values for k in MIXTURE_SETTINGS)


def make(values: dict, sources, phases) -> tuple[Settings, BuildSpec]:
    """The build's own settings (its input: every source's) and its phases, each resolved; ``values``: the
    top's settings by name (flags over file over recipe), ``sources`` and ``phases`` the build file's lists
    as read (None: not given). A mistake is a UsageError naming the key."""
    built_sources = _sources(values, sources)
    top = {**values, "input": tuple(p for s in built_sources for p in s.input)}
    top_settings = settings_lib.resolve(top)
    if phases is not None and (not isinstance(phases, list) or not phases):
        raise UsageError(
            f"{PHASES} must be a list of phases (- name: ..., max_seq_length: ...), got {phases!r}"
        )
    entries = (
        [_phase_values(p, i) for i, p in enumerate(phases)] if phases is not None else [(None, {}, None)]
    )
    names = [n for n, _, _ in entries]
    twice = next((n for n in names if n is not None and names.count(n) > 1), None)
    if twice:
        raise UsageError(f"{PHASES}: two phases are named {twice!r}")
    built = []
    for name, phase_values, chosen in entries:
        where = f"{PHASES}[{name}]" if name else "the build"
        merged = _laid_over(top, phase_values)
        if name:
            merged["output"] = top_settings.output.output.rstrip("/") + "/" + name
        try:
            resolved = settings_lib.resolve(merged, warn=name is None)
        except SettingError as e:
            if not name:
                raise
            message = str(e)
            for key in e.names:  # the phase's own keys by their place in the file
                if key in phase_values:
                    message = re.sub(rf"--{key}\b", f"{where}.{key}", message)
            raise UsageError(message if message != str(e) else f"{where}: {e}") from None
        given = {k: list(v) if isinstance(v, tuple) else v for k, v in phase_values.items()}
        if chosen is not None:
            given[SOURCES] = list(chosen)
        phase = Phase(name or "", resolved, chosen, given)
        _check_phase(phase, built_sources, where if name else "")
        built.append(phase)
    languages = {p.settings.pairs.sentence_language for p in built if p.settings.pairs.enabled}
    if len(languages) > 1:
        raise UsageError(
            f"{PHASES}: sentence_language differs between phases of sentence pairs "
            f"({', '.join(sorted(languages))}): the build splits its text into sentences once; "
            "give one at the top"
        )
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "input"}
    return top_settings, BuildSpec(built_sources, tuple(built), layered=phases is not None, given=given)
