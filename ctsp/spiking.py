"""Spiking sigprop (paper Sec. VI, Table V): the integrate-and-fire neuron, the arctan
surrogate, the spiking layer and the learners of ``model.arch = "snn"``.

The neuron is one more neuron model of the shared layer abstractions (docs/architecture.md):
a pure step function with explicit state (:func:`if_step`) and a thin module around it
(:class:`IFNeuron`). Integrate-and-fire, no leak, hard reset to 0::

    v_pre = v + I_t                      (integrate the input current)
    s_t   = H(v_pre - theta)             (spike when the voltage reaches the threshold)
    v     = v_pre (1 - s_t)              (reset to 0 after a spike)

H is the Heaviside step (H(0) = 1). Its derivative is zero almost everywhere; the *arctan
surrogate* (:class:`ArctanSurrogate`) keeps H in the forward pass and uses the derivative of
g(x) = arctan(pi x) / pi + 1/2, g'(x) = 1 / (1 + (pi x)^2), in the backward pass. Without the
surrogate (``surrogate=False``) the spike carries no gradient at all.

:class:`SpikingLayer` is a discrete sigprop layer whose activation is that neuron:
``pool(IF(BN(P x)))`` — the projection and the batch norm are a :class:`ctsp.layers.SignalLayer`
(projection + :class:`ctsp.layers.StaticNeuron` with the identity activation: batch-norm
statistics from the input path, the targets normalised with them), then the IF neuron over
the T time steps, then max-pooling. Every tensor that enters or leaves a spiking layer is a
spike train shaped (T, N, ...); an input that is the same at every step (the image under direct
encoding, a generated target) is an expanded view (stride 0 along time), whose current the layer
computes once. The input path and the target path have separate membrane states.
:class:`Readout` is the classification layer: a Linear layer whose output is averaged over the
T steps.

Learners (``ctsp.discrete.Learner``, chosen by ``train.rule``):

- ``sigprop``: :class:`SpikingSigprop`, ``ctsp.discrete.Sigprop`` unchanged on the spiking
  network's ``pairs()`` (``models.spiking``): each layer's loss L_pred (classification layer:
  cross entropy) sees that layer's time-averaged output — surrogate spikes
  (``model.spike_loss = "surrogate"``) or pre-spike membrane voltages (``"voltage"``, no
  surrogate anywhere) — and steps that layer's own Adam;
- ``bp``: :class:`SpikingBackprop`, back-propagation through the surrogate across all layers
  and time steps, cross entropy of the time-averaged classifier output;
- ``shallow``: :class:`SpikingShallow`, only the classification layer trains.

Mixed precision (``train.precision``): the network computes its layers under
``torch.autocast`` (float16 on CUDA, bfloat16 on CPU or CUDA); the losses and comparisons are
computed in float32 outside it; with float16 every optimizer has a ``torch.amp.GradScaler``.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import DiscreteRunConfig
from .discrete import Sigprop
from .errors import ConfigError, DivergenceError
from .layers import ClassifierCE, SignalLayer, max_pool

# ---------------------------------------------------------------------------------------------
# the neuron
# ---------------------------------------------------------------------------------------------


def heaviside(x: Tensor) -> Tensor:
    """H(x) = 1 for x >= 0, else 0, in x's dtype; no gradient."""
    return (x >= 0).to(x.dtype)


