"""Seconds per training epoch and relaxation steps per phase, with and without steady-state stop.

Runs, in one process and one after another, training minibatches of a bundled config (default
``fmnist-2x1500``: 784-1500-1500-10, batch 20, free 15 / clamped 3 time units, Euler eps 0.5)
for each variant below, from the same initial network, and prints seconds per epoch (measured
over ``--batches`` minibatches and scaled to the full epoch when fewer are run), mean steps per
free and clamped phase, and the share of phases that met the tolerance:

- ``fixed``: fixed phase durations (no steady-state stop);
- ``tol=T``: steady-state stop, residual max_j |ds_j/dt| < T for every sample, checked every
  ``check_every`` steps; the durations are the caps;
- ``tol=T + persistent``: as above, each example's free phase starting from its last fixed point.

    python benchmarks/epoch.py                       # one full epoch per variant (~8 min here)
    python benchmarks/epoch.py --batches 300 --tol 1e-3 1e-2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import build_loop_network
from ctsp.continuous import Trainer
from ctsp.runs import machine_line


def run(config: cfg.RunConfig, data: datasets.Dataset, batches: int) -> tuple[float, list, list]:
    net = build_loop_network(config)
    trainer = Trainer(net, config, torch.device("cpu"), data.train_x.shape[0])
    bs = config.train.batch_size
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(0))
    free, clamped = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in range(batches):
            idx = order[k * bs : (k + 1) * bs]
            _, fs, cs = trainer.train_batch(data.train_x[idx], data.train_y[idx], idx, 1.0)
            free.append(fs)
            clamped.append(cs)
    return time.perf_counter() - t0, free, clamped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="fmnist-2x1500")
    ap.add_argument("--batches", type=int, help="minibatches per variant (default: one epoch)")
    ap.add_argument("--tol", type=float, nargs="+", default=[1e-3])
    args = ap.parse_args()
    base = cfg.load(args.config)
    data = datasets.load(base.data.name, data_dir=base.data.dir or None)
    per_epoch = -(-data.train_x.shape[0] // base.train.batch_size)
    batches = min(args.batches or per_epoch, per_epoch)
    print(f"machine: {machine_line()}")
    s = base.solver
    print(
        f"{args.config}: sizes {list(base.network.sizes)}, batch {base.train.batch_size}, "
        f"{s.method} eps {s.step}, free {s.free_duration} / clamped {s.clamped_duration} time "
        f"units; {batches} of {per_epoch} minibatches per variant"
    )
    variants = [("fixed", [])]
    for tol in args.tol:
        variants.append((f"tol={tol:g}", [(["solver", "tol"], tol)]))
        variants.append(
            (
                f"tol={tol:g} + persistent",
                [(["solver", "tol"], tol), (["train", "persistent"], True)],
            )
        )
    print(
        f"{'variant':<24} {'s/epoch':>8} {'free steps':>11} {'clamped steps':>14} {'converged':>10}"
    )
    for name, overrides in variants:
        seconds, free, clamped = run(cfg.with_overrides(base, overrides), data, batches)
        conv = np.mean([f.converged for f in free]) if "tol" in name else float("nan")
        free_steps, clamped_steps = (
            np.mean([f.steps for f in free]),
            np.mean([c.steps for c in clamped]),
        )
        print(
            f"{name:<24} {seconds * per_epoch / batches:>8.1f} {free_steps:>11.1f} "
            f"{clamped_steps:>14.1f} {conv:>10.2f}"
        )


if __name__ == "__main__":
    main()
