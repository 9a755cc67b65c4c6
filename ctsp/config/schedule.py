"""The learning-rate schedule of a ``[train]`` section, shared by both run configurations."""

from __future__ import annotations

import math

from ..registry import Registry
from .base import _require


def _step(train, epoch: int) -> float:
    milestones = [max(1, int(f * train.epochs + 1e-9)) for f in train.decay_at]
    return train.decay ** sum(epoch >= m for m in milestones)


def _cosine(train, epoch: int) -> float:
    return (1 + math.cos(math.pi * epoch / (train.t_max or train.epochs))) / 2


SCHEDULES = Registry("learning-rate schedule", {"step": _step, "cosine": _cosine})


class LRSchedule:
    """The schedule of a ``[train]`` section with fields ``epochs``, ``decay``, ``decay_at``,
    ``schedule`` (one of :data:`SCHEDULES`) and ``t_max``."""

    def lr_factor(self, epoch: int) -> float:
        """The factor on the learning rates in (0-based) ``epoch``.

        ``schedule = "step"``: ``decay`` for every milestone max(1, floor(f * epochs)), f in
        ``decay_at``, that the epoch has reached (with 100 epochs and the paper's 0.5, 0.75,
        0.89, 0.94: epochs 50, 75, 89 and 94). No milestone falls on the first epoch, so a
        shortened run (``--epochs 1``) trains at the configured rates. ``"cosine"``:
        (1 + cos(pi e / T)) / 2 with T = ``t_max`` (or ``epochs``), the closed form of
        ``torch.optim.lr_scheduler.CosineAnnealingLR`` (minimum 0).
        """
        return SCHEDULES[self.schedule](self, epoch)

    def check_schedule(self) -> None:
        _require(0 < self.decay <= 1, "train.decay", self.decay, "in (0, 1]")
        _require(
            all(0 < f <= 1 for f in self.decay_at),
            "train.decay_at",
            list(self.decay_at),
            "in (0, 1]",
        )
        _require(self.t_max >= 0, "train.t_max", self.t_max, ">= 0")
