"""Projections: the synapses of a layer, a map of presynaptic activity to a postsynaptic current.

:class:`Linear` and :class:`Conv2d`. The same module carries input-path and target-path activity
("the forward path carries both"). By default weights are Glorot-uniform and outside autograd
(``requires_grad=False``: the continuous model updates them by CHL, Eq. 14); ``grad=True`` makes
them autograd parameters, ``bias`` adds a bias, ``init="fan_in"`` draws
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default). Initialisations: :data:`INITS`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..registry import Registry


def glorot_uniform_(weight: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """Glorot/Xavier uniform initialisation: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def _fan_in_uniform_(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


def _glorot(weight: Tensor, bias: Tensor | None, fan_in: int, fan_out: int) -> None:
    glorot_uniform_(weight, fan_in, fan_out)  # biases stay zero


def _fan_in(weight: Tensor, bias: Tensor | None, fan_in: int, fan_out: int) -> None:
    _fan_in_uniform_(weight, bias, fan_in)


# name -> init(weight, bias, fan_in, fan_out), in place
INITS = Registry(
    "initialisation",
    {
        "glorot": _glorot,  # U(-a, a), a = sqrt(6 / (fan_in + fan_out)); biases stay zero
        "fan_in": _fan_in,  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases (PyTorch's)
    },
)


def _init_projection(weight: Tensor, bias: Tensor | None, init: str, fan_in: int, fan_out: int):
    INITS[init](weight, bias, fan_in, fan_out)


class Linear(nn.Module):
    """Dense projection: current = rates @ W.T (+ b), W shaped (n_out, n_in) like nn.Linear.

    Defaults (the continuous model): no bias (biases belong to the postsynaptic population, see
    :class:`RateNeuron` users), weights outside autograd, Glorot-uniform. ``trainable`` says
    whether a plasticity rule may change the weights; ``grad=True`` makes weight and bias autograd
    parameters (discrete sigprop, trained by a per-layer optimizer).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        trainable: bool = True,
        bias: bool = False,
        grad: bool = False,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        self.n_in, self.n_out, self.trainable = n_in, n_out, trainable
        self.weight = nn.Parameter(torch.empty(n_out, n_in), requires_grad=grad)
        if bias:
            self.bias = nn.Parameter(torch.zeros(n_out), requires_grad=grad)
        else:
            self.register_parameter("bias", None)
        _init_projection(self.weight, self.bias, init, n_in, n_out)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, n_in) to a postsynaptic current (B, n_out)."""
        if self.bias is None:
            return rates @ self.weight.T
        return nn.functional.linear(rates, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.n_in} -> {self.n_out}, trainable={self.trainable}, bias={self.bias is not None}"
        )


class Conv2d(nn.Module):
    """Convolutional projection: current = conv2d(rates, W) (+ b), W shaped (c_out, c_in, k, k).

    Same options as :class:`Linear`. :meth:`once` applies the kernel at a single position, for
    sparse targets (paper Sec. III-E: no weight sharing when convolving the target).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        padding: int = 0,
        trainable: bool = True,
        bias: bool = False,
        grad: bool = False,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kernel = c_in, c_out, kernel
        self.padding, self.trainable = padding, trainable
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel), requires_grad=grad)
        if bias:
            self.bias = nn.Parameter(torch.zeros(c_out), requires_grad=grad)
        else:
            self.register_parameter("bias", None)
        receptive = kernel * kernel
        _init_projection(self.weight, self.bias, init, c_in * receptive, c_out * receptive)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, c_in, H, W) to a current (B, c_out, H', W')."""
        return nn.functional.conv2d(rates, self.weight, self.bias, padding=self.padding)

    def once(self, rates: Tensor) -> Tensor:
        """The kernel applied at one position: (R, c_in, a, b) with a, b <= k -> (R, c_out, 1, 1).

        The input is zero-filled (centred) to (c_in, k, k) and met by the whole kernel once, with
        no padding: a sparse target of the weights' shape (Sec. III-E), or a 1x1 target map that
        meets the kernel's centre.
        """
        a, b = rates.shape[-2:]
        k = self.kernel
        if a > k or b > k:
            raise ValueError(f"a map of {a}x{b} is larger than the {k}x{k} kernel")
        top, left = (k - a) // 2, (k - b) // 2
        filled = nn.functional.pad(rates, (left, k - b - left, top, k - a - top))
        out = filled.flatten(1) @ self.weight.flatten(1).T
        if self.bias is not None:
            out = out + self.bias
        return out[:, :, None, None]


class Transposed(nn.Module):
    """The transpose of another :class:`Linear`'s weights: current = rates @ W_src, with
    ``weight`` = W_src^T shaped (n_in_src, n_out_src), a view (tied, symmetric feedback: the
    layered networks of Equilibrium Propagation). It owns no parameter and never learns by
    itself (``trainable`` False): it changes with its source. The source is kept out of this
    module's children, so that a network's state dict holds those weights once.
    """

    trainable = False
    bias = None

    def __init__(self, source: Linear) -> None:
        super().__init__()
        self.__dict__["source"] = source  # not a submodule (see the class docstring)
        self.n_in, self.n_out = source.n_out, source.n_in

    @property
    def weight(self) -> Tensor:
        return self.source.weight.T

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, n_out_src) to a current (B, n_in_src)."""
        return rates @ self.source.weight

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, the transpose of a {self.source.extra_repr()}"
