"""PNGs of a run's recorded relaxations (``trajectories.nc``, from ``ctsp simulate --record N``).

    python figures/trajectories.py RUN_DIR [--out DIR] [--sample ID] [--epoch E] [--tol TOL]

Writes into ``--out`` (default RUN_DIR/figures):

- ``relaxation_sample<ID>.png``: for one sample (default: the one whose last population the
  nudge moves most), every recorded population's states through the free relaxation and the
  clamped (nudged) phase, and the residual max |ds/dt|;
- ``residual.png``: the residual of every recorded sample, and their median;
- ``epochs.png`` (when several epochs were recorded): the median residual per epoch and the
  convergence time (residual below TOL for good) against the epoch.

Runtime: about 2 s for a digits run (a few seconds more for a 3x1500 network).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from analysis.trajectories import (  # noqa: E402
    open_trajectories,
    plot_epochs,
    plot_population,
    plot_residual,
    population_names,
    population_summary,
)
from ctsp.errors import CtspError  # noqa: E402
from ctsp.runs import open_run  # noqa: E402


def most_nudged(ds, population: str, epoch: int | None = None) -> int:
    """The sample whose ``population`` the clamped phase moves most (at ``epoch``, default the
    last): the clearest picture of nudging."""
    if "epoch" in ds.dims:
        ds = ds.isel(epoch=-1) if epoch is None else ds.sel(epoch=epoch)
    moved = population_summary(ds).movement.sel(population=population, phase="clamped")
    return int(moved.sample[int(moved.argmax("sample"))])


def make_figures(
    ds, out: Path, sample: int | None = None, epoch: int | None = None, tol: float = 1e-3
) -> list[Path]:
    """Write the PNGs of the trajectories ``ds`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    names = population_names(ds)
    if sample is None:
        sample = most_nudged(ds, names[-1], epoch)
    written = []

    fig = Figure(figsize=(8, 2.6 * (len(names) + 1)), layout="constrained")
    axes = fig.subplots(len(names) + 1, 1, sharex=True)
    for ax, name in zip(axes, names, strict=False):
        plot_population(ds, name, sample=sample, epoch=epoch, ax=ax)
    plot_residual(ds, sample=sample, epoch=epoch, tol=tol, ax=axes[-1])
    written.append(out / f"relaxation_sample{sample}.png")
    fig.savefig(written[-1], dpi=110)

    fig = Figure(figsize=(8, 3.5), layout="constrained")
    plot_residual(ds, epoch=epoch, tol=tol, ax=fig.subplots())
    written.append(out / "residual.png")
    fig.savefig(written[-1], dpi=110)

    if "epoch" in ds.dims and ds.sizes["epoch"] > 1:
        fig = Figure(figsize=(11, 3.8), layout="constrained")
        plot_epochs(ds, tol=tol, axes=fig.subplots(1, 2))
        written.append(out / "epochs.png")
        fig.savefig(written[-1], dpi=110)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="run directory (or a trajectories.nc file)")
    ap.add_argument("--out", type=Path, help="output directory (default RUN_DIR/figures)")
    ap.add_argument("--sample", type=int, help="sample id (default: the most nudged one)")
    ap.add_argument("--epoch", type=int, help="epoch (default: the last recorded)")
    ap.add_argument("--tol", type=float, default=1e-3, help="residual tolerance (default 1e-3)")
    args = ap.parse_args(argv)
    ds = None
    try:
        if args.run.is_dir():
            ds = open_run(args.run).trajectories
        elif args.run.is_file():  # a trajectories.nc outside its run directory
            ds = open_trajectories(args.run)
    except CtspError as e:
        print(f"trajectories: error: {e}", file=sys.stderr)
        return 2
    if ds is None:
        print(
            f"trajectories: error: no trajectories in {args.run}; record with "
            "`ctsp simulate --record N`",
            file=sys.stderr,
        )
        return 2
    out = args.out or ((args.run if args.run.is_dir() else args.run.parent) / "figures")
    for path in make_figures(ds, out, args.sample, args.epoch, args.tol):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
