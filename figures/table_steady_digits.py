"""The digits demo with the "steady" solver against the Euler default, over seeds.

Runs (or continues) the bundled sweep ``digits-steady-vs-euler`` (``ctsp sweep``: the default
config, digits, 64-256-10 with a learned loop-back, 30 epochs, batch 20; ``solver.method`` euler,
20 free + 4 clamped steps of eps 0.5, against steady, its default 3 sweeps per phase; seeds 0-4,
one thread per trial) and writes a markdown table from the sweep's Dataset: final test error
(no validation split: nothing is selected) and matrix passes per training minibatch (free +
clamped, from metrics.nc), per seed and as the mean over seeds. The digits test set has 359
images, so one image is 0.28 points: read single seeds with that in mind, the mean is the
comparison. Needs the sweep extra (``pip install -e '.[sweep]'``).

    python figures/table_steady_digits.py --out docs/tables/steady_digits.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import xarray as xr

from ctsp import sweeps
from ctsp.runs import machine_line, markdown_table, write_report

SPEC = "digits-steady-vs-euler"


def rows(ds: xr.Dataset) -> list[list]:
    """Per solver: a row per seed (final test error, passes per minibatch), then the mean."""
    final = ds.test_error.isel(epoch=-1)
    passes = (ds.free_passes + ds.clamped_passes).mean("epoch")
    table = []
    for method in ds["solver.method"].values:
        one = {"final": final.sel({"solver.method": method}),
               "passes": passes.sel({"solver.method": method})}  # fmt: skip
        for seed in ds.seed.values:
            table.append([method, int(seed), f"{float(one['final'].sel(seed=seed)):.2%}",
                          f"{float(one['passes'].sel(seed=seed)):.1f}"])  # fmt: skip
        table.append([f"**{method}, mean**", "", f"**{float(one['final'].mean()):.2%}**",
                      f"**{float(one['passes'].mean()):.1f}**"])  # fmt: skip
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", type=Path, default=Path("runs/steady-digits"),
                    help="the sweep's directory (a rerun continues it)")  # fmt: skip
    ap.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    args = ap.parse_args()
    sweeps.sweep(sweeps.load_spec(SPEC), args.sweep, verbose=0)
    header = ["solver", "seed", "final test error", "matrix passes / minibatch"]
    lines = [
        "# The digits demo: steady vs Euler",
        "",
        f"Machine: {machine_line()}; one thread per trial, two trials at a time.",
        f"Command: `python figures/table_steady_digits.py --sweep {args.sweep}` (the sweep "
        f"`{SPEC}`)",
        "",
        *markdown_table(header, rows(sweeps.open_sweep(args.sweep))),
        "",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
