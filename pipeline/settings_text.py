"""The settings as text for people: ``argparse`` flags (``mlmprep run``'s, the trainer's masking ones) and
docs/reference.md, both made from the definitions in ``settings``."""

import dataclasses

from mlmprep.pipeline.settings import ALIASES, SETTINGS, Settings, coerce, flag_name, kind, spec

ALIAS_HELP = {"whole_word_masking": "The same as --masking word."}


def add_arguments(parser, names, *, defaults: bool = True, **choices) -> None:
    """Adds the settings ``names`` to an argparse parser (or group) as flags. ``defaults=False`` leaves
    every default None (the caller lays defaults and recipes under what was given); ``choices`` narrows
    a setting's choices by name."""
    for name in names:
        if name in ALIASES:
            parser.add_argument(f"--{name}", action="store_true", default=None, help=ALIAS_HELP[name])
            continue
        s, (scalar, _) = spec(name), kind(name)
        shown = s.default_text or _text(SETTINGS[name][1].default)
        help_text = f"{s.help} (default: {shown})" if defaults and shown else s.help
        common = dict(help=help_text.replace("%", "%%"), default=None)
        if scalar is bool:
            parser.add_argument(f"--{name}", action="store_true", **common)
            parser.add_argument(f"--no{name}", dest=name, action="store_false", help=f"Not --{name}.",
                                default=None)  # fmt: skip
        elif scalar is tuple and s.parse is None:
            parser.add_argument(f"--{name}", action="append", metavar="PATTERN", **common)
        else:
            narrowed = choices.get(name, s.choices)
            parser.add_argument(
                f"--{name}",
                type=str,
                metavar="{" + ",".join(narrowed) + "}" if narrowed and scalar is str else name.upper(),
                **common,
            )


def given(namespace, names) -> dict:
    """The settings a parsed namespace gives (not None), parsed by their types; an alias stays as given."""
    values = {}
    for name in names:
        value = getattr(namespace, name, None)
        if value is None:
            continue
        values[name] = value if name in ALIASES else coerce(name, value)
    return values


def _text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return "" if value is None else str(value)


def reference_markdown() -> str:
    """docs/reference.md: every setting of ``mlmprep run``, from the definitions (a test keeps them equal)."""
    titles = {
        "input": "Input",
        "tokenizer": "Tokenizer",
        "packing": "Packing",
        "pairs": "Sentence pairs",
        "masking": "Masking",
        "split": "Splits",
        "output": "Output",
        "mixture": "Mixtures and phases",
        "build": "Recipe",
    }
    lines = [
        "# Settings reference",
        "",
        "<!-- Made by `python -m mlmprep.pipeline.settings_text` from pipeline/settings.py; a test keeps "
        "them equal. -->",
        "",
        "Every setting of `mlmprep run`. Each is a flag (`--max_seq_length 512`) and a key of the build "
        "file (`max_seq_length: 512` in the file given to `--config`); flags win over the file, and a "
        "`--recipe` lies under both. A switch is written `--dedup` / `--nodedup` as a flag and "
        "`dedup: false` in the file. Every Beam pipeline option passes through as a flag, or under "
        "`pipeline_options:` in the file. See [the build file](build-file.md).",
        "",
    ]
    for group in dataclasses.fields(Settings):
        lines += [
            f"## {titles[group.name]}",
            "",
            "| setting | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for field in dataclasses.fields(group.type):
            name, s = flag_name(field), field.metadata["spec"]
            scalar, optional = kind(name)
            type_text = {tuple: "list", bool: "switch", dict: "mapping"}.get(scalar, scalar.__name__)
            if s.choices:
                type_text = " \\| ".join(f"`{c}`" for c in s.choices) + (
                    " (a list)" if scalar is tuple else ""
                )
            default = "required" if s.required else (s.default_text or f"`{_text(field.default)}`")
            meaning = s.help.replace("|", "\\|")
            lines.append(f"| `{name}` | {type_text} | {default} | {meaning} |")
        if group.name == "masking":
            lines.append("| `whole_word_masking` | switch | off | " + ALIAS_HELP["whole_word_masking"] + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
