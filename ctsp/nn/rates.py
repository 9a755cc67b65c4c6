"""Rate functions rho of the continuous model (Eq. 13) and the rate neuron built on them.

:data:`RATE_FUNCTIONS` is the registry (``network.rate``): ``hard_sigmoid`` (rho(s) = clip(s, 0, 1),
states kept in [0, 1]) and ``sigmoid`` (unbounded states).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import Registry


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


RATE_FUNCTIONS: Registry[RateFunction] = Registry(
    "rate function",
    {
        "hard_sigmoid": RateFunction(
            "hard_sigmoid", lambda s: s.clamp(0.0, 1.0), _hard_sigmoid_prime, (0.0, 1.0), True
        ),
        "sigmoid": RateFunction("sigmoid", torch.sigmoid, _sigmoid_prime, None),
    },
)


def rate_function(name: str) -> RateFunction:
    """Look up a rate function by name; unknown names are rejected with the valid list."""
    return RATE_FUNCTIONS[name]


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

    def saturated(self, s: Tensor) -> Tensor:
        """Where the rate is at an end of its range [0, 1] (within 1e-6): exactly 0 or 1 for the
        hard sigmoid, |s| > ~14 for the smooth one; a saturated neuron that stays saturated in
        both phases contributes no rate difference to Eq. 14."""
        r = self.rho(s)
        return (r <= 1e-6) | (r >= 1 - 1e-6)
