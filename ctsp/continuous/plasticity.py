r"""Contrastive Hebbian weight and bias updates (the paper's Eq. 14).

For a projection from a presynaptic layer (rates ``rho(s_i)``) to a postsynaptic layer
(rates ``rho(s_j)``), the contrastive Hebbian / equilibrium-propagation update is

.. math::

    \Delta W_{ji} \propto \frac{1}{\beta} \sum_b \rho(s^0_{b,i})
        \left(\rho(s^\beta_{b,j}) - \rho(s^0_{b,j})\right),

i.e. the presynaptic *free-phase* rate times the difference of the postsynaptic rate
between the nudged phase (nudging strength ``beta``) and the free phase, summed over the
batch index ``b``. In matrix form, with ``W`` stored like a ``torch.nn.Linear`` weight
(shape ``(n_post, n_pre)``),

``W += scale * (post_nudged - post_free).T @ pre``,   ``scale = lr / (beta * B)``,

and the bias update is ``b += scale * (post_nudged - post_free).sum(0)``.

Hard-sigmoid neurons that stay saturated in both phases have *exactly* zero rate
difference; the ``"numba"`` backend skips those ``(b, j)`` pairs entirely, so its cost
scales with the number of nonzero differences, while a dense GEMM (``"torch"``) costs the
same whatever the sparsity. ``"auto"`` picks between them by a fixed density threshold (see
:func:`chl_update`).

Public API: :func:`chl_update`, :func:`chl_bias_update`, :class:`CHL` (the rule of one
projection), :data:`CHL_BACKENDS` (``train.chl_backend``); for ``"auto"``: :func:`auto_backend`
(the backend it picks) and its thresholds :data:`AUTO_DENSITY` and :data:`AUTO_MIN_PRE`;
:func:`chl_kernel` (the numba kernel).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch
from torch import Tensor

from ..registry import Registry

__all__ = [
    "AUTO_DENSITY",
    "AUTO_DENSITY_LARGE",
    "AUTO_LARGE",
    "AUTO_MIN_PRE",
    "BACKENDS",
    "CHL",
    "CHL_BACKENDS",
    "auto_backend",
    "chl_bias_update",
    "chl_kernel",
    "chl_update",
    "follow_torch_threads",
]

# Numba kernel dtypes (torch dtype -> numpy scalar type used for ``scale``).
_NUMBA_DTYPES: dict[torch.dtype, type] = {torch.float32: np.float32, torch.float64: np.float64}

# "auto": numba below this density of nonzero rate differences (and torch from it on). The
# crossover where the numba kernel's time reaches torch's, measured by benchmarks/chl.py on the
# large projections of fmnist-2x1500 (1500x784 and 1500x1500, batch 20 and 100): 0.43-0.62 on
# this project's 2-core machine (docs/performance.md). A fixed rule, not a per-process timing,
# so that two seeded runs give the same weights.
AUTO_DENSITY = 0.45
# ... and below this density for projections of at least AUTO_LARGE weights (beyond the cache),
# where torch's batch-20 outer-product GEMM is slow: for 1500x1500 the crossover measured
# 0.65-0.74 (docs/performance.md), and at the bundled steady settings numba took 1.4 ms against
# torch's 3.9 ms at density 0.52 (issue 16).
AUTO_DENSITY_LARGE = 0.7
AUTO_LARGE = 2_000_000
# ... and torch for projections from fewer presynaptic neurons (the kernel's per-row work does
# not pay: the loop-back 1500x10 measured 1.3-2.1x slower than torch at every density).
AUTO_MIN_PRE = 64


# --------------------------------------------------------------------------------------
# numba kernel (compiled lazily on first call; ``cache=True`` keeps it across processes)
# --------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def chl_kernel(weight, pre, diff, scale):  # pragma: no cover - runs compiled
    """In place ``weight += scale * diff.T @ pre``, skipping ``diff[b, j] == 0``.

    ``weight`` (n_post, n_pre), ``pre`` (B, n_pre), ``diff`` (B, n_post), all C-contiguous
    and of one float dtype; ``scale`` a scalar of that dtype. Output rows ``j`` are
    distributed over threads, so no two threads write the same row. For each row the
    nonzero differences are first compacted (branch-free, so random zero patterns cost
    no branch mispredictions); a row with none is not touched at all. The compacted
    presynaptic rows are then applied eight at a time, the last eight padded with zero
    coefficients, so the weight row is loaded and stored once per eight nonzero differences
    (at the bundled settings, batch 20 and 40-50 % nonzero: once or twice per row).
    """
    n_post, n_pre = weight.shape
    batch = pre.shape[0]
    for j in numba.prange(n_post):
        idx = np.zeros(batch + 7, dtype=np.intp)
        coef = np.zeros(batch + 7, dtype=diff.dtype)
        m = 0
        for b in range(batch):
            d = diff[b, j]
            idx[m] = b
            coef[m] = scale * d
            m += d != 0
        if m == 0:
            continue
        for t in range(m, m + 7):  # the padding: row 0 of pre, coefficient 0 (adds nothing)
            idx[t] = 0
            coef[t] = 0
        row = weight[j]
        for k in range(0, m, 8):
            c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
            c4, c5, c6, c7 = coef[k + 4], coef[k + 5], coef[k + 6], coef[k + 7]
            p0, p1, p2, p3 = pre[idx[k]], pre[idx[k + 1]], pre[idx[k + 2]], pre[idx[k + 3]]
            p4, p5, p6, p7 = pre[idx[k + 4]], pre[idx[k + 5]], pre[idx[k + 6]], pre[idx[k + 7]]
            for i in range(n_pre):
                row[i] += (
                    c0 * p0[i]
                    + c1 * p1[i]
                    + c2 * p2[i]
                    + c3 * p3[i]
                    + c4 * p4[i]
                    + c5 * p5[i]
                    + c6 * p6[i]
                    + c7 * p7[i]
                )


def follow_torch_threads() -> int:
    """Give numba's pool torch's thread count (at most ``NUMBA_NUM_THREADS``); returns it.

    numba's OpenMP layer shares the OpenMP runtime torch loaded, and starting it sets OpenMP's
    thread count, which torch reads, to numba's default (one thread per core): torch's count
    is put back after it. With the counts equal, numba's kernel threads are torch's own."""
    threads = torch.get_num_threads()
    want = min(threads, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != want:  # (the first call starts numba's threading layer)
        numba.set_num_threads(want)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return want


def _numba_apply(weight: torch.Tensor, pre: torch.Tensor, diff: torch.Tensor, scale: float):
    """Run the numba kernel on the tensors' numpy views; the update lands in ``weight``.

    Contiguous CPU float32/float64 tensors are used zero-copy; a non-contiguous ``weight``
    is updated through a contiguous copy that is copied back. numba runs on torch's thread
    count (:func:`follow_torch_threads`), so a kernel never changes the count torch uses.
    """
    follow_torch_threads()
    work = weight if weight.is_contiguous() else weight.contiguous()
    w_np = work.detach().numpy()
    pre_np = pre.detach().contiguous().numpy()
    diff_np = diff.detach().contiguous().numpy()
    chl_kernel(w_np, pre_np, diff_np, _NUMBA_DTYPES[weight.dtype](scale))
    if work is not weight:
        with torch.no_grad():
            weight.copy_(work)


def _torch_apply(weight: torch.Tensor, pre: torch.Tensor, diff: torch.Tensor, scale: float):
    """``weight += scale * diff.T @ pre`` as one in-place ``addmm_`` (any device)."""
    with torch.no_grad():
        weight.addmm_(diff.T, pre, alpha=scale)


# --------------------------------------------------------------------------------------
# "auto": a fixed rule, so that a run's numbers do not depend on a timing
# --------------------------------------------------------------------------------------


def auto_backend(weight: torch.Tensor, diff: torch.Tensor) -> str:
    """The backend ``"auto"`` uses for this weight and rate difference (no validation): numba
    on CPU for float32/float64 when the projection has at least :data:`AUTO_MIN_PRE`
    presynaptic neurons and fewer than :data:`AUTO_DENSITY` of the differences are nonzero
    (:data:`AUTO_DENSITY_LARGE` for projections of at least :data:`AUTO_LARGE` weights), else
    torch. The choice depends only on the tensors, so a seeded run repeats exactly."""
    if weight.device.type != "cpu" or weight.dtype not in _NUMBA_DTYPES or diff.numel() == 0:
        return "torch"
    if weight.shape[1] < AUTO_MIN_PRE:
        return "torch"
    density = torch.count_nonzero(diff).item() / diff.numel()
    large = weight.numel() >= AUTO_LARGE
    return "numba" if density < (AUTO_DENSITY_LARGE if large else AUTO_DENSITY) else "torch"


def _numba_check(weight: torch.Tensor) -> None:
    if weight.device.type != "cpu":
        raise ValueError(
            f"backend 'numba' runs on CPU only, but the tensors are on {weight.device}; "
            "use backend='torch' or 'auto'"
        )
    if weight.dtype not in _NUMBA_DTYPES:
        raise ValueError(
            f"backend 'numba' supports float32 and float64, got {weight.dtype}; "
            "use backend='torch' or 'auto'"
        )


def _auto_apply(weight: torch.Tensor, pre: torch.Tensor, diff: torch.Tensor, scale: float):
    CHL_BACKENDS[auto_backend(weight, diff)].apply(weight, pre, diff, scale)


@dataclass(frozen=True)
class ChlBackend:
    """A ``train.chl_backend`` choice: ``apply(weight, pre, diff, scale)`` adds
    ``scale * diff.T @ pre`` to ``weight`` in place; ``check(weight)`` refuses (ValueError) a
    weight it cannot update, before anything is computed."""

    apply: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], None]
    check: Callable[[torch.Tensor], None] = lambda weight: None


CHL_BACKENDS: Registry[ChlBackend] = Registry(
    "CHL backend",
    {
        # numba below a fixed density of nonzero rate differences, else torch
        "auto": ChlBackend(_auto_apply),
        # a parallel CPU kernel that skips zero rate differences
        "numba": ChlBackend(_numba_apply, _numba_check),
        "torch": ChlBackend(_torch_apply),  # one addmm_ (any device)
    },
)
BACKENDS: tuple[str, ...] = CHL_BACKENDS.names()


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _check_tensor(name: str, x: object, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    return x


def _check_like(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}")
    if x.device != ref.device:
        raise ValueError(f"{name} is on device {x.device} but {ref_name} is on {ref.device}")


def _check_post(
    ref_name: str, ref: torch.Tensor, n_post: int, post_free: object, post_nudged: object
) -> tuple[torch.Tensor, torch.Tensor]:
    free = _check_tensor("post_free", post_free, 2)
    nudged = _check_tensor("post_nudged", post_nudged, 2)
    for name, x in (("post_free", free), ("post_nudged", nudged)):
        _check_like(name, x, ref_name, ref)
        if x.shape[1] != n_post:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {ref_name} has shape "
                f"{tuple(ref.shape)}: expected (B, {n_post})"
            )
    if nudged.shape != free.shape:
        raise ValueError(
            f"post_nudged has shape {tuple(nudged.shape)} but post_free has shape "
            f"{tuple(free.shape)}"
        )
    return free, nudged


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"scale must be a real number, got {type(scale).__name__}")
    return float(scale)


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def chl_update(
    weight: torch.Tensor,
    pre: torch.Tensor,
    post_free: torch.Tensor,
    post_nudged: torch.Tensor,
    scale: float,
    backend: str = "auto",
) -> None:
    """Contrastive Hebbian update of one projection, in place (Eq. 14, batch-summed).

    ``weight += scale * (post_nudged - post_free).T @ pre``

    Args:
        weight: ``(n_post, n_pre)`` weight, laid out like ``torch.nn.Linear.weight``.
            Updated in place (same storage); may require grad (the update runs without
            autograd).
        pre: ``(B, n_pre)`` free-phase presynaptic rates ``rho(s_i^0)``.
        post_free: ``(B, n_post)`` free-phase postsynaptic rates ``rho(s_j^0)``.
        post_nudged: ``(B, n_post)`` nudged-phase postsynaptic rates ``rho(s_j^beta)``.
        scale: step size; callers pass ``lr / (beta * B)``.
        backend: one of :data:`BACKENDS`.

            * ``"torch"``: one ``addmm_`` (any device, any float dtype).
            * ``"numba"``: a parallel CPU kernel on the tensors' numpy views (zero-copy
              for contiguous float32/float64 tensors) that skips every ``(b, j)`` with an
              exactly zero rate difference and splits output rows over threads. CPU only.
            * ``"auto"``: ``"torch"`` on CUDA or for dtypes other than float32/float64.
              On CPU it uses ``"numba"`` iff the projection has at least
              :data:`AUTO_MIN_PRE` presynaptic neurons and the density of nonzero entries of
              ``post_nudged - post_free`` is below :data:`AUTO_DENSITY` (the crossover
              measured by benchmarks/chl.py). Rationale: the dense GEMM's cost does not depend
              on sparsity while the kernel's grows with the number of nonzero differences. The
              rule depends only on the tensors, never on a timing, so runs are reproducible.

    The first numba call in a fresh environment compiles the kernel (about 2 s per dtype);
    ``cache=True`` stores it next to this module, so later processes load it instead.
    Importing this module compiles nothing.

    Raises:
        ValueError: unknown ``backend``; a non-tensor, wrong-rank, mismatched-shape,
            mismatched-dtype or mismatched-device argument (the message names it);
            ``backend="numba"`` with a non-CPU tensor or a dtype other than
            float32/float64.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends are {BACKENDS}")
    weight = _check_tensor("weight", weight, 2)
    pre = _check_tensor("pre", pre, 2)
    if not weight.is_floating_point():
        raise ValueError(f"weight must have a floating dtype, got {weight.dtype}")
    n_post, n_pre = weight.shape
    _check_like("pre", pre, "weight", weight)
    if pre.shape[1] != n_pre:
        raise ValueError(
            f"pre has shape {tuple(pre.shape)} but weight has shape {tuple(weight.shape)}: "
            f"expected (B, {n_pre})"
        )
    free, nudged = _check_post("weight", weight, n_post, post_free, post_nudged)
    if free.shape[0] != pre.shape[0]:
        raise ValueError(
            f"post_free has batch size {free.shape[0]} (shape {tuple(free.shape)}) but pre "
            f"has batch size {pre.shape[0]} (shape {tuple(pre.shape)})"
        )
    scale = _check_scale(scale)

    chosen = CHL_BACKENDS[backend]
    chosen.check(weight)
    if weight.numel() == 0 or pre.shape[0] == 0:
        return
    with torch.no_grad():
        diff = nudged - free
    chosen.apply(weight, pre, diff, scale)


