"""The choices of spiking networks, each a registry: neuron models (``model.neuron``), learning
rules (``train.rule`` for ``model.arch = "snn"``) and what each layer's loss sees
(``model.spike_loss``). A new neuron model is one module with a :class:`SpikingNeuron` subclass
and one line in :data:`NEURON_MODELS` (docs/architecture.md shows an example)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from .learners import SpikingBackprop, SpikingShallow, SpikingSigprop
from .neurons import IFNeuron, SpikingNeuron

NEURON_MODELS: Registry[type[SpikingNeuron]] = Registry("spiking neuron model", {"if": IFNeuron})

RULES = Registry(
    "spiking learning rule",
    {"sigprop": SpikingSigprop, "bp": SpikingBackprop, "shallow": SpikingShallow},
)


@dataclass(frozen=True)
class SpikeLoss:
    """A ``model.spike_loss`` choice: ``voltage`` — each layer's loss sees its mean pre-spike
    membrane voltage (a sigprop variant: no surrogate gradient is needed), else its
    time-averaged surrogate spikes (firing rates)."""

    voltage: bool


SPIKE_LOSSES: Registry[SpikeLoss] = Registry(
    "spike loss", {"surrogate": SpikeLoss(voltage=False), "voltage": SpikeLoss(voltage=True)}
)
