"""Dropout on the target path: VGG8b sigprop on digits with and without it (issue 7).

Trains the bundled ``vgg8b-fmnist`` network on the scikit-learn digits (8x8, no crop; the
maps are 8 -> 4 -> 2 -> 1 -> 1, so conv5, conv6 and fc1 compare 1x1 or flat outputs with the
class targets) with a sparse target (Sec. III-E) and a dense one into the first hidden layer,
each with ``signal.target_dropout`` off (the default) and on (independent masks per target row,
the earlier behaviour), for two seeds. Writes a markdown table of the final test errors
and the final early exits. A run that has its epochs is left as it is (see
``figures/table_baselines.py``).

    python figures/target_dropout.py --out docs/tables/target_dropout_digits.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from table_baselines import train_run

from ctsp import config as cfg
from ctsp.runs import machine_line, markdown_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", type=Path, default=Path("runs/target_dropout"))
    ap.add_argument("--out", type=Path, help="markdown file (default RUNS/target_dropout.md)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "figures/target_dropout.py", *sys.argv[1:]])
    lines = [
        "# Target-path dropout: VGG8b sigprop on digits",
        "",
        f"Machine: {machine_line()}. Command: `{command}`.",
        f"Bundled `vgg8b-fmnist` (dropout 0.1) on digits, `data.crop = 0`, {args.epochs} epochs "
        "(the step decay compressed into them). Errors in %; exits at the last epoch.",
        "",
    ]
    rows, layers = [], []
    for into in ("sparse", "hidden"):
        for target_dropout in (False, True):
            for seed in args.seeds:
                items = [
                    "data.name=digits",
                    "data.crop=0",
                    "data.validation=0",  # as recorded (no held-out split)
                    f"signal.into={into}",
                    f"signal.target_dropout={str(target_dropout).lower()}",
                    f"seed={seed}",
                    f"train.epochs={args.epochs}",
                ]
                config = cfg.with_overrides(
                    cfg.load("vgg8b-fmnist", cfg.DiscreteRunConfig),
                    [cfg.parse_override(s) for s in items],
                )
                name = f"{into}-{'drop' if target_dropout else 'clean'}-{seed}"
                m = train_run(config, args.runs / name)
                layers = [str(v) for v in m.layer.values]
                rows.append(
                    [
                        into,
                        "on" if target_dropout else "off",
                        seed,
                        f"{100 * float(m.test_error[-1]):.1f}",
                        *(f"{100 * float(e):.1f}" for e in m.test_exit_error[-1]),
                    ]
                )
    lines += markdown_table(["target", "target dropout", "seed", "final", *layers], rows)
    out = args.out or args.runs / "target_dropout.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
