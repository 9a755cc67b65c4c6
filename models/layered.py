"""The continuous-time layered networks: sigprop's loop network (paper Sec. V, Fig. 2c) and the
layered networks of Equilibrium Propagation, its baselines.

Populations s_1 … s_L (s_L = output O) receive the input x through an input projection into s_1
(the input-receiving population I) and feed forward s_k -> s_{k+1}. Two optional kinds of
projection close the network:

- the loop-back O -> I (``loop``): it carries the (nudged) output back to the first hidden
  population, the target generator of Fig. 2c (sigprop);
- feedback s_{k+1} -> s_k for every forward projection (``feedback``): its transpose
  (``"symmetric"``, EP with symmetric weights, Scellier & Bengio 2017) or a fixed random matrix
  (``"random"``, EP's feedback-alignment variant).

All of them follow Eq. 13 (``ctsp.continuous.eq13``: the current into a population sums every
projection into it). The network state is one flat tensor (B, N) with N = n_1 + … + n_L;
``populations`` gives each population's column slice. Weights are Glorot-uniform, biases zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctsp.continuous import FEEDBACK_MODES, LOOP_MODES, population_names
from ctsp.errors import ConfigError
from ctsp.nn import Linear, RateNeuron, Transposed


@dataclass(frozen=True)
class Edge:
    """A projection into population ``dst`` from population ``src`` (``-1`` = the input x).

    ``kind``: "input", "forward" (ff_k: k-1 -> k), "loop" (O -> I) or "feedback" (fb_k: k ->
    k-1). ``owns_bias``: the projection on the input path into ``dst`` (input and forward ones),
    whose learning rate the bias of ``dst`` shares (every population has one bias vector).
    """

    name: str
    src: int
    dst: int
    kind: str = "forward"

    @property
    def owns_bias(self) -> bool:
        return self.kind in ("input", "forward")


class LayeredNetwork(nn.Module):
    """Layered rate network: input -> h1 -> … -> out, with an optional loop-back out -> h1 and
    optional feedback projections.

    Args:
        sizes: [n_input, n_1, …, n_L]; at least one hidden population before the output.
        loop: "learned" (the loop-back learns by the run's rule), "fixed" (random, never
            updated) or "none" (``ctsp.continuous.LOOP_MODES``).
        rate: rate-function name (see ``ctsp.nn.RATE_FUNCTIONS``).
        tau: time constant r_j of every neuron (a per-neuron buffer; edit ``tau`` to vary it).
        feedback: "none", "symmetric" or "random" (``ctsp.continuous.FEEDBACK_MODES``): fb_k
            from population k to k-1 for every forward projection ff_k.
        init_gain: factor on the initial weights of the projections between populations
            (forward, loop-back, random feedback; tied feedback follows its forward weights).
            Glorot weights make the h_k <-> h_{k+1} loop of a symmetric network a gain of about
            2 (the largest singular value of an n x n Glorot matrix): its energy then settles
            in a saturated state that ignores the input, and EP does not learn (0.5 does).
    """

    def __init__(
        self,
        sizes: list[int] | tuple[int, ...],
        loop: str = "learned",
        rate: str = "hard_sigmoid",
        tau: float = 1.0,
        feedback: str = "none",
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 3 or min(sizes) < 1:
            raise ConfigError(
                f"network.sizes must list the input, at least one hidden and the output size, "
                f"all positive; got {sizes}"
            )
        LOOP_MODES.check(loop)
        FEEDBACK_MODES.check(feedback)
        self.sizes = tuple(sizes)
        pops = sizes[1:]
        bounds = torch.tensor([0, *pops]).cumsum(0).tolist()
        self.populations = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.population_names = population_names(sizes)
        self.n_state = bounds[-1]
        projections, edges = self._projections(sizes, LOOP_MODES[loop], FEEDBACK_MODES[feedback])
        self.projections = nn.ModuleDict(projections)
        self.edges = tuple(edges)
        with torch.no_grad():
            for e in self.edges:
                if e.src >= 0 and isinstance(projections[e.name], Linear):
                    projections[e.name].weight.mul_(init_gain)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n), requires_grad=False) for n in pops
        )
        self.register_buffer("tau", torch.full((self.n_state,), float(tau)))
        self.neuron = RateNeuron(rate)

    @staticmethod
    def _projections(sizes: list[int], loop, feedback) -> tuple[dict, list[Edge]]:
        """The projections by name and their edges, drawn in this order: input, ff1 … ff_{L-1},
        loop, fb1 … fb_{L-1} (a network without feedback draws the weights it drew before
        feedback existed)."""
        pops = sizes[1:]
        projections = {"input": Linear(sizes[0], pops[0])}
        edges = [Edge("input", -1, 0, "input")]
        for k in range(1, len(pops)):
            projections[f"ff{k}"] = Linear(pops[k - 1], pops[k])
            edges.append(Edge(f"ff{k}", k - 1, k))
        if loop.exists:
            projections["loop"] = Linear(pops[-1], pops[0], trainable=loop.trainable)
            edges.append(Edge("loop", len(pops) - 1, 0, "loop"))
        for k in range(1, len(pops)) if feedback.exists else ():
            ff = projections[f"ff{k}"]
            tied = feedback.tied
            projections[f"fb{k}"] = (
                Transposed(ff) if tied else Linear(ff.n_out, ff.n_in, trainable=False)
            )
            edges.append(Edge(f"fb{k}", k, k - 1, "feedback"))
        return projections, edges

    @property
    def output(self) -> slice:
        """Column slice of the output population O in the flat state."""
        return self.populations[-1]

    def zero_state(self, batch: int) -> Tensor:
        """The resting state s = 0, shaped (batch, N)."""
        return self.tau.new_zeros(batch, self.n_state)

    def input_current(self, x: Tensor) -> Tensor:
        """The constant input drive W_in x + b_1 of the input-receiving population, (B, n_1)."""
        return self.projections["input"](x.flatten(1)) + self.biases[0]

    def predict(self, state: Tensor) -> Tensor:
        """Class prediction: argmax of the output rates, (B,)."""
        return self.neuron.rho(state[:, self.output]).argmax(1)
