"""Does bfloat16 cost accuracy? float32 against bfloat16 (``train.precision``), over seeds.

Runs (or continues) the sweeps of ``figures/specs/precision-*.toml`` (``ctsp sweep``; a grid over
``train.precision``, the two precisions' runs of a seed start from the same weights and see the
same order) and writes a markdown table from their Datasets: per network and number of epochs,
the test error at the epoch of the lowest validation error and at the last epoch, mean ± sd over
the seeds, in each precision, and the differences of the means. Rows: VGG8b sigprop on digits
(8x8, 2 and 10 epochs), spiking sigprop on digits (10 epochs), FC 3x1000 sigprop on digits
(10 epochs) and on Fashion-MNIST (2 epochs). The digits test set has 359 images (one image: 0.28
points). Needs the sweep extra (``pip install -e '.[sweep]'``).

    python figures/precision_accuracy.py --runs runs/precision --cpus 1 \
        --out docs/tables/precision_accuracy.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ctsp import sweeps
from ctsp.runs import machine_line, markdown_table, selection, write_report

SPECS = Path(__file__).parent / "specs"
RUNS = {  # label -> the sweep spec's name (figures/specs/precision-NAME.toml)
    "VGG8b, digits": "vgg8b",
    "Spiking, digits": "spiking",
    "FC 3x1000, digits": "fc",
    "FC 3x1000, Fashion-MNIST": "fc-fmnist",
}
PRECISIONS = ("float32", "bfloat16")


def rows(label: str, path: Path) -> list[list]:
    """A row per number of epochs: each precision's test error at the selected epoch and at
    the last (mean ± sd over the seeds), and bfloat16's means minus float32's."""
    ds = sweeps.open_sweep(path)
    errors = {"selected": ds.test_error.isel(epoch=selection(ds)), "final": ds.test_error}
    if "train.epochs" not in ds.dims:  # one number of epochs: a dimension of one
        one = {"train.epochs": [ds.sizes["epoch"]]}
        errors = {k: v.expand_dims(one) for k, v in errors.items()}
    table = []
    for n in errors["selected"]["train.epochs"].values:
        cells, means = [], {}
        for what, error in errors.items():
            e = error.sel({"train.epochs": n})
            if what == "final":
                e = e.sel(epoch=int(n))
            for p in PRECISIONS:
                one = e.sel({"train.precision": p})
                means[what, p] = float(one.mean())
                cells.append(f"{means[what, p]:.2%} ± {float(one.std('seed', ddof=1)):.2%}")
        gaps = [f"{means[w, PRECISIONS[1]] - means[w, PRECISIONS[0]]:+.2%}" for w in errors]
        table.append([label, int(n), *cells, *gaps, int(e.count("seed").min())])
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/precision"),
                    help="the sweeps' directories (a rerun continues them)")  # fmt: skip
    ap.add_argument("--cpus", type=int, help="the local Ray's CPUs (default: all usable cores)")
    ap.add_argument("--only", nargs="+", choices=list(RUNS.values()), help="these sweeps only")
    ap.add_argument("--out", type=Path, help="markdown file (default RUNS/precision_accuracy.md)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "figures/precision_accuracy.py", *sys.argv[1:]])
    header = ["run", "epochs", *(f"{p}, {w}" for w in ("selected", "final") for p in PRECISIONS),
              "bfloat16 − float32, selected", "final", "seeds"]  # fmt: skip
    table = []
    for label, name in RUNS.items():
        if args.only and name not in args.only:
            continue
        path = args.runs / name
        sweeps.sweep(sweeps.load_spec(SPECS / f"precision-{name}.toml"), path, cpus=args.cpus,
                     verbose=0)  # fmt: skip
        table += rows(label, path)
    lines = [
        "# float32 against bfloat16: the same seeded runs, over seeds",
        "",
        f"Machine: {machine_line()}; one torch thread per trial. Command: `{command}` (the "
        "sweeps of figures/specs/precision-*.toml). The test error at the epoch of the lowest "
        "validation error (selected; 1/12 of the training set held out: 120 digits images, so "
        "one image moves it 0.8 points) and at the last epoch (final), mean ± sd over the "
        "seeds; the bundled configs' schedules compressed into the epochs shown.",
        "",
        *markdown_table(header, table),
    ]
    out = args.out or args.runs / "precision_accuracy.md"
    write_report(lines, out)


if __name__ == "__main__":
    main()
