"""Quick sweep of continuous-time settings on a Fashion-MNIST subset (for choosing issue-6 configs).

Each variant is a ``;``-separated list of ``section.key=value`` overrides of a bundled config. It
trains (``ctsp.app.simulate`` on the subset: shuffled per epoch, seeded, beta signs as
configured, the learning-rate schedule that of ``train.epochs``) on the first ``--train``
training examples for ``--epochs`` epochs and evaluates the free phase on the first ``--test``
test examples after every epoch (no validation split). Variants run one after another in one
process, so their timings can be compared; each run's directory is temporary, its epoch lines go
to stderr. Cheap, noisy signals of which settings learn — not results.

    python figures/ct_sweep.py --train 10000 --epochs 2 "" "network.loop=fixed"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import simulate
from ctsp.runs import machine_line, markdown_table

HEADER = ["variant", "epoch", "train error", "test error", "seconds so far"]


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sweep(base: cfg.RunConfig, spec: str, data: datasets.Dataset, epochs: int) -> list[list]:
    """Train one variant for ``epochs`` epochs on ``data``; its table rows, one per epoch."""
    overrides = [cfg.parse_override(s) for s in spec.split(";") if s.strip()]
    config = cfg.with_overrides(base, overrides)
    if config.train.epochs < epochs:
        config = cfg.with_overrides(config, [(["train", "epochs"], epochs)])
    with tempfile.TemporaryDirectory() as out:
        run = simulate(
            config, out, force=True, progress=False, log=stderr, stop_after=epochs, data=data
        )
    m = run.metrics
    seconds = m.epoch_seconds.cumsum("epoch")
    return [
        [
            spec or "(bundled)",
            int(m.epoch[k]),
            f"{float(m.train_error[k]):.1%}",
            f"{float(m.test_error[k]):.1%}",
            f"{float(seconds[k]):.0f}",
        ]
        for k in range(m.sizes["epoch"])
    ]


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
        f"{machine_line()}\n"
    )
    rows = []
    for spec in args.variants:
        rows += sweep(base, spec, data, args.epochs)
    print("\n".join(markdown_table(HEADER, rows)))


if __name__ == "__main__":
    main()
