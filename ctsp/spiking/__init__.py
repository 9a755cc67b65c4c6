"""Spiking sigprop (paper Sec. VI, Table V): neuron models with explicit state, surrogate
spikes, spiking layers on the shared layer parts, their learners and mixed precision.

Registries: :data:`NEURON_MODELS` (``model.neuron``), :data:`RULES` (``train.rule`` of spiking
networks), :data:`SPIKE_LOSSES`, :data:`PRECISIONS` (``train.precision``).
"""

from .layers import Readout, SpikeTrains, SpikingLayer, constant_in_time, repeat_in_time
from .learners import SpikingBackprop, SpikingShallow, SpikingSigprop
from .neurons import IFNeuron, SpikingNeuron, if_step
from .precision import PRECISIONS, autocast, check_precision, grad_scaler
from .registry import NEURON_MODELS, RULES, SPIKE_LOSSES
from .surrogates import ArctanSurrogate, arctan_spike, heaviside

__all__ = [
    "NEURON_MODELS",
    "PRECISIONS",
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
    "autocast",
    "check_precision",
    "constant_in_time",
    "grad_scaler",
    "heaviside",
    "if_step",
    "repeat_in_time",
]
