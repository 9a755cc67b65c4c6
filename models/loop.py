"""The continuous-time sigprop loop network (paper Sec. V, Fig. 2c).

Populations s_1 … s_L (s_L = output O) receive the input x through an input projection into s_1
(the input-receiving population I), feed forward s_k -> s_{k+1}, and close one loop: a loop-back
projection O -> I that carries the (nudged) output back to the first hidden population. That
loop-back is the target generator of Fig. 2c.

The network state is one flat tensor (B, N) with N = n_1 + … + n_L; ``populations`` gives each
population's column slice. Weights are Glorot-uniform, biases zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctsp.continuous import LOOP_MODES, population_names
from ctsp.errors import ConfigError
from ctsp.nn import Linear, RateNeuron


@dataclass(frozen=True)
class Edge:
    """A projection into population ``dst`` from population ``src`` (``-1`` = the input x).

    ``owns_bias``: the projection on the input path into ``dst``, whose learning rate the bias of
    ``dst`` shares (every population has one bias vector; the loop-back owns none).
    """

    name: str
    src: int
    dst: int
    owns_bias: bool = True


class LoopNetwork(nn.Module):
    """Layered rate network with one loop-back projection from the output to the first hidden layer.

    Args:
        sizes: [n_input, n_1, …, n_L]; at least one hidden population before the output.
        loop: "learned" (the loop-back learns by CHL), "fixed" (random, never updated) or "none".
        rate: rate-function name (see ``ctsp.nn.RATE_FUNCTIONS``).
        tau: time constant r_j of every neuron (a per-neuron buffer; edit ``tau`` to vary it).
    """

    def __init__(
        self,
        sizes: list[int] | tuple[int, ...],
        loop: str = "learned",
        rate: str = "hard_sigmoid",
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 3 or min(sizes) < 1:
            raise ConfigError(
                f"network.sizes must list the input, at least one hidden and the output size, "
                f"all positive; got {sizes}"
            )
        LOOP_MODES.check(loop)
        self.sizes = tuple(sizes)
        pops = sizes[1:]
        bounds = torch.tensor([0, *pops]).cumsum(0).tolist()
        self.populations = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.population_names = population_names(sizes)
        self.n_state = bounds[-1]

        projections = {"input": Linear(sizes[0], pops[0])}
        edges = [Edge("input", -1, 0)]
        for k in range(1, len(pops)):
            projections[f"ff{k}"] = Linear(pops[k - 1], pops[k])
            edges.append(Edge(f"ff{k}", k - 1, k))
        mode = LOOP_MODES[loop]
        if mode.exists:
            projections["loop"] = Linear(pops[-1], pops[0], trainable=mode.trainable)
            edges.append(Edge("loop", len(pops) - 1, 0, owns_bias=False))
        self.projections = nn.ModuleDict(projections)
        self.edges = tuple(edges)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n), requires_grad=False) for n in pops
        )
        self.register_buffer("tau", torch.full((self.n_state,), float(tau)))
        self.neuron = RateNeuron(rate)

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
