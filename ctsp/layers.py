"""The shared layer abstractions: projection, neuron model, learning rule.

A sigprop layer is three separable parts (docs/architecture.md):

1. a *projection* — the synapses, a map of presynaptic activity to a postsynaptic current
   (:class:`Linear`, :class:`Conv2d`). The same module carries input-path and target-path activity.
2. a *neuron model* — how current becomes activity. Its state is explicit: passed in and returned,
   never stored in the module (:class:`RateNeuron` for the continuous model of Eq. 13).
3. a *local learning rule* — how a projection updates from what reached it (:class:`CHL`, Eq. 14).

Networks in ``models`` compose these; runners drive them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .plasticity import chl_bias_update, chl_update


def glorot_uniform_(weight: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """Glorot/Xavier uniform initialisation: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


class Linear(nn.Module):
    """Dense projection: current = rates @ W.T, W shaped (n_out, n_in) like ``torch.nn.Linear``.

    Biases belong to the postsynaptic population (see :class:`RateNeuron` users), not here.
    """

    def __init__(self, n_in: int, n_out: int, *, trainable: bool = True) -> None:
        super().__init__()
        self.n_in, self.n_out, self.trainable = n_in, n_out, trainable
        self.weight = nn.Parameter(torch.empty(n_out, n_in), requires_grad=False)
        glorot_uniform_(self.weight, n_in, n_out)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, n_in) to a postsynaptic current (B, n_out)."""
        return rates @ self.weight.T

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, trainable={self.trainable}"


class Conv2d(nn.Module):
    """Convolutional projection: current = conv2d(rates, W), W shaped (c_out, c_in, k, k)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, padding: int = 0, trainable: bool = True
    ) -> None:
        super().__init__()
        self.padding, self.trainable = padding, trainable
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel), requires_grad=False)
        receptive = kernel * kernel
        glorot_uniform_(self.weight, c_in * receptive, c_out * receptive)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, c_in, H, W) to a current (B, c_out, H', W')."""
        return nn.functional.conv2d(rates, self.weight, padding=self.padding)


@dataclass(frozen=True)
class RateFunction:
    """A monotone rate function rho with its derivative rho' and the state bounds it implies.

    ``bounds`` is (low, high) when states are kept inside an interval (hard sigmoid: [0, 1]),
    ``None`` when states are unbounded. ``identity_within_bounds``: rho(s) = s and rho'(s) = 1
    for states inside the bounds, so a projected state needs neither computed.
    """

    name: str
    rho: Callable[[Tensor], Tensor]
    rho_prime: Callable[[Tensor], Tensor]
    bounds: tuple[float, float] | None
    identity_within_bounds: bool = False


def _hard_sigmoid_prime(s: Tensor) -> Tensor:
    # Closed interval: a state projected onto 0 or 1 can still move back inside.
    return ((s >= 0.0) & (s <= 1.0)).to(s.dtype)


def _sigmoid_prime(s: Tensor) -> Tensor:
    r = torch.sigmoid(s)
    return r * (1.0 - r)


RATE_FUNCTIONS: dict[str, RateFunction] = {
    "hard_sigmoid": RateFunction(
        "hard_sigmoid", lambda s: s.clamp(0.0, 1.0), _hard_sigmoid_prime, (0.0, 1.0), True
    ),
    "sigmoid": RateFunction("sigmoid", torch.sigmoid, _sigmoid_prime, None),
}


def rate_function(name: str) -> RateFunction:
    """Look up a rate function by name; unknown names are rejected with the valid list."""
    try:
        return RATE_FUNCTIONS[name]
    except KeyError:
        valid = ", ".join(sorted(RATE_FUNCTIONS))
        raise ConfigError(f"unknown rate function {name!r}; valid: {valid}") from None


class RateNeuron:
    """Rate neuron of Eq. 13: rho(s), rho'(s) and the state bounds of its rate function.

    Stateless: the state s (B, n) is passed to every method; the leak s_j / r_j uses the
    network's per-neuron time constants.
    """

    def __init__(self, rate: str) -> None:
        self.fn = rate_function(rate)
        self.name = self.fn.name

    def rho(self, s: Tensor) -> Tensor:
        return self.fn.rho(s)

    def rho_prime(self, s: Tensor) -> Tensor:
        return self.fn.rho_prime(s)


class CHL:
    """Contrastive Hebbian rule of Eq. 14 for one projection and its postsynaptic biases.

    dW = lr / (beta * B) * (rho(s_post^beta) - rho(s_post^0)).T @ rho(s_pre^0), and likewise for
    the biases with a presynaptic rate of 1. ``beta`` is the signed nudging strength that produced
    ``post_nudged`` (for symmetric nudging, 2 * beta and the -beta rates as ``post_free``).
    """

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def apply(
        self,
        weight: Tensor,
        bias: Tensor | None,
        pre: Tensor,
        post_free: Tensor,
        post_nudged: Tensor,
        lr: float,
        beta: float,
    ) -> None:
        scale = lr / (beta * pre.shape[0])
        chl_update(weight.data, pre, post_free, post_nudged, scale, backend=self.backend)
        if bias is not None:
            chl_bias_update(bias.data, post_free, post_nudged, scale)
