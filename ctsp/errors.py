"""Errors that reach the user as one clear line (see ``ctsp.cli``).

``CtspError`` and its subclasses carry a message that names the problem; the CLI prints
``ctsp: error: <message>`` and exits with the class's ``exit_code`` (2 for bad input,
1 for a run that failed), never with a traceback.
"""

from __future__ import annotations


class CtspError(Exception):
    """Base class of the errors ctsp reports to users as one line."""

    exit_code = 1


class ConfigError(CtspError, ValueError):
    """A configuration key, type or value is not valid (exit code 2)."""

    exit_code = 2


class DataError(CtspError):
    """A dataset is missing, corrupt, or its checksum does not match (exit code 2)."""

    exit_code = 2


class RunDirError(CtspError):
    """The run directory cannot be used as asked (exists, differs on resume; exit code 2)."""

    exit_code = 2


class DivergenceError(CtspError):
    """A simulation produced NaN or Inf in states or weights (exit code 1)."""

    exit_code = 1


class LearningError(CtspError):
    """A run that is not learning (at chance or saturated) with ``train.health = "error"``; its
    run directory keeps the checkpoint of the epoch that showed it (exit code 1)."""

    exit_code = 1


class WorkerError(CtspError):
    """A process of a parallel run failed or stopped answering (exit code 1)."""

    exit_code = 1


class CtspWarning(UserWarning):
    """ctsp's own warnings about a run (the command line shows them as one line)."""


class LearningWarning(CtspWarning):
    """A run that is not learning (at chance or saturated); see ``ctsp.runs.health``."""


class PerformanceWarning(CtspWarning):
    """A setting that works but runs slowly on this machine (e.g. bfloat16 without native
    support, ``ctsp.nn.precision_warning``)."""


class WriteError(CtspError, OSError):
    """A run file could not be written (unwritable directory, full disk); the message names the
    file, and no partial file is left behind (exit code 1)."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT (``ctsp.cli``)."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the message says what its run directory keeps.

    A ``KeyboardInterrupt`` still (library callers see the interrupt they caused); the CLI prints
    the message and exits 143 (``terminated``) or 130.
    """

    def __init__(self, message: str, terminated: bool) -> None:
        super().__init__(message)
        self.terminated = terminated
