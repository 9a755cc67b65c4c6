"""Quick sweep of continuous-time settings on a Fashion-MNIST subset (for choosing issue-6 configs).

Each variant is a ``;``-separated list of ``section.key=value`` overrides of a bundled config. It
trains (``Trainer.train_epoch``: shuffled per epoch, seeded, beta signs as configured) on the
first ``--train`` training examples for ``--epochs`` epochs and evaluates the free phase on the
first ``--test`` test examples after every epoch. Variants run one after another in one process,
so their timings can be compared. Cheap, noisy signals of which settings learn — not results.

    python figures/ct_sweep.py --train 10000 --epochs 2 "" "network.loop=fixed"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.simulate import Trainer, build_network


def sweep(base: cfg.RunConfig, spec: str, data, epochs: int) -> None:
    overrides = [cfg.parse_override(s) for s in spec.split(";") if s.strip()]
    config = cfg.with_overrides(base, overrides)
    net = build_network(config)
    trainer = Trainer(net, config, torch.device("cpu"), data.train_x.shape[0])
    t0 = time.perf_counter()
    for epoch in range(epochs):
        wrong, _, _ = trainer.train_epoch(data, epoch)
        test, _ = trainer.evaluate(data.test_x, data.test_y)
        print(
            f"| {spec or '(bundled)'} | {epoch + 1} | {wrong / data.train_x.shape[0]:.1%} | "
            f"{test:.1%} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help='";"-separated overrides; "" = the config as is')
    ap.add_argument("--config", default="fmnist-2x1500")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    base = cfg.load(args.config)
    full = datasets.load(base.data.name, data_dir=base.data.dir or None)
    data = dataclasses.replace(
        full,
        train_x=full.train_x[: args.train],
        train_y=full.train_y[: args.train],
        test_x=full.test_x[: args.test],
        test_y=full.test_y[: args.test],
    )
    print(
        f"{args.config}, first {args.train} training / {args.test} test examples; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads\n"
    )
    print("| variant | epoch | train error | test error | seconds so far |")
    print("|---|---|---|---|---|")
    for spec in args.variants:
        sweep(base, spec, data, args.epochs)


if __name__ == "__main__":
    main()
