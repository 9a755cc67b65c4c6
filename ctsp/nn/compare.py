"""The comparisons O of discrete sigprop (Eq. 6/7): every output against every class target.

:data:`COMPARISONS` is the registry (``model.compare``): ``dot`` (O_dot, Eq. 6) and ``l2``
(O_l2, Eq. 7, as a negative squared distance).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import Registry


def _flat_pair(h: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """h (B, D), targets (m, D) or (B, m, D), |h|^2 per sample (B,) and the scale of O.

    Maps (B, C, H, W) against targets of the same map size: D = C*H*W, scale 1/(H*W) (the
    channel dot product averaged over positions). Against 1x1 target maps (sparse targets): the
    target is broadcast over positions, i.e. h is averaged over positions, D = C, scale 1.
    """
    if h.dim() == 4 and t.shape[-2:] != h.shape[-2:]:
        if tuple(t.shape[-2:]) != (1, 1):
            raise ValueError(f"targets {tuple(t.shape)} do not match outputs {tuple(h.shape)}")
        hf = h.mean((2, 3))
        return hf, t.flatten(-3), h.square().sum(1).mean((1, 2)), 1.0
    positions = h.shape[2] * h.shape[3] if h.dim() == 4 else 1
    hf = h.flatten(1)
    return hf, t.flatten(-(h.dim() - 1)), hf.square().sum(1), 1.0 / positions


def _dot(hf: Tensor, tf: Tensor) -> Tensor:
    return hf @ tf.T if tf.dim() == 2 else torch.einsum("bd,bmd->bm", hf, tf)


def _in_float32(compare: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """``compare`` on float32 copies of its operands with autocast off (the gradients flow back
    into the operands' own dtypes)."""

    @functools.wraps(compare)
    def wrapped(h: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return compare(h.float(), t.float())

    return wrapped


@_in_float32
def o_dot(h: Tensor, t: Tensor) -> Tensor:
    """O_dot (Eq. 6): y[b, k] = h_b . t_k, the comparison of every output with every class target.

    Args:
        h: outputs (B, F) or maps (B, C, H, W).
        t: class targets shared by the batch, (m, ...) like one sample of h (or (m, C, 1, 1)
            against maps: a sparse target, broadcast over positions), or per-sample targets
            (B, m, ...) (target-input and target-loop generators: t[b, k] is sample b's target
            for class k).

    Returns: logits (B, m). For maps the channel dot product is averaged over positions.
    """
    hf, tf, _, scale = _flat_pair(h, t)
    return _dot(hf, tf) * scale


@_in_float32
def o_l2(h: Tensor, t: Tensor) -> Tensor:
    """O_l2 (Eq. 7) as a similarity: y[b, k] = -||h_b - t_k||^2 (maps: averaged over positions).

    Shapes as :func:`o_dot`.
    """
    hf, tf, hsq, scale = _flat_pair(h, t)
    return (2 * _dot(hf, tf) - hsq[:, None] - tf.square().sum(-1)) * scale


COMPARISONS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry(
    "comparison", {"dot": o_dot, "l2": o_l2}
)


def comparison(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Look up a comparison O by name ("dot", "l2")."""
    return COMPARISONS[name]
