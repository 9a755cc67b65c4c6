"""Spiking neuron models: pure step functions with explicit state, thin modules around them.

A neuron model is a :class:`SpikingNeuron`: ``step(v, current)`` -> (spike, v_new, v_pre) from
the voltage after the previous step (None at the start), and :meth:`SpikingNeuron.run` over T
steps. Nothing is stored in the module: the input and the target path keep separate membrane
states. The integrate-and-fire neuron (no leak, hard reset to 0; paper Sec. VI)::

    v_pre = v + I_t                      (integrate the input current)
    s_t   = H(v_pre - theta)             (spike when the voltage reaches the threshold)
    v     = v_pre (1 - s_t)              (reset to 0 after a spike)

The models are registered in ``ctsp.spiking.registry.NEURON_MODELS`` (``model.neuron``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .surrogates import arctan_spike, heaviside


class SpikingNeuron(nn.Module):
    """Base class of the spiking neuron models (no parameters, no stored state).

    Args:
        threshold: the firing threshold theta.
        surrogate: the spike's gradient is the arctan surrogate; False: plain Heaviside, no
            gradient through the spike.

    Subclasses implement :meth:`step`; ``forward(current, v)`` is one step and ``run(currents)``
    simulates the T steps of (T, N, ...) currents from v = None (the model's resting state).
    """

    def __init__(self, threshold: float = 1.0, *, surrogate: bool = True) -> None:
        super().__init__()
        self.threshold, self.surrogate = threshold, surrogate

    def spike(self, x: Tensor) -> Tensor:
        """H(x), with the arctan surrogate gradient when ``surrogate``."""
        return (arctan_spike if self.surrogate else heaviside)(x)

    def step(self, v: Tensor | None, current: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(spike, v_new, v_pre) of one step from voltage ``v`` (None: the start)."""
        raise NotImplementedError

    def forward(self, current: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One step from voltage v (None: the start)."""
        return self.step(v, current)

    def run(self, currents: Tensor, voltages: bool = True) -> tuple[Tensor, Tensor | None]:
        """(spikes, pre-spike voltages or None when not asked for), each (T, N, ...)."""
        v, spikes, pre = None, [], []
        for current in currents:
            spike, v, v_pre = self(current, v)
            spikes.append(spike)
            if voltages:
                pre.append(v_pre)
        return torch.stack(spikes), torch.stack(pre) if voltages else None

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, surrogate={'arctan' if self.surrogate else 'none'}"


def if_step(
    v: Tensor | None, current: Tensor, threshold: float, surrogate: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the integrate-and-fire neuron (no leak, hard reset to 0).

    Args:
        v: membrane voltage after the previous step (None: 0, the start).
        current: the input current of this step, shaped like v.
        threshold: the firing threshold theta.
        surrogate: the spike's gradient is the arctan surrogate; False: plain Heaviside, no
            gradient through the spike.

    Returns: (spike, v_new, v_pre) with v_pre = v + current, spike = H(v_pre - theta),
    v_new = v_pre * (1 - spike).
    """
    v_pre = current if v is None else v + current
    spike = (arctan_spike if surrogate else heaviside)(v_pre - threshold)
    return spike, v_pre * (1 - spike), v_pre


class IFNeuron(SpikingNeuron):
    """The integrate-and-fire neuron (:func:`if_step`): no leak, hard reset to 0."""

    def step(self, v: Tensor | None, current: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return if_step(v, current, self.threshold, self.surrogate)
