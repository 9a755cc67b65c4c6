"""The discrete sigprop layer (Eq. 2-3): a projection, a static neuron and max-pooling on the
pair [h, t]."""

from __future__ import annotations

from torch import Tensor, nn

from .projections import Conv2d, Linear
from .static import StaticNeuron


def pooled_size(n: int, pool: int, stride: int) -> int:
    """Side of a map of side n after max-pooling (pool, stride); maps smaller than the window
    are left as they are."""
    return n if pool == 0 or n < pool else (n - pool) // stride + 1


def max_pool(x: Tensor, pool: int, stride: int) -> Tensor:
    """Max-pooling (window ``pool``, ``stride``) of maps (N, C, H, W); maps smaller than the
    window, flat features and ``pool = 0`` are left as they are (see :func:`pooled_size`)."""
    if pool == 0 or x.dim() < 4 or min(x.shape[-2:]) < pool:
        return x
    return nn.functional.max_pool2d(x, pool, stride)


class SignalLayer(nn.Module):
    """One discrete sigprop layer (Eq. 2-3): [h_i, t_i] = pool(f(P [h_{i-1}, t_{i-1}])).

    The projection ``P`` (:class:`Linear` or :class:`Conv2d`) maps the input path and the
    target path with the same weights; ``f`` is a :class:`StaticNeuron` (batch statistics from
    the input path); ``pool`` an optional max-pool (window ``pool``, stride ``pool_stride``) on
    both paths, skipped for maps smaller than the window. ``flatten``: maps are flattened before
    a Linear projection.

    ``h`` (B, ...) and ``t`` (R, ...) (R target rows: m class targets, or B*m per-sample ones).
    Targets smaller than the input (sparse targets, Sec. III-E):

    - Conv2d: a target map smaller than h's map meets the kernel once, with no weight sharing
      (:meth:`Conv2d.once`): (R, c_in, a, b) -> (R, c_out, 1, 1), a, b <= k;
    - Linear: a target with fewer features than the input is zero-filled to the input size; a
      smaller map is zero-filled (at the top left) to h's map size before flattening.
    """

    def __init__(
        self,
        projection: Linear | Conv2d,
        neuron: StaticNeuron,
        *,
        pool: int = 0,
        pool_stride: int = 2,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        self.projection, self.neuron = projection, neuron
        self.pool, self.pool_stride, self.flatten = pool, pool_stride, flatten

    def forward(self, h: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self.flatten and h.dim() > 2:
            if t is not None and t.dim() > 2:
                c, a, b = h.shape[1:]
                t = nn.functional.pad(t, (0, b - t.shape[-1], 0, a - t.shape[-2])).flatten(1)
            h = h.flatten(1)
        current = self.projection(h)
        target_current = None if t is None else self.project_target(h, t)
        h, t = self.neuron(current, target_current)
        if self.pool:
            h = self._pool(h)
            t = None if t is None else self._pool(t)
        return h, t

    def project_target(self, h: Tensor, t: Tensor) -> Tensor:
        """The projection of the target path (sparse targets as the class docstring says)."""
        p = self.projection
        if isinstance(p, Conv2d):
            return p(t) if t.shape[-2:] == h.shape[-2:] else p.once(t)
        if t.shape[1] < p.n_in:
            t = nn.functional.pad(t, (0, p.n_in - t.shape[1]))
        return p(t)

    def _pool(self, x: Tensor) -> Tensor:
        return max_pool(x, self.pool, self.pool_stride)
