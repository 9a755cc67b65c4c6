"""The environment variables ctsp reads, validated like config keys (the registry
:data:`VARIABLES`).

Every variable is read through :func:`read`, which parses its value each time it is called (so
a test or a launcher may set it) and refuses a value it cannot use with one line naming the
variable and what it expects (:class:`ctsp.errors.ConfigError`, exit code 2); the command line
checks them all before it starts anything (:func:`check`). An unset or empty variable means its
default. ``ctsp --help`` lists them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .registry import Registry

# the heartbeat interval of a parallel run is 1 s (ctsp.parallel.Heartbeat): a hang
# timeout of fewer intervals than this takes a healthy, busy process for a hung one
MIN_HANG_TIMEOUT = 3.0
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Variable:
    """One environment variable: what it means, what it expects, its parser (the text ->
    the value; ValueError for a value it cannot use) and the value when unset or empty."""

    meaning: str
    expects: str
    parse: Callable[[str], Any]
    default: Any = None


def _flag(text: str) -> bool:
    if text.lower() in TRUE + FALSE:
        return text.lower() in TRUE
    raise ValueError(text)


def _directory(text: str) -> str:
    if not os.path.isdir(os.path.expanduser(text)):
        raise ValueError(text)
    return text


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://", "file://")):
        raise ValueError(text)
    return text


def _hang_timeout(text: str) -> float:
    seconds = float(text)
    if not (math.isfinite(seconds) and seconds >= MIN_HANG_TIMEOUT):
        raise ValueError(text)
    return seconds


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise ValueError(text)
        return value

    return parse


VARIABLES: Registry[Variable] = Registry(
    "environment variable",
    {
        "CTSP_DEBUG": Variable(
            "show the traceback of an error (as --debug)", f"one of {', '.join(TRUE + FALSE)}",
            _flag, False,
        ),
        "CTSP_DATA": Variable(
            "a directory searched for datasets after --data-dir", "an existing directory",
            _directory,
        ),
        "CTSP_DATA_URL": Variable(
            "the base URL datasets are downloaded from instead of their official locations",
            "a URL starting with http://, https:// or file://", _url,
        ),
        "CTSP_HANG_TIMEOUT": Variable(
            "seconds of silence after which a process of a parallel run is taken as hung",
            f"a number of seconds >= {MIN_HANG_TIMEOUT:g}", _hang_timeout, 60.0,
        ),
        "RANK": Variable(
            "this process's rank in a parallel run (set by --workers or torchrun)",
            "an integer >= 0", _count(0), 0,
        ),
        "WORLD_SIZE": Variable(
            "the number of processes of a parallel run (set by --workers or torchrun)",
            "an integer >= 1", _count(1), 1,
        ),
    },
)  # fmt: skip


def read(name: str) -> Any:
    """The value of the environment variable ``name`` (one of :data:`VARIABLES`), parsed; its
    default when unset or empty. A value it cannot use raises a one-line ConfigError."""
    var = VARIABLES[name]
    text = os.environ.get(name, "")
    if text == "":
        return var.default
    try:
        return var.parse(text)
    except ValueError:
        raise ConfigError(
            f"invalid value for the environment variable {name}: {text!r} (expected {var.expects})"
        ) from None


def check() -> None:
    """Read every variable of :data:`VARIABLES` once: a value that cannot be used is refused
    before anything starts (the command line calls this first)."""
    for name in VARIABLES:
        read(name)


def describe() -> str:
    """The variables as help text: name, meaning, what a value must be."""
    lines = ["environment variables:"]
    for name, var in VARIABLES.items():
        lines.append(f"  {name:<19} {var.meaning} ({var.expects})")
    return "\n".join(lines) + "\n"
