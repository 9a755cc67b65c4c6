"""Does bfloat16 cost accuracy? The same seeded runs in float32 and bfloat16, side by side
(issue 17).

Sigprop (the bundled configs' rule; ``--rules sigprop bp`` adds end-to-end BP of the same
networks):

- ``fc-3x1000-fmnist`` on the scikit-learn digits (``--digits-epochs``) and on Fashion-MNIST
  (``--fmnist-epochs``);
- ``vgg8b-fmnist`` on digits (8x8, ``data.crop = 0``; the maps are 8 -> 4 -> 2 -> 1 -> 1);
- ``snn-fmnist-sp-surrogate`` (spiking sigprop) on digits.

``train.precision`` is the only difference between the two runs of a row (same seed, same
order, same initial weights). Writes a markdown table of the selected and final test errors and
the final training error. A run that has its epochs is left as it is, an unfinished one resumed
(``figures/table_baselines.train_run``).

    python figures/precision_accuracy.py --out docs/tables/precision_accuracy.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from table_baselines import error_cells, train_run

from ctsp import config as cfg
from ctsp.runs import machine_line, markdown_table

PRECISIONS = ("float32", "bfloat16")


def cases(args) -> list[tuple[str, str, list[str], int]]:
    """(label, bundled config, overrides, epochs) of every row."""
    digits = ["data.name=digits", "data.validation=0"]  # as recorded (no held-out split)
    rows = []
    for rule in args.rules:
        r = f"train.rule={rule}"
        rows.append(
            (f"FC 3x1000, digits, {rule}", "fc-3x1000-fmnist", [*digits, r], args.digits_epochs)
        )
        rows.append(
            (
                f"VGG8b, digits, {rule}",
                "vgg8b-fmnist",
                [*digits, "data.crop=0", r],
                args.digits_epochs,
            )
        )
    rows.append(("Spiking, digits, sigprop", "snn-fmnist-sp-surrogate", digits, args.digits_epochs))
    if args.fmnist_epochs:
        rows.append(
            ("FC 3x1000, Fashion-MNIST, sigprop", "fc-3x1000-fmnist", [], args.fmnist_epochs)
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--digits-epochs", type=int, default=20)
    ap.add_argument("--fmnist-epochs", type=int, default=2, help="0: no Fashion-MNIST row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rules", nargs="+", default=["sigprop"], help="e.g. sigprop bp")
    ap.add_argument("--runs", type=Path, default=Path("runs/precision"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    ap.add_argument("--out", type=Path, help="markdown file (default RUNS/precision_accuracy.md)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "figures/precision_accuracy.py", *sys.argv[1:]])
    lines = [
        "# float32 against bfloat16: the same seeded runs",
        "",
        f"Machine: {machine_line()}. Command: `{command}`.",
        f"Seed {args.seed}; the bundled configs' schedules compressed into the epochs shown. "
        "selected test error (epoch: lowest validation error, else the last), final test error, "
        "final train error.",
        "",
    ]
    header = ["run", "epochs"]
    for p in PRECISIONS:
        header += [f"{p} selected", f"{p} final", f"{p} train"]
    rows = []
    for label, name, items, epochs in cases(args):
        row = [label, epochs]
        for precision in PRECISIONS:
            sets = [*items, f"train.precision={precision}", f"seed={args.seed}"]
            sets.append(f"threads={args.threads}")
            sets.append(f"train.epochs={epochs}")
            config = cfg.with_overrides(
                cfg.load(name, cfg.DiscreteRunConfig), [cfg.parse_override(s) for s in sets]
            )
            slug = label.lower().replace(", ", "-").replace(" ", "-")
            # (the seconds per epoch are left out: these runs shared the machine; the speed of
            # the two precisions is benchmarks/step.py's)
            row += error_cells(train_run(config, args.runs / f"{slug}-{precision}"))[:3]
        rows.append(row)
    lines += markdown_table(header, rows)
    out = args.out or args.runs / "precision_accuracy.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
