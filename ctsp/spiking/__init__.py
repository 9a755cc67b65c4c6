"""Spiking sigprop (paper Sec. VI, Table V): neuron models with explicit state, surrogate
spikes, spiking layers on the shared layer parts and their learners.

Registries: :data:`NEURON_MODELS` (``model.neuron``), :data:`RULES` (``train.rule`` of spiking
networks), :data:`SPIKE_LOSSES`.
"""

from .layers import Readout, SpikeTrains, SpikingLayer, constant_in_time, repeat_in_time
from .learners import SpikingBackprop, SpikingShallow, SpikingSigprop
from .neurons import IFNeuron, SpikingNeuron, if_step
from .registry import NEURON_MODELS, RULES, SPIKE_LOSSES
from .surrogates import ArctanSurrogate, arctan_spike, heaviside

__all__ = [
    "NEURON_MODELS",
    "RULES",
    "SPIKE_LOSSES",
    "ArctanSurrogate",
    "IFNeuron",
    "Readout",
    "SpikeTrains",
    "SpikingBackprop",
    "SpikingLayer",
    "SpikingNeuron",
    "SpikingShallow",
    "SpikingSigprop",
    "arctan_spike",
    "constant_in_time",
    "heaviside",
    "if_step",
    "repeat_in_time",
]
