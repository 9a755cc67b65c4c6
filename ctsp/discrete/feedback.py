"""Feedback alignment (Lillicrap et al. 2016): a projection whose backward pass sends the error
through a fixed random matrix B instead of W^T; one autograd function for Linear and Conv2d."""

from __future__ import annotations

import math
import types

import torch
from torch import Tensor
from torch.nn import functional as F

from ..nn import Conv2d, Linear

FIXED_SEED_OFFSET = 7919  # the fixed random matrices come from torch.Generator(seed + this)


class FeedbackAlignmentFunction(torch.autograd.Function):
    """A projection whose backward pass sends the error through a fixed matrix B.

    Forward: y = x W^T + b (``padding`` None, a dense layer) or y = conv2d(x, W, padding) + b.
    Backward: dL/dW and dL/db as usual; dL/dx uses B (shaped like W) in place of W, i.e.
    g B for a dense layer and the transposed convolution of g with B for a conv layer. Only
    the gradients that autograd asks for are computed (no dL/dx for the network's input).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, padding):
        ctx.save_for_backward(x, feedback)
        ctx.padding, ctx.has_bias = padding, bias is not None
        if padding is None:
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = (t.to(grad.dtype) for t in ctx.saved_tensors)  # autocast: low type
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.padding is None:
            g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
            gx = grad @ feedback if need_x else None
            gw = g2.T @ x2 if need_w else None
            gb = g2.sum(0) if need_b else None
        else:
            p = ctx.padding
            bias_sizes = [feedback.shape[0]] if ctx.has_bias else None
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, feedback, bias_sizes, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                [need_x, need_w, need_b and ctx.has_bias],
            )  # fmt: skip
        return gx, gw, gb, None, None


def _fa_forward(self, rates: Tensor) -> Tensor:
    padding = self.padding if isinstance(self, Conv2d) else None
    return FeedbackAlignmentFunction.apply(rates, self.weight, self.bias, self.feedback, padding)


def feedback_alignment(projection: Linear | Conv2d, gen: torch.Generator) -> Tensor:
    """Give ``projection`` a fixed random feedback matrix B and route its backward pass
    through it (:class:`FeedbackAlignmentFunction`); its forward output is unchanged.

    B is shaped like the weights and drawn like them, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
    ``gen`` on the CPU; it is a non-persistent buffer ``feedback`` of the projection (it
    follows ``.to(device)``; the learners keep it in their own state). Returns B.
    """
    w = projection.weight
    bound = 1.0 / math.sqrt(w[0].numel())
    b = (torch.rand(w.shape, generator=gen) * 2 - 1) * bound
    projection.register_buffer("feedback", b.to(w.device, w.dtype), persistent=False)
    projection.forward = types.MethodType(_fa_forward, projection)
    return projection.feedback


def fixed_generator(config) -> torch.Generator:
    """The generator of a learner's fixed random matrices (seeded by ``config.seed``)."""
    return torch.Generator().manual_seed(config.seed + FIXED_SEED_OFFSET)
