"""The versions remote workers get, against the ones this process runs.

Byte-identical output needs the same versions on every worker (the Parquet
writer's version, for one, is written into every file), so a job launched on a
remote runner with a ``--requirements_file`` or a Beam SDK container whose pins
differ from the local environment says so before it starts.
"""

import importlib.metadata
import logging
import re

from apache_beam.options.pipeline_options import PortableOptions, SetupOptions, WorkerOptions

# name[extras]==version, as in a requirements or constraints file.
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
# Beam's own SDK images carry their Beam version in the tag.
_BEAM_IMAGE = re.compile(r"(?:^|/)beam_python\d+\.\d+_sdk:(\d+\.\d+\.\d+)")


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text: str) -> dict[str, str]:
    """``{name: version}`` of the ``==`` pins in a requirements or constraints file's text."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # a local label (torch's +cpu) is the same release


def differences(pins: dict[str, str]) -> list[str]:
    """The pins whose version differs from this environment's, in words."""
    found = []
    for name, pinned in sorted(pins.items()):
        local = _installed(name)
        if local is None or _public(local) != _public(pinned):
            found.append(f"{name} {pinned} there, {local or 'not installed'} here")
    return found


def remote_pins(options) -> tuple[str, dict[str, str]] | None:
    """(where, pins) that the job's remote workers will install, as far as the options say."""
    setup = options.view_as(SetupOptions)
    if setup.requirements_file:
        try:
            with open(setup.requirements_file, encoding="utf-8") as f:
                return f"--requirements_file {setup.requirements_file}", parse(f.read())
        except OSError:
            return None  # Beam's stager reports an unreadable file itself
    image = options.view_as(WorkerOptions).sdk_container_image
    portable = options.view_as(PortableOptions)
    if not image and (portable.environment_type or "").upper() == "DOCKER":
        image = portable.environment_config
    match = _BEAM_IMAGE.search(image or "")
    if match:
        return f"container {image}", {"apache-beam": match.group(1)}
    return None


def warn_if_remote_differs(options) -> list[str]:
    """One warning line when the remote workers' pins differ from this environment's; returns them."""
    pinned = remote_pins(options)
    if pinned is None:
        return []
    where, pins = pinned
    found = differences(pins)
    if found:
        logging.warning(
            "mlmprep: the workers' pins in %s differ from this environment's (%s): byte-identical output "
            "needs the same versions; install with pip's -c constraints.txt",
            where,
            "; ".join(found),
        )
    return found
