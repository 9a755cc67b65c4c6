"""Spikes and their surrogate gradients.

H is the Heaviside step (H(0) = 1). Its derivative is zero almost everywhere; the *arctan
surrogate* (:class:`ArctanSurrogate`) keeps H in the forward pass and uses the derivative of
g(x) = arctan(pi x) / pi + 1/2, g'(x) = 1 / (1 + (pi x)^2), in the backward pass. Without the
surrogate the spike carries no gradient at all (:func:`heaviside`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
