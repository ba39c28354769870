"""``mlmprep run``'s command line: its settings from flags, a build file and a recipe; Beam's options apart.

The flags are made from the definitions in ``settings``. Every other flag
is a Beam pipeline option: ``parse`` checks them against every registered
Beam options class (Beam itself only logs a flag it does not know and runs
on, so ``--max_seq_lenght`` would run with the default) and hands them on
as an explicit list, never read again from ``sys.argv``.
"""

import dataclasses
import functools
import json

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from mlmprep.pipeline import build_file, build_spec, recipes, settings_text
from mlmprep.pipeline import settings as settings_lib
from mlmprep.pipeline.errors import CliParser, UsageError

DESCRIPTION = (
    "Raw text -> masked TFRecord/Parquet shards. Settings come from flags, a build file (--config) and a "
    "recipe (--recipe), in that order of precedence. Every Beam pipeline option (--runner, "
    "--direct_num_workers, --project, ...) is accepted too."
)


@dataclasses.dataclass(frozen=True)
class RunCommand:
    """A ``mlmprep run`` command line, read."""

    settings: settings_lib.Settings
    beam_argv: tuple[str, ...]  # Beam's options: the build file's pipeline_options, then the flags'
    recipe: recipes.Applied | None = None
    build: build_spec.BuildSpec | None = None  # a build of sources and phases; None: one output from --input


def run_parser() -> CliParser:
    """``mlmprep run``'s own flags, every default None: what was given is what is not None."""
    parser = CliParser(prog="mlmprep run", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="A build file (YAML; or a manifest.json, whose settings remake its output): every setting by "
        "name, Beam's options under pipeline_options. Flags win over it.",
    )
    settings_text.add_arguments(parser, settings_lib.RUN_FLAGS)
    return parser


@functools.cache
def _beam_parser() -> CliParser:
    parser = CliParser(prog="mlmprep run", allow_abbrev=False, add_help=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


@functools.cache
def beam_options() -> frozenset[str]:
    """Every Beam pipeline option's name, as a build file's pipeline_options key."""
    return frozenset(PipelineOptions([]).get_all_options(retain_unknown_options=False))


def check_flags(argv: list[str]) -> None:
    """Beam's flags, parsed by every registered options class: a bad value or an unknown flag is a
    UsageError."""
    _, unknown = _beam_parser().parse_known_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")


def parse(argv: list[str]) -> RunCommand:
    """The settings of a ``mlmprep run`` command line: the recipe's under the build file's under the
    flags'; one line says what a recipe set. A value no run can take is a UsageError, and one a recipe set
    says so."""
    namespace, beam_argv = run_parser().parse_known_args(argv)
    check_flags(beam_argv)
    flagged = settings_lib.unalias(settings_text.given(namespace, settings_lib.RUN_FLAGS))
    file = build_file.BuildFile({}, {})
    if namespace.config:
        file = build_file.parse(namespace.config, _read_text(namespace.config), beam_options())
    from_file = settings_lib.unalias(file.settings)
    given = {**from_file, **flagged}
    values, applied = recipes.lay_under(given.get("recipe"), given, "run")
    if applied is not None:
        print(applied.line())
    try:
        if build_spec.given(values, file.sources, file.phases):
            resolved, build = build_spec.make(values, file.sources, file.phases)
        else:
            resolved, build = settings_lib.resolve(values), None
    except settings_lib.SettingError as e:
        if applied is not None and set(e.names) & set(applied.set):
            raise applied.explain(e) from None
        if e.names and set(e.names) <= set(from_file) - set(flagged):  # the build file's values alone
            raise UsageError(f"--config {namespace.config}: {e}") from None
        raise
    except UsageError as e:  # a sources or phases entry of the build file
        raise UsageError(f"--config {namespace.config}: {e}" if namespace.config else str(e)) from None
    if file.pipeline_options:
        try:
            check_flags(file_args := beam_args(file.pipeline_options))
        except UsageError as e:
            raise UsageError(f"--config {namespace.config}: {build_file.PIPELINE_OPTIONS}: {e}") from None
        beam_argv = file_args + beam_argv  # the flags' come last: Beam takes the last of a flag given twice
    return RunCommand(resolved, tuple(beam_argv), applied, build)


def beam_args(options: dict) -> list[str]:
    """A build file's Beam options as Beam's flags: true as the bare flag, false as its negative
    (``use_public_ips: false`` is ``--no_use_public_ips``; one Beam has not is a UsageError), null left
    out, a list as the flag repeated."""
    args = []
    for key, value in options.items():
        if value is True:
            args.append(f"--{key}")
        elif value is False:
            negative = f"--no_{key}"
            if _beam_parser().parse_known_args([negative])[1]:
                raise UsageError(f"{key}: false has no flag of Beam's ({negative} is none); leave it out")
            args.append(negative)
        elif isinstance(value, list):
            args += [f"--{key}={v}" for v in value]
        elif value is not None:
            args.append(f"--{key}={json.dumps(value) if isinstance(value, dict) else value}")
    return args


def _read_text(path: str) -> str:
    """A build file's text, local or on any file system Beam reads (gs://, s3://, ...)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read().decode("utf-8")
    except Exception as e:  # Beam raises BeamIOError and friends; not UTF-8 text
        raise UsageError(f"cannot read --config {path}: {e}") from None


def help_text() -> str:
    return run_parser().format_help()