def chl_bias_update(
    bias: torch.Tensor,
    post_free: torch.Tensor,
    post_nudged: torch.Tensor,
    scale: float,
) -> None:
    """Contrastive Hebbian bias update, in place.

    ``bias += scale * (post_nudged - post_free).sum(0)``

    Args:
        bias: ``(n_post,)`` bias, updated in place (same storage).
        post_free: ``(B, n_post)`` free-phase rates ``rho(s_j^0)``.
        post_nudged: ``(B, n_post)`` nudged-phase rates ``rho(s_j^beta)``.
        scale: step size; callers pass ``lr / (beta * B)``.

    Raises:
        ValueError: a non-tensor, wrong-rank, mismatched-shape, mismatched-dtype or
            mismatched-device argument (the message names it).
    """
    bias = _check_tensor("bias", bias, 1)
    if not bias.is_floating_point():
        raise ValueError(f"bias must have a floating dtype, got {bias.dtype}")
    free, nudged = _check_post("bias", bias, bias.shape[0], post_free, post_nudged)
    scale = _check_scale(scale)
    with torch.no_grad():
        bias.add_((nudged - free).sum(0), alpha=scale)


class CHL:
    """Contrastive Hebbian rule of Eq. 14 for one projection and its postsynaptic biases.

    dW = lr / (beta * B) * (rho(s_post^beta) - rho(s_post^0)).T @ rho(s_pre^0), and likewise for
    the biases with a presynaptic rate of 1. ``beta`` is the signed nudging strength that produced
    ``post_nudged`` (for symmetric nudging, 2 * beta and the -beta rates as ``post_free``).
    """

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def apply(
        self,
        weight: Tensor,
        bias: Tensor | None,
        pre: Tensor,
        post_free: Tensor,
        post_nudged: Tensor,
        lr: float,
        beta: float,
        batch: int | None = None,
        reduce=None,
    ) -> None:
        """Add the update in place. ``batch``: the minibatch's size B (default: the rows of
        ``pre``); ``reduce``: in a data-parallel replica (its rows a shard of the minibatch),
        the sum of a tensor over the replicas, applied to this shard's sums before they are
        added, so that every replica adds the whole minibatch's update."""
        scale = lr / (beta * (batch or pre.shape[0]))
        if reduce is None:
            chl_update(weight.data, pre, post_free, post_nudged, scale, backend=self.backend)
            if bias is not None:
                chl_bias_update(bias.data, post_free, post_nudged, scale)
            return
        parts = [torch.zeros_like(weight.data)]
        chl_update(parts[0], pre, post_free, post_nudged, scale, backend=self.backend)
        if bias is not None:
            parts.append(torch.zeros_like(bias.data))
            chl_bias_update(parts[1], post_free, post_nudged, scale)
        total = reduce(torch.cat([p.reshape(-1) for p in parts]))
        weight.data += total[: weight.numel()].view_as(weight)
        if bias is not None:
            bias.data += total[weight.numel() :].view_as(bias)
