"""Seconds per training epoch and matrix passes per minibatch: the bundled ODE settings against
the "steady" solver, and whether both reach the same fixed points.

For each config (default ``fmnist-2x1500`` and ``fmnist-3x1500``) and each variant — the bundled
settings with ``solver.method`` set to ``euler`` (the config's Euler step and phase durations,
its steady-state stop), and ``steady`` (layer sweeps to the same ``solver.tol``) — trains
``--batches`` minibatches from the same initial network, in one process, one variant after the
other, and prints seconds per epoch (scaled from the minibatches run to the full epoch),
mean sweeps or steps per free and clamped phase, matrix passes per minibatch and the share of
phases that met the tolerance (after 5 untimed warm-up minibatches per variant).
``--persistent`` adds each variant with persistent states.

Then, on the network the Euler variant trained, it compares the free-phase fixed points of
``--check`` test images: each method's state against a reference integrated by projected Euler
(step 0.5, stable for r = 1) to a residual of 1e-7, as max |s - s*| and the largest residual.

    python benchmarks/epoch.py                                  # 300 minibatches per variant
    python benchmarks/epoch.py --configs fmnist-2x1500 --batches 3000   # one full epoch
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import build_layered_network
from ctsp.continuous import Field, RelaxSpec, Trainer, relax
from ctsp.runs import machine_line


def train(config: cfg.RunConfig, data: datasets.Dataset, batches: int):
    """``batches`` minibatches of a seeded order from the seeded initial network: (seconds,
    free stats, clamped stats, trainer)."""
    net = build_layered_network(config)
    trainer = Trainer(net, config, torch.device("cpu"), data.train_x.shape[0])
    bs = config.train.batch_size
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(0))
    signs = torch.randint(0, 2, (batches,), generator=torch.Generator().manual_seed(1)) * 2 - 1
    free, clamped = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in range(batches):
            idx = order[k * bs : (k + 1) * bs]
            sign = float(signs[k]) if config.train.beta_sign == "random" else 1.0
            _, fs, cs = trainer.learn(data.train_x[idx], data.train_y[idx], idx, sign)
            free.append(fs)
            clamped.append(cs)
    return time.perf_counter() - t0, free, clamped, trainer


def fixed_points(trainer: Trainer, configs: dict, x: torch.Tensor) -> list[str]:
    """Free-phase fixed points of ``x`` by each variant's solver against a converged reference."""
    net = trainer.net
    with torch.no_grad():
        current = net.input_current(x)
        reference = RelaxSpec("euler", 5000.0, step=0.5, tol=1e-7, check_every=20)
        ref = relax(Field(net, current), net.zero_state(x.shape[0]), reference)
        lines = [
            f"  reference: projected Euler step 0.5 to residual {ref.stats.residual:.1e} "
            f"({ref.stats.steps} steps, converged {ref.stats.converged})"
        ]
        for name, config in configs.items():
            s = config.solver
            free = RelaxSpec.phases(s)[0]
            out = relax(Field(net, current), net.zero_state(x.shape[0]), free)
            gap = float((out.state - ref.state).abs().max())
            lines.append(
                f"  {name:<10} max |s - s*| {gap:.1e}, residual {out.stats.residual:.1e} "
                f"(tol {s.tol:g}), {out.stats.steps} steps, {out.stats.passes} matrix passes"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["fmnist-2x1500", "fmnist-3x1500"])
    ap.add_argument("--batches", type=int, default=300, help="minibatches per variant")
    ap.add_argument("--check", type=int, default=200, help="test images for the fixed points")
    ap.add_argument("--persistent", action="store_true", help="also with persistent states")
    args = ap.parse_args()
    print(f"machine: {machine_line()}")
    header = (
        f"{'config':<14} {'variant':<22} {'s/epoch':>8} {'free':>6} {'clamped':>8} "
        f"{'passes':>7} {'free conv':>9} {'clamped conv':>12}"
    )
    for name in args.configs:
        base = cfg.load(name)
        data = datasets.load(base.data.name, data_dir=base.data.dir or None)
        per_epoch = -(-data.train_x.shape[0] // base.train.batch_size)
        batches = min(args.batches, per_epoch)
        s = base.solver
        print(
            f"\n{name}: sizes {list(base.network.sizes)}, batch {base.train.batch_size}, "
            f"euler eps {s.step}, free {s.free_duration} / clamped {s.clamped_duration} time "
            f"units, tol {s.tol:g}; steady: max {s.max_sweeps} sweeps; {batches} of {per_epoch} "
            f"minibatches per variant"
        )
        print(header)
        configs = {
            "euler": cfg.with_overrides(base, [(["solver", "method"], "euler")]),
            "steady": cfg.with_overrides(base, [(["solver", "method"], "steady")]),
        }
        variants = dict(configs)
        if args.persistent:
            for m, c in configs.items():
                variants[f"{m} + persistent"] = cfg.with_overrides(
                    c, [(["train", "persistent"], True)]
                )
        seconds, trained = {}, None
        for config in variants.values():  # warm-up, untimed: numba's kernel, allocator, caches
            train(config, data, 5)
        for variant, config in variants.items():
            sec, free, clamped, trainer = train(config, data, batches)
            seconds[variant] = sec
            if variant == "euler":
                trained = trainer

            def mean(stats, key):
                return float(np.mean([getattr(x, key) for x in stats]))

            passes = mean(free, "passes") + mean(clamped, "passes")
            print(
                f"{name:<14} {variant:<22} {sec * per_epoch / batches:>8.1f} "
                f"{mean(free, 'steps'):>6.1f} {mean(clamped, 'steps'):>8.1f} {passes:>7.1f} "
                f"{mean(free, 'converged'):>9.2f} {mean(clamped, 'converged'):>12.2f}"
            )
        print(f"  speed-up of steady over euler: {seconds['euler'] / seconds['steady']:.2f}x")
        print(f"fixed points of {args.check} test images after the euler variant's minibatches:")
        for line in fixed_points(trained, configs, data.test_x[: args.check]):
            print(line)


if __name__ == "__main__":
    main()
