"""The learner protocol of discrete (and spiking) training: what ``DiscreteTrainer`` needs from a
learning rule, and :class:`Rules`, the state every learner shares.

A learner owns its optimizers and trains a network one minibatch at a time. ``names`` names its
exits: one prediction per exit (sigprop: every layer's early exit, Eq. 8; a baseline: its output,
and auxiliary heads if it has them); the last exit is the network's prediction. Its state is
keyed by name (``{"rules": {name: rule state}, "fixed": {name: tensor}}``), never by position.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..errors import RunDirError
from .lpred import LPred


class Learner(Protocol):
    """What :class:`ctsp.discrete.DiscreteTrainer` needs from a learning rule."""

    names: tuple[str, ...]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One update from (x (B, ...), y (B,)): (loss per exit, wrong predictions per exit)."""
        ...

    def predict_exits(self, x: Tensor) -> Tensor:
        """The class predicted at every exit, (B, E); called in eval mode without grad."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Rules:
    """What learners share: ``rules`` (name -> a rule owning an optimizer, in training order)
    and ``fixed`` (name -> a fixed random tensor: feedback matrices), both in the state by
    name. Subclasses fill them and implement ``train_batch`` and ``predict_exits``."""

    names: tuple[str, ...] = ("out",)

    def __init__(self) -> None:
        self.rules: dict[str, LPred] = {}
        self.fixed: dict[str, Tensor] = {}

    def set_lr(self, lr: float) -> None:
        for rule in self.rules.values():
            rule.set_lr(lr)

    def optimizers(self) -> list:
        """The optimizers of the rules, in training order (data-parallel replicas sum their
        gradients before each step)."""
        return [r.optimizer for r in self.rules.values() if r.optimizer is not None]

    def state_dict(self) -> dict:
        return {
            "rules": {name: rule.state_dict() for name, rule in self.rules.items()},
            "fixed": dict(self.fixed),
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise RunDirError("the checkpoint's learner state is from an older ctsp version")
        saved = (set(state.get("rules", {})), set(state.get("fixed", {})))
        if saved != (set(self.rules), set(self.fixed)):
            raise RunDirError(
                "the checkpoint's learner state does not match this learner (rules "
                f"{sorted(saved[0])} vs {sorted(self.rules)}, fixed matrices {sorted(saved[1])} "
                f"vs {sorted(self.fixed)})"
            )
        for name, rule in self.rules.items():
            rule.load_state_dict(state["rules"][name])
        with torch.no_grad():
            for name, mine in self.fixed.items():
                mine.copy_(state["fixed"][name])
