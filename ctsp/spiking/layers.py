"""Spiking layers (paper Sec. VI): a discrete sigprop layer whose activation is a spiking neuron.

:class:`SpikingLayer` is ``pool(neuron(BN(P x)))`` — the projection and the batch norm are a
``ctsp.nn.SignalLayer`` (projection + ``StaticNeuron`` with the identity activation: batch-norm
statistics from the input path, the targets normalised with them), then the spiking neuron over
the T time steps, then max-pooling. Every tensor that enters or leaves a spiking layer is a
spike train shaped (T, N, ...); an input that is the same at every step (the image under direct
encoding, a generated target) is an expanded view (stride 0 along time), whose current the layer
computes once. The input path and the target path have separate membrane states.
:class:`Readout` is the classification layer: a Linear layer whose output is averaged over the
T steps.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from ..nn import SignalLayer, max_pool
from .neurons import SpikingNeuron


def constant_in_time(x: Tensor) -> bool:
    """A (T, N, ...) train that is the same at every step: an expanded view (stride 0)."""
    return x.dim() > 1 and x.stride(0) == 0


def repeat_in_time(x: Tensor, steps: int) -> Tensor:
    """Direct encoding: x (N, ...) fed at every one of ``steps`` steps, (T, N, ...) (a view)."""
    return x.expand(steps, *x.shape)


class SpikeTrains(NamedTuple):
    """A spiking layer's output, each (T, N, ...): the spikes of the input path ``h`` and of
    the target path ``t`` (None without targets), and, when asked for, their pre-spike membrane
    voltages (max-pooled like the spikes: H is monotone, so pool(H(v - theta)) = H(pool(v) -
    theta))."""

    h: Tensor
    t: Tensor | None
    h_voltage: Tensor | None = None
    t_voltage: Tensor | None = None


class SpikingLayer(nn.Module):
    """A spiking sigprop layer: [s_i, s_i^t] = pool(neuron(BN(P [s_{i-1}, t_{i-1}]))) over T steps.

    Args:
        synapse: a ``ctsp.nn.SignalLayer`` without pooling whose neuron is a
            ``ctsp.nn.StaticNeuron`` with the identity activation: the projection P
            (the same weights for both paths; sparse targets and flattening as there) and the
            batch norm (statistics from the input path: ``bn_targets``) — the input current.
        neuron: the spiking neuron (a :class:`ctsp.spiking.SpikingNeuron`).
        pool: max-pool window after the neuron (0 = none), stride ``pool_stride``.

    :meth:`forward` takes spike trains ``h`` (T, B, ...) and ``t`` (T, R, ...) or None; a train
    that is constant in time (:func:`repeat_in_time`) has its current computed once. The batch
    norm sees all T steps of the input path as one batch (B or T*B rows). The two paths run
    through the neuron with separate membrane states.
    """

    def __init__(
        self, synapse: SignalLayer, neuron: SpikingNeuron, *, pool: int = 0, pool_stride: int = 2
    ) -> None:
        super().__init__()
        if synapse.pool or synapse.neuron.activation != "identity":
            raise ValueError("the synapse of a spiking layer has no pooling and no activation")
        self.synapse, self.neuron = synapse, neuron
        self.pool, self.pool_stride = pool, pool_stride

    def forward(self, h: Tensor, t: Tensor | None = None, *, voltage: bool = False) -> SpikeTrains:
        steps = h.shape[0]
        h_in, t_in = _fold(h), None if t is None else _fold(t)
        i_h, i_t = self.synapse(h_in, t_in)
        s_h, v_h = self.neuron.run(_unfold(i_h, h, steps), voltage)
        s_t = v_t = None
        if t is not None:
            s_t, v_t = self.neuron.run(_unfold(i_t, t, steps), voltage)
        out = SpikeTrains(self._pool(s_h), None if s_t is None else self._pool(s_t))
        if voltage:
            v_t = None if v_t is None else self._pool(v_t)
            out = out._replace(h_voltage=self._pool(v_h), t_voltage=v_t)
        return out

    def _pool(self, x: Tensor) -> Tensor:
        if not self.pool:
            return x
        return max_pool(x.flatten(0, 1), self.pool, self.pool_stride).unflatten(0, x.shape[:2])


class Readout(nn.Module):
    """The classification layer: logits (B, m) = the mean over the T steps of P s_t + b.

    ``synapse`` is a ``ctsp.nn.SignalLayer`` with a Linear projection and no
    activation. P is linear, so the time average of its output is P applied to the firing rate
    mean_t s_t, which is what is computed.
    """

    def __init__(self, synapse: SignalLayer) -> None:
        super().__init__()
        self.synapse = synapse

    def forward(self, h: Tensor) -> Tensor:
        return self.synapse(h.mean(0))[0]


def _fold(x: Tensor) -> Tensor:
    """(T, N, ...) -> the projection's rows: (N, ...) if constant in time, else (T*N, ...)."""
    return x[0] if constant_in_time(x) else x.flatten(0, 1)


def _unfold(current: Tensor, x: Tensor, steps: int) -> Tensor:
    return (
        repeat_in_time(current, steps) if constant_in_time(x) else current.unflatten(0, (steps, -1))
    )
