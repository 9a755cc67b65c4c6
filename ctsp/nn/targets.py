"""Target generators (paper Sec. III-D): the learning signal c -> the first targets.

In supervised learning the context is the label: c_k is the one-hot vector of class k. A
generator builds the targets of *every* class k = 0 … m-1 for every minibatch, so that each
layer can compare its outputs with all class targets (L_pred, Eq. 9; early exits, Eq. 8) and
inference needs no label.

=====================  =====================================================  ==============
generator              first target                                           rows
=====================  =====================================================  ==============
``target-only``        Eq. 1:  t_k = f(S c_k + d)                             (m, *shape)
``target-input``       Eq. 10: t_bk = base_b * f(S1 c_k + d1) + f(S2 c_k+d2)  (B, m, *shape)
``target-loop``        Eq. 11: t_bk = f(S y_b + S c_k + d)                    (B, m, *shape)
``target-loop-error``  Eq. 12: t_bk = f(S (z_b - eta dL_k/dz_b) + d)          (B, m, *shape)
=====================  =====================================================  ==============

``base`` is h_1 (or the input x) of sample b: a per-sample scale and shift. For the loops, z_b is
the classification layer's output for sample b from an inference pass (Fig. 2c: the output is
fed back as context), y_b = softmax(z_b) its prediction, and L_k = CE(z_b, k), so
dL_k/dz_b = softmax(z_b) - c_k (the output error for class k).

``shape`` is one target's shape, chosen by the network: like h_1 (``into = "hidden"``, as the
equations are written), like the input x (``"input"``: layer 1 takes it), or like layer 1's
weights (``"sparse"``, Sec. III-E). ``f`` is the layers' leaky ReLU when the target stands for
h_1 and the identity when it stands for an input. S and d are trained by layer 1's loss, unless
``fixed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry
from .projections import Conv2d, Linear


class TargetGenerator(nn.Module):
    """Base class: ``forward(base, feedback)`` -> the first targets (see the module docstring).

    Args:
        classes: m, the number of classes.
        shape: the shape of one target (without the row dimensions).
        slope: leaky-ReLU slope of f; ``None`` for the identity.
        fixed: keep the random weights (no gradient).
    """

    per_sample: ClassVar[bool] = False  # targets (B, m, *shape) rather than (m, *shape)
    needs_feedback: ClassVar[bool] = False  # takes the output of an inference pass

    def __init__(
        self, classes: int, shape: tuple[int, ...], *, slope: float | None, fixed: bool = False
    ) -> None:
        super().__init__()
        self.classes, self.shape, self.slope, self.fixed = classes, tuple(shape), slope, fixed
        self.features = math.prod(self.shape)

    def _projection(self) -> Linear:
        """A projection S, d from the m-dimensional context to one target."""
        return Linear(self.classes, self.features, bias=True, grad=not self.fixed, init="fan_in")

    def f(self, x: Tensor) -> Tensor:
        return x if self.slope is None else nn.functional.leaky_relu(x, self.slope)

    def context(self) -> Tensor:
        """c: the one-hot vectors of all classes, (m, m)."""
        p = next(self.parameters())
        return torch.eye(self.classes, dtype=p.dtype, device=p.device)

    def _rows(self, x: Tensor) -> Tensor:
        """(..., features) -> (..., *shape)."""
        return x.view(*x.shape[:-1], *self.shape)

    def forward(self, base: Tensor | None = None, feedback: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class TargetOnly(TargetGenerator):
    """Eq. 1: one target per class, t_k = f(S c_k + d) -> (m, *shape)."""

    def __init__(self, classes, shape, *, slope, fixed=False) -> None:
        super().__init__(classes, shape, slope=slope, fixed=fixed)
        self.project = self._projection()

    def forward(self, base=None, feedback=None) -> Tensor:
        return self._rows(self.f(self.project(self.context())))


class TargetInput(TargetGenerator):
    """Eq. 10: t[b, k] = base_b * f(S1 c_k + d1) + f(S2 c_k + d2) -> (B, m, *shape).

    ``base`` (B, *shape) is h_1 (or x): the label selects a scale and a shift of the sample's
    own activity, so every sample has its own version of the m targets.
    """

    per_sample = True

    def __init__(self, classes, shape, *, slope, fixed=False) -> None:
        super().__init__(classes, shape, slope=slope, fixed=fixed)
        self.scale, self.shift = self._projection(), self._projection()

    def forward(self, base=None, feedback=None) -> Tensor:
        c = self.context()
        scale = self._rows(self.f(self.scale(c)))  # (m, *shape)
        shift = self._rows(self.f(self.shift(c)))
        return base.unsqueeze(1) * scale + shift


class TargetLoop(TargetGenerator):
    """Eq. 11: t[b, k] = f(S y_b + S c_k + d) -> (B, m, *shape), y_b = softmax(z_b).

    ``feedback`` z (B, m): the classification layer's output of an inference pass.
    """

    per_sample = True
    needs_feedback = True

    def __init__(self, classes, shape, *, slope, fixed=False) -> None:
        super().__init__(classes, shape, slope=slope, fixed=fixed)
        self.project = self._projection()

    def loop_context(self, z: Tensor) -> Tensor:
        """The context of sample b and class k, (B, m, m): y_b + c_k."""
        return torch.softmax(z, 1).unsqueeze(1) + self.context()

    def forward(self, base=None, feedback=None) -> Tensor:
        return self._rows(self.f(self.project(self.loop_context(feedback))))


class TargetLoopError(TargetLoop):
    """Eq. 12: t[b, k] = f(S (z_b - eta dL_k/dz_b) + d), dL_k/dz_b = softmax(z_b) - c_k."""

    def __init__(self, classes, shape, *, slope, fixed=False, eta: float = 1.0) -> None:
        super().__init__(classes, shape, slope=slope, fixed=fixed)
        self.eta = eta

    def loop_context(self, z: Tensor) -> Tensor:
        error = torch.softmax(z, 1).unsqueeze(1) - self.context()  # (B, m, m)
        return z.unsqueeze(1) - self.eta * error


GENERATORS: Registry[type[TargetGenerator]] = Registry(
    "target generator",
    {
        "target-only": TargetOnly,
        "target-input": TargetInput,
        "target-loop": TargetLoop,
        "target-loop-error": TargetLoopError,
    },
)


def _sparse_shape(projection, image_shape, first_output, features: int) -> tuple[int, ...]:
    """Sec. III-E: a target shaped like layer 1's weights, (c_in, k, k) for a convolution, or
    ``features`` (default n_in / 4) of a dense layer's n_in inputs."""
    if isinstance(projection, Conv2d):
        return (projection.c_in, projection.kernel, projection.kernel)
    n = features or max(1, projection.n_in // 4)
    if n >= projection.n_in:
        raise ConfigError(
            f"signal.sparse_features = {n} must be smaller than the first layer's input "
            f"({projection.n_in} features)"
        )
    return (n,)


@dataclass(frozen=True)
class TargetsInto:
    """A ``signal.into`` choice: where the first target enters the network.

    ``after_first``: the first target is shaped like h_1 and made after layer 1 (Eq. 1; the
    generator uses the activation's slope); ``like_activity``: it is shaped like an activity
    (h_1 or x), as a generator that scales and shifts activity ("target-input") needs;
    ``shape(projection, image_shape, first_output, sparse_features)``: one first target's
    shape, from layer 1's projection, the image shape and layer 1's output shape.
    """

    after_first: bool
    like_activity: bool
    shape: Callable[..., tuple[int, ...]]


TARGETS_INTO: Registry[TargetsInto] = Registry(
    "target entry point",
    {
        # shaped like h_1 (as in Eq. 1)
        "hidden": TargetsInto(True, True, lambda proj, image, out, n: tuple(out)),
        # shaped like x and taken by layer 1
        "input": TargetsInto(False, True, lambda proj, image, out, n: tuple(image)),
        # shaped like layer 1's weights (Sec. III-E)
        "sparse": TargetsInto(False, False, _sparse_shape),
    },
)


def make_generator(
    name: str,
    classes: int,
    shape: tuple[int, ...],
    *,
    slope: float | None,
    fixed: bool = False,
    eta: float = 1.0,
) -> TargetGenerator:
    """A target generator by name (see :data:`GENERATORS`)."""
    cls = GENERATORS[name]
    if issubclass(cls, TargetLoopError):
        return cls(classes, shape, slope=slope, fixed=fixed, eta=eta)
    return cls(classes, shape, slope=slope, fixed=fixed)
