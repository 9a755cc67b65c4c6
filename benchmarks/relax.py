"""Free-phase relaxation throughput vs this machine's bare torch addmm rate, in one run.

The free phase of a loop network does, per Euler step, one matrix product per projection between
populations (s_k -> s_{k+1} and the loop-back O -> I), plus the input current W_in x once per
phase. This script times ``relax`` (torchdiffeq Euler, projection, bookkeeping) and the same
matrix products done by bare ``torch.addmm`` into preallocated outputs, and prints both rates in
GFLOP/s and their ratio. Target: ratio >= 0.8.

    python benchmarks/relax.py                       # 784-1500-1500-10, batch 20 and 100
    python benchmarks/relax.py --sizes 784 500 10 --batch 100 --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ctsp.continuous import Field, RelaxSpec, relax
from ctsp.runs import machine_line
from models import LayeredNetwork


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def products(net: LayeredNetwork, batch: int) -> list[tuple[int, int, int]]:
    """(B, n_in, n_out) of every product of one free phase step (the input product excluded)."""
    pops = net.sizes[1:]
    return [(batch, pops[e.src], pops[e.dst]) for e in net.edges if e.src >= 0]


def measure(net: LayeredNetwork, b: int, steps: int, repeats: int) -> tuple[float, float, float]:
    """(seconds of relax, seconds of the same products by bare addmm, FLOPs) for batch ``b``."""
    n_in, n_1 = net.sizes[0], net.sizes[1]
    x = torch.rand(b, n_in)
    s0 = net.zero_state(b)
    step_prods = products(net, b)
    flops = 2 * b * n_in * n_1 + steps * sum(2 * m * k * n for m, k, n in step_prods)

    spec = RelaxSpec("euler", steps * 0.5, step=0.5)

    def run_relax():
        relax(Field(net, net.input_current(x)), s0, spec)

    ws = [torch.randn(n, k) for _, k, n in step_prods]
    ins = [torch.rand(m, k) for m, k, _ in step_prods]
    outs = [torch.empty(m, n) for m, _, n in step_prods]
    w_in, out_in, bias = net.projections["input"].weight, torch.empty(b, n_1), torch.zeros(n_1)

    def run_addmm():
        torch.addmm(bias, x, w_in.T, out=out_in)
        for _ in range(steps):
            for a, w, o in zip(ins, ws, outs, strict=True):
                torch.addmm(o, a, w.T, out=o)

    return median_time(run_relax, repeats), median_time(run_addmm, repeats), flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[784, 1500, 1500, 10])
    ap.add_argument("--batch", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--steps", type=int, default=30, help="Euler steps per free phase")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine_line()}")
    print(f"network {args.sizes}, free phase of {args.steps} Euler steps (eps 0.5)")
    print(
        f"{'batch':>5} {'relax ms':>9} {'addmm ms':>9} {'relax GF/s':>11} {'addmm GF/s':>11} "
        f"{'ratio':>6}"
    )
    net = LayeredNetwork(args.sizes)
    for b in args.batch:
        t_relax, t_addmm, flops = measure(net, b, args.steps, args.repeats)
        g_relax, g_addmm = flops / t_relax / 1e9, flops / t_addmm / 1e9
        print(
            f"{b:>5} {t_relax * 1e3:>9.2f} {t_addmm * 1e3:>9.2f} {g_relax:>11.1f} "
            f"{g_addmm:>11.1f} {g_relax / g_addmm:>6.2f}"
        )


if __name__ == "__main__":
    main()
