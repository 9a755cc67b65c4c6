"""Sigprop's continuous-time network against its baselines, Equilibrium Propagation with
symmetric weights and with fixed random feedback (paper Sec. V; issue 29).

Runs (or continues) the bundled sweeps of variants ``ct-baselines-digits`` (the digits demo's
64-256-10, full 30-epoch runs, seeds 0-4), ``ct-baselines-digits-2x256`` (two hidden layers,
the steady solver) and ``ct-baselines-fmnist-2x1500`` (Fashion-MNIST 2x1500, the same few
epochs for every variant, seed 0) and writes a markdown table from their
Datasets: per variant, the test error at the epoch of the lowest validation error (mean ± sd
over the seeds), the validation error there, the matrix products per training minibatch (free +
clamped phase: the cost that does not depend on the machine) and the seconds per epoch (one
torch thread per trial; the machine's other work included). Needs the sweep extra
(``pip install -e '.[sweep]'``).

    python figures/table_ct_baselines.py --cpus 1 --out docs/tables/ct_baselines.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import xarray as xr

from ctsp import sweeps
from ctsp.runs import machine_line, markdown_table, selection, write_report

SPECS = {  # the table's dataset column -> the bundled sweep
    "digits": "ct-baselines-digits",
    "digits, 2x256": "ct-baselines-digits-2x256",
    "Fashion-MNIST": "ct-baselines-fmnist-2x1500",
}
NAMES = {
    "sigprop-learned": "sigprop, learned loop-back",
    "sigprop-fixed": "sigprop, fixed loop-back",
    "ep": "EP, symmetric weights",
    "ep-fa": "EP, random feedback",
}


def rows(name: str, ds: xr.Dataset) -> list[list]:
    """A row per variant of the sweep ``name``'s Dataset."""
    chosen = selection(ds)
    test, val = ds.test_error.isel(epoch=chosen), ds.val_error.isel(epoch=chosen)
    passes = (ds.free_passes + ds.clamped_passes).mean(["epoch", "seed"])
    seconds = ds.epoch_seconds.mean(["epoch", "seed"])
    epochs = int(ds.sizes["epoch"])
    table = []
    for variant in ds.variant.values:
        one = {"variant": variant}
        error = f"{float(test.sel(one).mean()):.2%}"
        if ds.sizes["seed"] > 1:
            error += f" ± {float(test.sel(one).std('seed', ddof=1)):.2%}"
        table.append([name, NAMES.get(str(variant), str(variant)), epochs, int(ds.sizes["seed"]),
                      error, f"{float(val.sel(one).mean()):.2%}", f"{float(passes.sel(one)):.0f}",
                      f"{float(seconds.sel(one)):.1f}"])  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="the sweeps' directories")
    ap.add_argument("--cpus", type=int, help="the local Ray's CPUs (default: all usable cores)")
    ap.add_argument("--only", nargs="+", choices=list(SPECS.values()), help="these sweeps only")
    ap.add_argument("--out", type=Path, help="markdown file (default: stdout only)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "figures/table_ct_baselines.py", *sys.argv[1:]])
    header = ["dataset", "variant", "epochs", "seeds", "test error", "validation error",
              "matrix products / minibatch", "s / epoch"]  # fmt: skip
    table = []
    for name, spec in SPECS.items():
        if args.only and spec not in args.only:
            continue
        path = args.runs / spec
        sweeps.sweep(sweeps.load_spec(spec), path, cpus=args.cpus, verbose=0)
        table += rows(name, sweeps.open_sweep(path))
    lines = [
        "# Sigprop against Equilibrium Propagation, continuous time",
        "",
        f"Machine: {machine_line()}; one torch thread per trial. Command: `{command}` (the "
        f"sweeps {', '.join(SPECS.values())}). The test error at the epoch of the lowest "
        "validation error (mean ± sd over the seeds); matrix products per training minibatch "
        "(free + clamped phase), the cost that does not depend on the machine.",
        "",
        *markdown_table(header, table),
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
