"""Sigprop's learner (paper Sec. III-A, Fig. 2a/2b): every layer learns from its own loss.

For every minibatch the network (``DiscreteNetwork.pairs``) feeds the input x and the targets of
the target generator forward through the same layers (Eq. 1-3). As soon as layer i has formed
(h_i, t_i), its rule computes L(h_i, t_i) (L_pred, Eq. 9; cross entropy for a classification
layer), back-propagates it into layer i alone (its inputs arrive detached) and steps layer i's
own Adam optimizer; then (h_i, t_i) go on to layer i+1. No gradient crosses a layer;
J = sum_i L(h_i, t_i) (Eq. 4) is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import Registry
from .learner import Rules
from .lpred import ClassifierCE, LPred


@dataclass(frozen=True)
class Prediction:
    """A ``signal.prediction`` choice: whether the last layer is a classification layer
    trained by cross entropy (Fig. 2b), else its output is compared with output targets (Fig.
    2a)."""

    classifier: bool


PREDICTIONS: Registry[Prediction] = Registry(
    "prediction", {"classifier": Prediction(True), "target": Prediction(False)}
)


class Sigprop(Rules):
    """``rules[name]`` trains layer ``name`` (and the target generator, for the first layer)
    with its own Adam optimizer: :class:`ClassifierCE` for a classification layer, else
    :class:`LPred` with the network's comparison. Each layer updates as soon as its
    (h_i, t_i) arrive (``DiscreteNetwork.pairs``)."""

    def __init__(self, net, config) -> None:
        super().__init__()
        self.net, self.names = net, tuple(net.names)
        lr = config.train.lr
        for i, name in enumerate(self.names):
            params = net.layer_parameters(i)
            last = i == len(net.layers) - 1
            if last and PREDICTIONS[net.prediction].classifier:
                self.rules[name] = ClassifierCE(params, lr=lr, name=name)
            else:
                self.rules[name] = LPred(params, compare=net.compare_name, lr=lr, name=name)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        losses, wrong, _ = self.train_layers(x, y)
        return losses, wrong

    def train_layers(
        self, x, y: Tensor, start: int = 0, stop: int | None = None, carry=None, feedback=None
    ):
        """Layers ``start`` to ``stop - 1`` of one minibatch (a stage of a layer pipeline;
        ``carry``: what the stage before passes on, ``feedback``: the target-loop context, see
        ``DiscreteNetwork.pairs``): (loss per layer, wrong predictions per layer, the carry
        for the next stage)."""
        losses, wrong = [], []
        pairs = self.net.pairs(x, start, stop, carry, feedback)
        for rule in list(self.rules.values())[start:stop]:
            h, t = next(pairs)
            loss, logits = rule.update(h, t, y)
            losses.append(loss)
            wrong.append((logits.argmax(1) != y).sum())
        try:
            next(pairs)
        except StopIteration as end:
            return torch.stack(losses), torch.stack(wrong), end.value
        raise RuntimeError("the network yielded more (h, t) pairs than it has rules")

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net.predict_exits(x)