class ArctanSurrogate(torch.autograd.Function):
    """Forward: the Heaviside step H(x). Backward: g'(x) = 1 / (1 + (pi x)^2), the derivative
    of g(x) = arctan(pi x) / pi + 1/2 (computed in float32)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return (grad.float() / (1 + (math.pi * x.float()).square())).to(grad.dtype)


def arctan_spike(x: Tensor) -> Tensor:
    """The spike H(x) with the arctan surrogate gradient."""
    return ArctanSurrogate.apply(x)


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


class IFNeuron(nn.Module):
    """The integrate-and-fire neuron as a module (no parameters, no stored state).

    ``forward(current, v)`` is one :func:`if_step`; ``run(currents)`` simulates the T steps of
    (T, N, ...) currents from v = 0 and returns the spikes and the pre-spike voltages, (T, N, ...).
    """

    def __init__(self, threshold: float = 1.0, *, surrogate: bool = True) -> None:
        super().__init__()
        self.threshold, self.surrogate = threshold, surrogate

    def forward(self, current: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One step from voltage v (None: 0)."""
        return if_step(v, current, self.threshold, self.surrogate)

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


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------


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
    """A spiking sigprop layer: [s_i, s_i^t] = pool(IF(BN(P [s_{i-1}, t_{i-1}]))) over T steps.

    Args:
        synapse: a :class:`ctsp.layers.SignalLayer` without pooling whose neuron is a
            :class:`ctsp.layers.StaticNeuron` with the identity activation: the projection P
            (the same weights for both paths; sparse targets and flattening as there) and the
            batch norm (statistics from the input path: ``bn_targets``) — the input current.
        neuron: the :class:`IFNeuron`.
        pool: max-pool window after the neuron (0 = none), stride ``pool_stride``.

    :meth:`forward` takes spike trains ``h`` (T, B, ...) and ``t`` (T, R, ...) or None; a train
    that is constant in time (:func:`repeat_in_time`) has its current computed once. The batch
    norm sees all T steps of the input path as one batch (B or T*B rows). The two paths run
    through the neuron with separate membrane states.
    """

    def __init__(
        self, synapse: SignalLayer, neuron: IFNeuron, *, pool: int = 0, pool_stride: int = 2
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

    ``synapse`` is a :class:`ctsp.layers.SignalLayer` with a Linear projection and no
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


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "float32": None,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def check_precision(precision: str, device: str) -> None:
    """float16 autocast with gradient scaling is a CUDA feature: refuse it on the CPU."""
    if precision == "float16" and not device.startswith("cuda"):
        raise ConfigError(
            'train.precision = "float16" needs device = "cuda"; on the CPU use "bfloat16" or '
            '"float32"'
        )


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a null context for float32)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    check_precision(precision, device.type)
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(config: DiscreteRunConfig):
    """A gradient scaler for float16 training (CUDA), else None."""
    if config.train.precision != "float16":
        return None
    check_precision(config.train.precision, config.device)
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3


# ---------------------------------------------------------------------------------------------
# learners
# ---------------------------------------------------------------------------------------------


class SpikingSigprop(Sigprop):
    """Sigprop on a spiking network (SP-surrogate, SP-voltage): ``ctsp.discrete.Sigprop`` as it
    is — one rule and Adam optimizer per layer, each stepped as soon as its pair arrives — on
    the pairs of ``SpikingNetwork.pairs`` (each layer's time-averaged surrogate spikes or
    voltages, in float32), with a gradient scaler per layer for float16."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        for rule in self.rules:
            rule.scaler = grad_scaler(config)

    def state_dict(self) -> list[dict]:
        return [*super().state_dict(), _scaler_states(self.rules)]

    def load_state_dict(self, states: list[dict]) -> None:
        super().load_state_dict(states[:-1])
        _load_scaler_states(self.rules, states[-1])


class SpikingBackprop:
    """BP-surrogate: cross entropy of the time-averaged classifier output, back-propagated
    through the surrogate spikes of every layer and time step into all layers (one Adam
    optimizer). One exit, the network's output."""

    names = ("out",)

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        self.net = net
        self.rule = ClassifierCE(self.parameters(), lr=config.train.lr, scaler=grad_scaler(config))

    def parameters(self):
        return self.net.layers.parameters()  # the target generator is not used

    def logits(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        try:
            loss, z = self.rule.update(self.logits(x), None, y)
        except DivergenceError:
            raise DivergenceError(
                "training diverged: NaN or Inf in the loss of layer out"
            ) from None
        return loss[None], (z.argmax(1) != y).sum()[None]

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net(x).argmax(1)[:, None]

    def set_lr(self, lr: float) -> None:
        self.rule.set_lr(lr)

    def state_dict(self) -> list[dict]:
        return [self.rule.state_dict(), _scaler_states([self.rule])]

    def load_state_dict(self, states: list[dict]) -> None:
        self.rule.load_state_dict(states[0])
        _load_scaler_states([self.rule], states[1])


class SpikingShallow(SpikingBackprop):
    """Shallow: the spiking layers keep their random weights (run without gradient); only the
    classification layer learns, by the cross entropy of its time-averaged output."""

    def parameters(self):
        return self.net.layers[-1].parameters()

    def logits(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            features = self.net.features(x)
        return self.net.readout(features)


def _scaler_states(rules) -> dict:
    return {"scalers": [r.scaler.state_dict() if r.scaler is not None else {} for r in rules]}


def _load_scaler_states(rules, state: dict) -> None:
    for rule, saved in zip(rules, state["scalers"], strict=True):
        if rule.scaler is not None and saved:
            rule.scaler.load_state_dict(saved)


LEARNERS = {"sigprop": SpikingSigprop, "bp": SpikingBackprop, "shallow": SpikingShallow}


def make_learner(net, config: DiscreteRunConfig):
    """The learner of ``config.train.rule`` ("sigprop", "bp" or "shallow") for a spiking
    network (``models.spiking.SpikingNetwork``)."""
    try:
        cls = LEARNERS[config.train.rule]
    except KeyError:
        valid = ", ".join(LEARNERS)
        raise ConfigError(
            f"train.rule = {config.train.rule!r} is not available for spiking networks; "
            f"valid: {valid}"
        ) from None
    return cls(net, config)
