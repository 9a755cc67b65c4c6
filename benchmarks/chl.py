"""Benchmark ``ctsp.continuous.chl_update``: numba vs torch backends (not a test).

Times the contrastive Hebbian update ``W += scale * (nudged - free).T @ pre`` at the
projection sizes of a 784-1500-1500-10 network with an output -> first-hidden loop:

    (n_post, n_pre) = (1500, 784), (1500, 1500), (10, 1500), (1500, 10)

at batch 20 and 100, for these rate cases:

* ``dense``: uniform random rates in (0, 1), independent in the two phases (every
  difference nonzero);
* ``saturated (synthetic)``: hard-sigmoid rates ``clip(s, 0, 1)`` of wide random normal
  pre-activations, nudged by a small random amount, so most differences are exactly zero.
  Synthetic: the zeros are scattered at random, not structured like a trained network's;
* ``recorded``: rates recorded from a trained network, given with ``--rates FILE.npz``.
  The file holds, for each projection ``k = 0, 1, ...``, arrays ``pre_k`` (N, n_pre),
  ``free_k`` (N, n_post) and ``nudged_k`` (N, n_post) (free-phase presynaptic rates and
  free/nudged postsynaptic rates); the first ``B`` rows are used for batch ``B``.

Each time is the median over ``--repeats`` calls after warm-up calls (the first call's
numba compile is excluded), the contenders of a cell called in turn, call by call, so that
they meet the same machine load. Torch and numba use all cores.

Usage: ``python benchmarks/chl.py [--rates FILE.npz] [--repeats N]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numba
import numpy as np
import torch

from ctsp.continuous import chl_update, plasticity
from ctsp.runs import machine_line

PROJECTIONS: tuple[tuple[str, int, int], ...] = (
    ("in->h1", 1500, 784),
    ("h1->h2", 1500, 1500),
    ("h2->out", 10, 1500),
    ("out->h1", 1500, 10),
)
BATCHES = (20, 100)
SCALE = 1e-4


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), Linux only."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _other_cores(start, stop, wall: float) -> float:
    """Cores used by other processes between two ``_cpu_seconds`` samples (nan if unknown)."""
    if start is None or stop is None or wall <= 0:
        return math.nan
    return max(0.0, ((stop[0] - start[0]) - (stop[1] - start[1])) / wall)


def _medians_ms(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of every function, the functions called in turn (one call each per
    round), so that all of them meet the same machine load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


DENSITIES = (0.0, 0.03125, 0.0625, 0.125, 0.25, 0.5, 0.75, 1.0)


def measure_crossover(n_post: int, n_pre: int, batch: int, repeats: int) -> float:
    """The density of nonzero differences where the numba kernel's time (median, measured at
    ``DENSITIES`` with the zeros scattered at random over (b, j), interpolated linearly) reaches
    the torch GEMM's: 0.0 if numba is slower even with no work, inf if it is faster dense."""
    gen = torch.Generator().manual_seed(12345)
    weight = torch.rand(n_post, n_pre, generator=gen)
    pre = torch.rand(batch, n_pre, generator=gen)
    diff = torch.rand(batch, n_post, generator=gen) - 0.5
    diff[diff == 0] = 0.25
    uniform = torch.rand(batch, n_post, generator=gen)
    zeros = torch.zeros_like(diff)
    fns = {"torch": lambda: weight.addmm_(diff.T, pre, alpha=SCALE)}
    for density in DENSITIES:
        sparse = torch.where(uniform < density, diff, zeros)
        fns[density] = lambda d=sparse: chl_update(weight, pre, zeros, d, SCALE, "numba")
    ms = _medians_ms(fns, repeats)
    t_torch, t_numba = ms["torch"], [ms[d] for d in DENSITIES]
    if t_numba[0] >= t_torch:
        return 0.0
    for k in range(1, len(DENSITIES)):
        if t_numba[k] > t_torch:
            lo, hi = t_numba[k - 1], t_numba[k]
            frac = (t_torch - lo) / (hi - lo) if hi > lo else 0.0
            return DENSITIES[k - 1] + frac * (DENSITIES[k] - DENSITIES[k - 1])
    return math.inf


def _dense(rng, batch, n_post, n_pre):
    return rng.random((batch, n_pre)), rng.random((batch, n_post)), rng.random((batch, n_post))


