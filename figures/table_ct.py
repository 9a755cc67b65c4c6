"""Continuous-time sigprop results table (paper Sec. V-B): train, select, tabulate.

Trains the paper's loop networks from bundled configs (``fmnist-2x1500``, ``fmnist-3x1500``,
``mnist-2x1500``, ``mnist-3x1500``) or TOML files, one run directory each under ``--runs``, and
writes a markdown table: selected (lowest validation error) and final test error, validation
error, train error, seconds per epoch, relaxation steps per phase, the machine and the command.

Runs stop and resume: each run advances one epoch at a time from its checkpoint
(``ctsp simulate --resume``), so an interrupted script (Ctrl-C, ``--minutes`` budget, a killed
session) continues where it stopped when started again with the same arguments.

    python figures/table_ct.py fmnist-2x1500                          # 60 epochs (the paper)
    python figures/table_ct.py fmnist-2x1500 --epochs 5 --minutes 30  # the first epochs
    python figures/table_ct.py fmnist-2x1500 --set train.batch_size=100 --name fm-b100
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ctsp import config as cfg
from ctsp.app import simulate
from ctsp.runs import files, machine_line, markdown_table, open_run, selected_epoch, write_report

PAPER = {  # test error % reported in the paper (Sec. V-B)
    "fashion-mnist": "11.00 (val 10.95, train -> 2)",
    "mnist": "1.85-1.90 (val 1.76-1.80, train -> 0.00)",
}


def advance(config: cfg.RunConfig, path: Path, deadline: float) -> bool:
    """Train ``path`` epoch by epoch up to ``config.train.epochs``; False if out of time."""
    while True:
        done = open_run(path).epochs_done if (path / files.CONFIG).is_file() else 0
        if done >= config.train.epochs:
            return True
        if time.time() > deadline:
            return False
        simulate(config, path, resume=done > 0, force=done == 0, stop_after=done + 1)


HEADER = [
    "run",
    "data",
    "sizes",
    "epochs",
    "selected test (epoch)",
    "final test",
    "val at selected",
    "final train",
    "train s/epoch",
    "s/epoch",
    "steps free / clamped",
    "paper test",
]


def row(name: str, config: cfg.RunConfig, path: Path) -> list[str]:
    m = open_run(path).metrics
    chosen = selected_epoch(m)  # the lowest validation error, else the last epoch
    val = f"{float(m.val_error[chosen]):.2%}" if "val_error" in m else "—"
    return [
        name,
        config.data.name,
        str(list(config.network.sizes)),
        f"{m.sizes['epoch']}/{config.train.epochs}",
        f"{float(m.test_error[chosen]):.2%} (epoch {chosen + 1})",
        f"{float(m.test_error[-1]):.2%}",
        val,
        f"{float(m.train_error[-1]):.2%}",
        f"{float(m.train_seconds.mean()):.0f}",
        f"{float(m.epoch_seconds.mean()):.0f}",
        f"{float(m.free_steps.mean()):.1f} / {float(m.clamped_steps.mean()):.1f}",
        PAPER.get(config.data.name, "—"),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+", help="bundled config names or TOML files")
    ap.add_argument("--epochs", type=int, help="override train.epochs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", help="run name suffix (for variants of the same config)")
    ap.add_argument("--runs", type=Path, default=Path("runs/table_ct"), help="runs directory")
    ap.add_argument("--minutes", type=float, default=float("inf"), help="time budget")
    ap.add_argument("--out", type=Path, help="markdown file for the table (default: stdout)")
    args = ap.parse_args(argv)
    deadline = time.time() + 60 * args.minutes
    overrides = [cfg.parse_override(s) for s in args.set]
    if args.epochs is not None:
        overrides.append((["train", "epochs"], args.epochs))
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    rows = []
    for name in args.configs:
        config = cfg.with_overrides(cfg.load(name), overrides)
        run_name = f"{config.name}-{args.name}" if args.name else config.name
        path = args.runs / run_name
        finished = advance(config, path, deadline)
        rows.append(row(run_name, config, path))
        if not finished:
            print(f"{run_name}: stopped by the time budget; rerun the same command to resume")
    lines = [
        f"Machine: {machine_line()}",
        f"Command: `python figures/table_ct.py {command}`",
        "",
        *markdown_table(HEADER, rows),
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
