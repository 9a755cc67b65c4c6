"""The learners of spiking networks (``model.arch = "snn"``, paper Table V), by ``train.rule``:

- ``sigprop``: :class:`SpikingSigprop`, ``ctsp.discrete.Sigprop`` unchanged on the spiking
  network's ``pairs()`` (``models.spiking``): each layer's loss L_pred (classification layer:
  cross entropy) sees that layer's time-averaged output — surrogate spikes
  (``model.spike_loss = "surrogate"``) or pre-spike membrane voltages (``"voltage"``, no
  surrogate anywhere) — and steps that layer's own Adam;
- ``bp``: :class:`SpikingBackprop`, back-propagation through the surrogate across all layers
  and time steps, cross entropy of the time-averaged classifier output;
- ``shallow``: :class:`SpikingShallow`, only the classification layer trains.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..discrete import ClassifierCE, Rules, Sigprop
from ..nn import grad_scaler


class SpikingSigprop(Sigprop):
    """Sigprop on a spiking network (SP-surrogate, SP-voltage): ``ctsp.discrete.Sigprop`` as it
    is — one rule and Adam optimizer per layer, each stepped as soon as its pair arrives — on
    the pairs of ``SpikingNetwork.pairs`` (each layer's time-averaged surrogate spikes or
    voltages, in float32), with a gradient scaler per layer for float16."""

    default_threshold = 0.5  # the firing threshold when model.threshold is 0

    def __init__(self, net, config) -> None:
        super().__init__(net, config)
        for rule in self.rules.values():
            rule.scaler = grad_scaler(config.train.precision)


class SpikingBackprop(Rules):
    """BP-surrogate: cross entropy of the time-averaged classifier output, back-propagated
    through the surrogate spikes of every layer and time step into all layers (one Adam
    optimizer). One exit, the network's output."""

    default_threshold = 1.0

    def __init__(self, net, config) -> None:
        super().__init__()
        self.net = net
        scaler = grad_scaler(config.train.precision)
        self.rules["out"] = ClassifierCE(self.parameters(), lr=config.train.lr, scaler=scaler)

    def parameters(self):
        return self.net.layers.parameters()  # the target generator is not used

    def logits(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss, z = self.rules["out"].update(self.logits(x), None, y)
        return loss[None], (z.argmax(1) != y).sum()[None]

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net(x).argmax(1)[:, None]


class SpikingShallow(SpikingBackprop):
    """Shallow: the spiking layers keep their random weights (run without gradient); only the
    classification layer learns, by the cross entropy of its time-averaged output."""

    def parameters(self):
        return self.net.layers[-1].parameters()

    def logits(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            features = self.net.features(x)
        return self.net.readout(features)
