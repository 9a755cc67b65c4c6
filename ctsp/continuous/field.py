"""The vector field of Eq. 13 for a network of rate populations.

For every neuron j (paper Eq. 13)::

    ds_j/dt = rho'(s_j) * ( sum_{i->j} w_ij rho(s_i) + sum_{i in O -> j in I} w_ij rho(s_i) + b_j )
              - s_j / r_j - beta * (s_j - d_j) [j in O only]

The first sum runs over the feed-forward projections (and the input projection, whose constant
current W_in x + b_1 is computed once per phase and passed in as ``input_current``), the second over
the loop-back projection from the output O to the input-receiving population I. Nudging acts on
the output population only. Time is in units of the neuron time constant r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..registry import Registry


@dataclass(frozen=True)
class LoopMode:
    """A ``network.loop`` choice: whether the network has the loop-back projection output ->
    first hidden population, and whether it learns (by the run's rule, Eq. 14)."""

    exists: bool
    trainable: bool


LOOP_MODES: Registry[LoopMode] = Registry(
    "loop mode",
    {
        "learned": LoopMode(exists=True, trainable=True),
        "fixed": LoopMode(exists=True, trainable=False),  # keeps its random initial weights
        "none": LoopMode(exists=False, trainable=False),
    },
)


@dataclass(frozen=True)
class FeedbackMode:
    """A ``network.feedback`` choice: whether every population after the first sends a
    feedback projection to the one before it (the layered networks of Equilibrium Propagation),
    and whether that projection is the transpose of the forward one (``tied``: symmetric
    weights, Scellier & Bengio 2017) or a fixed random matrix (the feedback-alignment variant).
    Feedback projections never learn: tied ones change with their forward projection."""

    exists: bool
    tied: bool


FEEDBACK_MODES: Registry[FeedbackMode] = Registry(
    "feedback mode",
    {
        "none": FeedbackMode(exists=False, tied=False),  # sigprop: no feedback at all
        "symmetric": FeedbackMode(exists=True, tied=True),  # fb_k = ff_k^T (EP)
        "random": FeedbackMode(exists=True, tied=False),  # fixed Glorot-uniform fb_k
    },
)


def population_names(sizes) -> tuple[str, ...]:
    """Names of the populations of a network with ``sizes`` [input, hidden…, output]:
    h1, h2, …, out (the input is not a population)."""
    return tuple(f"h{k + 1}" for k in range(len(sizes) - 2)) + ("out",)


def eq13(
    net,
    state: Tensor,
    input_current: Tensor,
    beta: float | Tensor = 0.0,
    target: Tensor | None = None,
    in_bounds: bool = False,
) -> Tensor:
    """ds/dt of Eq. 13 — a pure function of (state, input, beta, target).

    Args:
        net: a network with ``populations`` (column slices of the flat state), ``edges``
            (src -> dst projections; src -1 is the input), ``projections``, ``biases``, ``tau``
            (per-neuron time constants, (N,)) and ``neuron`` (rho, rho').
        state: s, (B, N).
        input_current: W_in x + b_1, (B, n_1).
        beta: nudging strength; a float or a (B, 1) tensor (per-sample sign, e.g. for ±beta).
        target: d, one-hot target rates (B, n_out); needed when beta is not zero.
        in_bounds: the caller guarantees ``state`` lies within the rate function's bounds (as
            projected Euler does); for the hard sigmoid rho(s) = s and rho'(s) = 1 there, so
            neither is computed. The result is the same.

    Returns:
        ds/dt, (B, N).
    """
    pops, fn = net.populations, net.neuron.fn
    identity = in_bounds and fn.identity_within_bounds
    rates = state if identity else fn.rho(state)
    leak = net.tau.reciprocal()
    # population by population into one buffer: no concatenation and no pass over the whole
    # state per term (each population's terms are one element-wise op and its matrix products)
    dsdt = torch.empty_like(state)
    for k, cols in enumerate(pops):
        d, s = dsdt[:, cols], state[:, cols]
        if identity:  # the current summed in place
            add_recurrent_(net, rates, k, d.copy_(external_current(net, k, input_current)))
        else:
            torch.mul(current(net, rates, k, input_current), fn.rho_prime(s), out=d)
        d.addcmul_(s, leak[cols], value=-1.0)
    if target is not None and not (isinstance(beta, float) and beta == 0.0):
        out = pops[-1]
        dsdt[:, out] -= beta * (state[:, out] - target)
    return dsdt


def external_current(net, k: int, input_current: Tensor) -> Tensor:
    """The current into population k from outside the populations: W_in x + b_1 (B, n_1) for
    the first, the bias b_k (n_k,) for the others."""
    return input_current if k == 0 else net.biases[k]


def recurrent_inputs(net, k: int):
    """(source population, weight (n_k, n_src)) of every recurrent projection into population
    k (see :func:`recurrent_edges`)."""
    return [(e.src, net.projections[e.name].weight) for e in net.edges if e.dst == k and e.src >= 0]


def population_rates(net, rates, k: int) -> Tensor:
    """Population k's rates (B, n_k) from the flat rates (B, N) or a sequence of per-population
    tensors (which the steady sweeps keep, contiguous for the matrix products)."""
    return rates[k] if isinstance(rates, (list, tuple)) else rates[:, net.populations[k]]


def add_recurrent_(net, rates, k: int, out: Tensor) -> Tensor:
    """``out += sum_{i->k} rho(s_i) W_ik^T`` in place, (B, n_k): one matrix product per
    recurrent projection into population k; ``rates`` as for :func:`population_rates`."""
    for src, w in recurrent_inputs(net, k):
        out.addmm_(population_rates(net, rates, src), w.T)
    return out


def current(net, rates, k: int, input_current: Tensor) -> Tensor:
    """The synaptic current into population k, sum_{i->j} w_ij rho(s_i) + b_j, (B, n_k).

    ``rates`` rho(s), (B, N), or per population (:func:`population_rates`); population 0
    receives ``input_current`` (W_in x + b_1) in place of its bias. One matrix product per
    recurrent projection into k (see :func:`recurrent_edges`).
    """
    cur = external_current(net, k, input_current).expand(input_current.shape[0], -1)
    for src, w in recurrent_inputs(net, k):
        cur = torch.addmm(cur, population_rates(net, rates, src), w.T)
    return cur


def recurrent_edges(net, k: int | None = None) -> int:
    """Projections between populations (the input projection excluded), into k or all: the
    matrix products of one evaluation of Eq. 13 (or of population k's current)."""
    return sum(e.src >= 0 and (k is None or e.dst == k) for e in net.edges)


def block_terms(net, k: int, cur: Tensor, beta=0.0, target: Tensor | None = None):
    """Eq. 13 for population k within the rate function's bounds, as ds/dt = a - c * s.

    For a rate function that is the identity within its bounds (the hard sigmoid: rho(s) = s,
    rho'(s) = 1), the current ``cur`` I (:func:`current`) and the leak give a = I, c = 1/r for a
    hidden population, and the nudge adds a = I + beta d, c = 1/r + beta for the output. Returns
    (a, c), broadcastable to (B, n_k).
    """
    c = net.tau[net.populations[k]].reciprocal()
    nudged = k == len(net.populations) - 1 and target is not None
    if nudged and not (isinstance(beta, float) and beta == 0.0):
        return cur + beta * target, c + beta
    return cur, c


def block_state(
    net, k: int, cur: Tensor, beta=0.0, target: Tensor | None = None, out: Tensor | None = None
) -> Tensor:
    """The steady state of population k of Eq. 13 given the others, (B, n_k), written into
    ``out`` when given (e.g. population k's columns of the flat state).

    ds_j/dt = a_j - c_j s_j = 0 (:func:`block_terms`), projected onto the bounds [lo, hi]::

        s_j = clip(r_j I_j, lo, hi)                                  (hidden populations)
        s_j = clip(r_j (I_j + beta d_j) / (1 + r_j beta), lo, hi)    (the nudged output)

    The output formula needs c = 1/r + beta > 0: a negative nudge with beta <= -1/r cancels or
    reverses the leak, and the output has no interior fixed point (``solvers.Steady`` refuses
    it).
    """
    a, c = block_terms(net, k, cur, beta, target)
    return torch.div(a, c, out=out).clamp_(*net.neuron.fn.bounds)


def block_residual(net, k: int, cur: Tensor, state: Tensor, beta=0.0, target=None) -> Tensor:
    """Per-sample projected residual max_j |ds_j/dt| of population k at ``state`` (B, n_k)."""
    a, c = block_terms(net, k, cur, beta, target)
    return projected_residual(a - c * state, state, net.neuron.fn.bounds)


@dataclass(frozen=True, eq=False)
class Field:
    """Eq. 13 bound to one phase (network, input current, beta, target): a callable f(t, s),
    immutable (a solver counts the evaluations it makes: ``solvers.Counted``).

    ``in_bounds``: every evaluation is at a state within the rate function's bounds (projected
    Euler), so that :func:`eq13` may skip rho and rho' (see its ``in_bounds``). The state is
    kept inside the bounds by :meth:`project_`, which a fixed-grid method calls before every
    step (projected Euler: s <- clip(s + eps f(s), 0, 1) for the hard sigmoid).
    """

    net: Any
    input_current: Tensor
    beta: float | Tensor = 0.0
    target: Tensor | None = None
    in_bounds: bool = False

    @property
    def bounds(self) -> tuple[float, float] | None:
        return self.net.neuron.fn.bounds

    def __call__(self, t: Tensor, state: Tensor) -> Tensor:
        return eq13(self.net, state, self.input_current, self.beta, self.target, self.in_bounds)

    def project_(self, state: Tensor) -> Tensor:
        """Clip the state onto the bounds in place (no-op for unbounded rate functions)."""
        if self.bounds is not None:
            state.clamp_(*self.bounds)
        return state

    def residual(self, state: Tensor) -> Tensor:
        """Per-sample residual max_j |ds_j/dt| of the projected field at ``state``, (B,): one
        evaluation. At a bound, the component that pushes outward is not motion (the state
        stays on the bound), so it does not count (:func:`projected_residual`)."""
        return projected_residual(self(torch.zeros((), device=state.device), state), state,
                                  self.bounds)  # fmt: skip


def projected_residual(f: Tensor, state: Tensor, bounds) -> Tensor:
    """max_j |f_j| per sample, (B,), with the components that push a state on a bound outward
    (which do not move it) left out."""
    if bounds is not None:
        lo, hi = bounds
        f = torch.where(((state <= lo) & (f < 0)) | ((state >= hi) & (f > 0)), 0.0, f)
    return f.abs().amax(1)
