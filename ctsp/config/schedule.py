"""The learning-rate schedule of a ``[train]`` section, shared by both run configurations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..registry import Registry
from .base import _require


def _step(train, epoch: int) -> float:
    milestones = [max(1, int(f * train.plan + 1e-9)) for f in train.decay_at]
    return train.decay ** sum(epoch >= m for m in milestones)


def _cosine(train, epoch: int) -> float:
    return (1 + math.cos(math.pi * epoch / (train.t_max or train.plan))) / 2


SCHEDULES = Registry("learning-rate schedule", {"step": _step, "cosine": _cosine})


# train.health: what a run does when it is not learning (ctsp.runs.health)
@dataclass(frozen=True)
class HealthMode:
    """A ``train.health`` choice: whether an epoch at chance or saturated is looked for, and
    whether it stops the run (exit 1, keeping its checkpoint) instead of warning once."""

    checks: bool
    stops: bool


HEALTH: Registry[HealthMode] = Registry(
    "health check",
    {
        "warn": HealthMode(checks=True, stops=False),
        "error": HealthMode(checks=True, stops=True),
        "off": HealthMode(checks=False, stops=False),
    },
)


class LRSchedule:
    """The schedule of a ``[train]`` section with fields ``epochs``, ``schedule_epochs``,
    ``decay``, ``decay_at``, ``schedule`` (one of :data:`SCHEDULES`) and ``t_max``.

    The schedule is planned over :attr:`plan` epochs (``schedule_epochs``, or ``epochs`` when it
    is 0). A run extended past its plan (``ctsp simulate --resume --epochs N`` sets
    ``schedule_epochs`` to the plan the run started with) trains the new epochs at the plan's
    last rate, so the epochs already trained keep theirs and the extended run repeats an
    uninterrupted run of its config exactly.
    """

    @property
    def plan(self) -> int:
        """The number of epochs the schedule is planned over."""
        return self.schedule_epochs or self.epochs

    def lr_factor(self, epoch: int) -> float:
        """The factor on the learning rates in (0-based) ``epoch`` (past the plan: that of its
        last epoch).

        ``schedule = "step"``: ``decay`` for every milestone max(1, floor(f * plan)), f in
        ``decay_at``, that the epoch has reached (with 100 epochs and the paper's 0.5, 0.75,
        0.89, 0.94: epochs 50, 75, 89 and 94). No milestone falls on the first epoch, so a
        shortened run (``--epochs 1``) trains at the configured rates. ``"cosine"``:
        (1 + cos(pi e / T)) / 2 with T = ``t_max`` (or the plan), the closed form of
        ``torch.optim.lr_scheduler.CosineAnnealingLR`` (minimum 0).
        """
        return SCHEDULES[self.schedule](self, min(epoch, self.plan - 1))

    def check_schedule(self) -> None:
        _require(0 < self.decay <= 1, "train.decay", self.decay, "in (0, 1]")
        _require(
            all(0 < f <= 1 for f in self.decay_at),
            "train.decay_at",
            list(self.decay_at),
            "in (0, 1]",
        )
        _require(self.t_max >= 0, "train.t_max", self.t_max, ">= 0")
        _require(self.schedule_epochs >= 0, "train.schedule_epochs", self.schedule_epochs, ">= 0")