def _saturated(rng, batch, n_post, n_pre):
    pre = np.clip(rng.normal(0.5, 3.0, (batch, n_pre)), 0.0, 1.0)
    s_free = rng.normal(0.5, 3.0, (batch, n_post))
    free = np.clip(s_free, 0.0, 1.0)
    nudged = np.clip(s_free + rng.normal(0.0, 0.3, (batch, n_post)), 0.0, 1.0)
    return pre, free, nudged


def _load_recorded(path: str) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    with np.load(path) as data:
        k = 0
        while f"pre_{k}" in data:
            pre, free, nudged = data[f"pre_{k}"], data[f"free_{k}"], data[f"nudged_{k}"]
            if free.shape != nudged.shape or free.shape[0] != pre.shape[0]:
                raise SystemExit(
                    f"{path}: projection {k}: pre_{k} {pre.shape}, free_{k} {free.shape}, "
                    f"nudged_{k} {nudged.shape} do not match"
                )
            out.append((f"rec{k}", pre, free, nudged))
            k += 1
    if not out:
        raise SystemExit(f"{path}: no arrays named pre_0, free_0, nudged_0")
    return out


def _row(label, batch, case, pre, free, nudged, repeats, rng):
    n_pre, n_post = pre.shape[1], free.shape[1]

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    pre_t, free_t, nudged_t = t(pre), t(free), t(nudged)
    weight = t(rng.standard_normal((n_post, n_pre)) * 0.1)
    diff = nudged_t - free_t
    density = torch.count_nonzero(diff).item() / diff.numel()
    copies = {b: weight.clone() for b in ("numba", "torch")}
    fns = {
        b: lambda w=w, b=b: chl_update(w, pre_t, free_t, nudged_t, SCALE, backend=b)
        for b, w in copies.items()
    }
    ms = _medians_ms(fns, repeats)
    auto = plasticity.auto_backend(weight, diff)
    xover = measure_crossover(n_post, n_pre, batch, repeats)
    best = min(ms, key=ms.get)
    print(
        f"{label:<8} {f'({n_post},{n_pre})':<12} {batch:>5}  {case:<22} {density:>7.3f} "
        f"{ms['numba']:>9.3f} {ms['torch']:>9.3f} {ms['numba'] / ms['torch']:>7.2f}  "
        f"{xover:>6.3f}  {auto:<6} {'ok' if auto == best else 'MISS'}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", help="npz of recorded rates (pre_k, free_k, nudged_k)")
    parser.add_argument("--repeats", type=int, default=21, help="timed calls per cell")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)

    # Warm up: compile (or load from cache) the numba kernel before anything is timed.
    w = torch.zeros(3, 2)
    chl_update(w, torch.ones(1, 2), torch.zeros(1, 3), torch.ones(1, 3), 1.0, backend="numba")

    print(f"machine: {machine_line()}")
    print(
        f"numba {numba.__version__} ({numba.get_num_threads()} threads, layer "
        f"{numba.threading_layer()}), float32"
    )
    print(f"median of {args.repeats} calls after warm-up; times in ms")
    print(
        "xover = measured crossover density of nonzero differences below which numba is "
        f"faster; 'auto' uses numba below {plasticity.AUTO_DENSITY} for at least "
        f"{plasticity.AUTO_MIN_PRE} presynaptic neurons; ok = auto picked the faster backend"
    )
    print()
    header = (
        f"{'proj':<8} {'(post,pre)':<12} {'batch':>5}  {'case':<22} {'density':>7} "
        f"{'numba ms':>9} {'torch ms':>9} {'n/t':>7}  {'xover':>6}  {'auto':<6} ok?"
    )
    print(header)
    print("-" * len(header))

    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for label, n_post, n_pre in PROJECTIONS:
        for batch in BATCHES:
            for case, make in (("dense", _dense), ("saturated (synthetic)", _saturated)):
                pre, free, nudged = make(rng, batch, n_post, n_pre)
                _row(label, batch, case, pre, free, nudged, args.repeats, rng)

    print()
    if args.rates is None:
        print("recorded rates were not given (--rates FILE.npz): recorded case not run")
    else:
        for label, pre, free, nudged in _load_recorded(args.rates):
            for batch in BATCHES:
                if pre.shape[0] < batch:
                    print(f"{label}: only {pre.shape[0]} recorded samples, batch {batch} skipped")
                    continue
                sl = slice(0, batch)
                _row(label, batch, "recorded", pre[sl], free[sl], nudged[sl], args.repeats, rng)
    other = _other_cores(cpu0, _cpu_seconds(), time.perf_counter() - t0)
    print(
        f"other processes used {other:.2f} of {cores} cores on average during the timings"
        + (" -- the machine was busy, times are not reliable" if other > 0.1 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
