"""Fashion-MNIST 2x1500, the two 60-epoch studies side by side, per seed.

Reads the trials' metrics committed under ``docs/metrics/STUDY/seed=K.metrics.nc`` (copied from
the sweeps' ``trials/seed=K/metrics.nc``): ``fmnist-2x1500-seeds``, the bundled settings, and
``fmnist-2x1500-best``, the best setting of the search (a learned loop-back, beta 1.235, the
learning rates x 1.5). For every seed: the epochs run, the epoch of lowest validation error
(``ctsp.runs.selection``; never the test error), the validation error there, the test error
there and at the last epoch; then the mean ± sd (ddof 1) over the seeds, and the per-seed
difference of the selected test errors (best minus bundled: the same seed holds out the same
5,000 training images in both).

    python figures/table_fmnist_studies.py --out docs/tables/fmnist_studies.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from ctsp.runs import markdown_table, selection, write_report

STUDIES = {"fmnist-2x1500-seeds": "bundled", "fmnist-2x1500-best": "best of the search"}


def per_seed(folder: Path) -> dict[int, dict]:
    """Seed -> epochs, selected epoch, validation and test error there, final test error."""
    rows = {}
    for path in sorted(folder.glob("seed=*.metrics.nc")):
        ds = xr.load_dataset(path)
        k = int(selection(ds))
        rows[int(path.name.split("=")[1].split(".")[0])] = {
            "epochs": int(ds.test_error.notnull().sum()),
            "epoch": int(ds.epoch[k]),
            "val": float(ds.val_error[k]),
            "test": float(ds.test_error[k]),
            "final": float(ds.test_error.dropna("epoch")[-1]),
        }
    if not rows:
        raise SystemExit(f"table_fmnist_studies: no seed=K.metrics.nc in {folder}")
    return rows


def _mean_sd(values: list[float]) -> str:
    sd = f" ± {np.std(values, ddof=1):.2%}" if len(values) > 1 else ""
    return f"{np.mean(values):.2%}{sd}"


def study_rows(name: str, seeds: dict[int, dict]) -> list[list]:
    """A row per seed, then the mean ± sd over them."""
    rows = [[name, s, r["epochs"], r["epoch"], f"{r['val']:.2%}", f"{r['test']:.2%}",
             f"{r['final']:.2%}"] for s, r in seeds.items()]  # fmt: skip
    col = {key: [r[key] for r in seeds.values()] for key in ("val", "test", "final")}
    rows.append([f"**{name}, mean ± sd**", "", "", "", _mean_sd(col["val"]),
                 f"**{_mean_sd(col['test'])}**", _mean_sd(col["final"])])  # fmt: skip
    return rows


def differences(bundled: dict[int, dict], best: dict[int, dict]) -> list[str]:
    """Best minus bundled, per seed both studies ran, and their mean ± sd."""
    common = sorted(set(bundled) & set(best))
    diffs = [best[s]["test"] - bundled[s]["test"] for s in common]
    each = ", ".join(f"seed {s}: {d * 100:+.2f}" for s, d in zip(common, diffs, strict=True))
    sd = f" ± {np.std(diffs, ddof=1) * 100:.2f}" if len(diffs) > 1 else ""
    return [f"Selected test error, best minus bundled (points): {each}; mean "
            f"{np.mean(diffs) * 100:+.2f}{sd}."]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", type=Path, default=Path("docs/metrics"),
                    help="holds a folder of seed=K.metrics.nc per study")  # fmt: skip
    ap.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    args = ap.parse_args()
    studies = {label: per_seed(args.metrics / name) for name, label in STUDIES.items()}
    header = ["settings", "seed", "epochs", "selected epoch", "validation error",
              "test error there", "final test error"]  # fmt: skip
    rows = [row for label, seeds in studies.items() for row in study_rows(label, seeds)]
    lines = [
        "# Fashion-MNIST 2x1500 over 60 epochs: the bundled settings and the search's best",
        "",
        f"Command: `python figures/table_fmnist_studies.py --metrics {args.metrics}` (the trials' "
        "metrics of the sweeps `fmnist-2x1500-seeds` and `fmnist-2x1500-best`). The paper: 11.00 % "
        "test error (validation 10.95 %).",
        "",
        *markdown_table(header, rows),
        "",
        *differences(*studies.values()),
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
