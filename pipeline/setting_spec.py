"""What a setting is: a dataclass field with its help, choices and checks (``setting``), and its error.

The definitions themselves are in ``settings``; this is the vocabulary they are
written in.
"""

import dataclasses
import typing
from collections.abc import Callable

from mlmprep.pipeline.errors import UsageError


class SettingError(UsageError):
    """A value no run can take; ``names`` are the settings it concerns (a recipe's are said to be)."""

    def __init__(self, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.names = names


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a setting is beyond its type and default."""

    help: str
    name: str | None = None  # the flag's name where it is not the field's
    choices: tuple = ()
    check: Callable[[typing.Any], str | None] | None = None  # the value alone: what is wrong, or None
    default_text: str | None = None  # the reference's words for a default derived from other settings
    parse: Callable[[str], typing.Any] | None = None  # a flag's text, where the type alone does not say
    required: bool = False


def setting(default, help: str, **spec) -> typing.Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(help, **spec)})


def in_range(low=None, high=None, *, open_low=False, open_high=False, what=None) -> Callable:
    """A check that the value lies between low and high (either may be None: unbounded)."""

    def check(value):
        if value is None:
            return None
        below = low is not None and (value <= low if open_low else value < low)
        above = high is not None and (value >= high if open_high else value > high)
        if not (below or above):
            return None
        if what:
            return f"must be {what}, got {value}"
        if high is None:
            return f"must be {'positive' if open_low and low == 0 else f'at least {low}'}, got {value}"
        brackets = ("(" if open_low else "[", ")" if open_high else "]")
        return f"must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}"

    return check
