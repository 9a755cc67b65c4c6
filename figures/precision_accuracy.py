"""Does bfloat16 cost accuracy? float32 against bfloat16 (``train.precision``), over seeds.

Runs (or continues) the sweeps of ``figures/specs/precision-*.toml`` (``ctsp sweep``; a grid over
``train.precision``, the two precisions' runs of a seed start from the same weights and see the
same order) and writes a markdown table from their Datasets: per network and number of epochs,
the test error at the epoch of the lowest validation error, mean ± sd over the seeds, in each
precision, and the difference of the means. Rows: VGG8b sigprop on digits (8x8, 2 and 10
epochs), spiking sigprop on digits (10 epochs), FC 3x1000 sigprop on digits (10 epochs) and on
Fashion-MNIST (2 epochs). The digits test set has 359 images (one image: 0.28 points). Needs the
sweep extra (``pip install -e '.[sweep]'``).

    python figures/precision_accuracy.py --runs runs/precision --cpus 1 \
        --out docs/tables/precision_accuracy.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ctsp import sweeps
from ctsp.runs import machine_line, markdown_table

SPECS = Path(__file__).parent / "specs"
RUNS = {  # label -> the sweep spec's name (figures/specs/precision-NAME.toml)
    "VGG8b, digits": "vgg8b",
    "Spiking, digits": "spiking",
    "FC 3x1000, digits": "fc",
    "FC 3x1000, Fashion-MNIST": "fc-fmnist",
}
PRECISIONS = ("float32", "bfloat16")


def rows(label: str, spec, path: Path) -> list[list]:
    """A row per number of epochs: each precision's selected test error (mean ± sd over the
    seeds) and bfloat16's mean minus float32's."""
    flat, _ = sweeps.settings(path)
    epochs = spec.base().train.epochs
    found = {}
    for k in range(flat.sizes["setting"]):
        s = flat.isel(setting=k)
        n = int(s["train.epochs"]) if "train.epochs" in s else epochs
        found[n, str(s["train.precision"].values)] = s
    table = []
    for n in sorted({n for n, _ in found}):
        cells = [found[n, p] for p in PRECISIONS]
        table.append([label, n, *(f"{float(s['mean']):.2%} ± {float(s.sd):.2%}" for s in cells),
                      f"{float(cells[1]['mean'] - cells[0]['mean']):+.2%}",
                      int(min(s.n for s in cells))])  # fmt: skip
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
    header = ["run", "epochs", *(f"{p}: test error" for p in PRECISIONS), "bfloat16 − float32",
              "seeds"]  # fmt: skip
    table = []
    for label, name in RUNS.items():
        if args.only and name not in args.only:
            continue
        spec, path = sweeps.load_spec(SPECS / f"precision-{name}.toml"), args.runs / name
        sweeps.sweep(spec, path, cpus=args.cpus, verbose=0)
        table += rows(label, spec, path)
    lines = [
        "# float32 against bfloat16: the same seeded runs, over seeds",
        "",
        f"Machine: {machine_line()}; one torch thread per trial. Command: `{command}` (the "
        "sweeps of figures/specs/precision-*.toml). The test error at the epoch of the lowest "
        "validation error (1/12 of the training set held out), mean ± sd over the seeds; the "
        "bundled configs' schedules compressed into the epochs shown.",
        "",
        *markdown_table(header, table),
    ]
    out = args.out or args.runs / "precision_accuracy.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
