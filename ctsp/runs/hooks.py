"""Hooks into a run: the protocol of an epoch trainer, and the recorders that ``fit`` calls.

A :class:`Recorder` (trajectories, loop alignment, …; the application assembles them from the
config's ``[record]`` section) gets ``after_batch`` after every minibatch's update and
``after_epoch`` after every epoch's evaluation, once ``metrics.nc`` holds the epoch's row and
before the checkpoint is written. It writes
its own files into the run directory, atomically. Its state is saved in the checkpoint under its
``name``, so a resumed run continues each recording where the checkpoint left it; the state of a
recorder that a resumed run switches off is carried on untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch


class Recorder:
    """Base class of the recorders: every hook does nothing; ``name`` keys the state."""

    name: str = ""

    def after_batch(self, trainer: Any, epoch: int, batch: int) -> None:
        """``epoch`` 0-based, ``batch`` 0-based within the epoch."""

    def after_epoch(self, trainer: Any, epoch: int, path: Path, last: bool) -> None:
        """``epoch``: the number of completed epochs (1-based); ``last``: the run's last one."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


class EpochTrainer(Protocol):
    """What :func:`ctsp.runs.fit` needs from a command's trainer (``ctsp.continuous.Trainer``,
    ``ctsp.discrete.DiscreteTrainer``)."""

    net: torch.nn.Module
    # the settings that likely make a run that is not learning (named by ctsp.runs.health)
    learning_keys: tuple[str, ...]

    def train_metrics(self, data, epoch: int, bar, on_batch=None) -> dict:
        """Train one epoch, calling ``on_batch(epoch, k)`` after every minibatch; its row entries
        (at least ``train_error``)."""
        ...

    def eval_metrics(self, data) -> dict:
        """Row entries from the test (and validation) set: ``test_error`` (and ``val_error``)."""
        ...

    def extra_state(self) -> dict:
        """Checkpoint entries beyond the model (optimizers, persistent states)."""
        ...

    def load_extra_state(self, ckpt: dict) -> None: ...

    def summary(self, row: dict) -> str:
        """The end of the epoch's log line."""
        ...
