"""The digits demo with the "steady" solver against the Euler default, over seeds.

Trains the default config (``ctsp simulate`` with no arguments: digits, 64-256-10 with a learned
loop-back, 30 epochs, batch 20, Euler eps 0.5, 20 free + 4 clamped steps) once per seed with
``solver.method = euler`` (the default) and once with ``steady`` (its default cap of
``solver.max_sweeps`` sweeps per phase, no tolerance: as ``ctsp simulate --solver steady``), and
writes a markdown table: final test error (no validation split: nothing is selected) and
matrix passes per training minibatch (free + clamped, from metrics.nc), per seed and as the mean
over seeds. The digits test set has 359 images, so one image is 0.28 points: read single seeds
with that in mind, the mean is the comparison.

    python figures/table_steady_digits.py --out docs/tables/steady_digits.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import simulate
from ctsp.runs import machine_line, markdown_table

METHODS = ("euler", "steady")


def one_run(method: str, seed: int, data) -> dict:
    config = cfg.with_overrides(cfg.RunConfig(), [(["solver", "method"], method), (["seed"], seed)])
    with tempfile.TemporaryDirectory() as out:
        m = simulate(
            config, Path(out) / "run", progress=False, log=lambda line: None, data=data
        ).metrics
    passes = (m.free_passes + m.clamped_passes).mean()
    return {
        "final": float(m.test_error[-1]),
        "passes": float(passes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    args = ap.parse_args()
    data = datasets.load(cfg.RunConfig().data.name)
    results = {m: [] for m in METHODS}
    for seed in args.seeds:
        for method in METHODS:
            r = one_run(method, seed, data)
            results[method].append(r)
            print(f"seed {seed} {method}: {r}", file=sys.stderr, flush=True)
    rows = []
    for method in METHODS:
        for seed, r in zip(args.seeds, results[method], strict=True):
            rows.append(
                [method, seed, f"{r['final']:.2%}", f"{r['passes']:.1f}"]
            )  # fmt: skip
        mean = {k: np.mean([r[k] for r in results[method]]) for k in results[method][0]}
        rows.append(
            [f"**{method}, mean**", "", f"**{mean['final']:.2%}**", f"**{mean['passes']:.1f}**"]
        )  # fmt: skip
    seeds = " ".join(map(str, args.seeds))
    header = ["solver", "seed", "final test error", "matrix passes / minibatch"]
    lines = [
        "# The digits demo: steady vs Euler",
        "",
        f"Machine: {machine_line()}.",
        f"Command: `python figures/table_steady_digits.py --seeds {seeds}`",
        "",
        *markdown_table(header, rows),
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
