"""How far apart can two 2-epoch VGG8b runs on digits end when nothing but rounding-sized
noise separates them? (issue 30)

Trains ``vgg8b-fmnist`` on digits (8x8: ``data.crop = 0``; the bundled 1/12 held out) for 2
epochs, seed 0, one torch thread, in float32 with the initial weights multiplied by
(1 + eps z), z standard normal (seeded), for each ``--eps``, and once in bfloat16 unperturbed;
writes a markdown table of the final test errors. bfloat16 keeps 8 significant bits (a
relative rounding of up to 2^-9, about 2e-3, at every product): if float32 runs perturbed at
that size already end points apart, a single bfloat16 run's distance from the float32 run is
noise of the same kind, and only means over seeds (figures/precision_accuracy.py) compare the
precisions.

    python figures/precision_sensitivity.py --out docs/tables/precision_sensitivity.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ctsp import config as cfg
from ctsp import data
from ctsp.app import train
from ctsp.runs import machine_line, markdown_table, write_report
from models import build_discrete_network

SETTINGS = ["data.name=digits", "data.crop=0", "train.epochs=2", "threads=1"]


def final_error(precision: str, eps: float, out: Path) -> float:
    """The final test error of the 2-epoch run with initial weights x (1 + eps z)."""
    sets = [*SETTINGS, f"train.precision={precision}"]
    config = cfg.with_overrides(cfg.load("vgg8b-fmnist", cfg.DiscreteRunConfig),
                                [cfg.parse_override(s) for s in sets])  # fmt: skip
    digits = data.load("digits", validation=config.data.validation, seed=config.seed)
    net = build_discrete_network(config, digits.image_shape, digits.classes)
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + eps * torch.randn(p.shape, generator=gen))
    result = train(config, out, network=net, force=True, progress=False)
    return float(result.metrics.test_error[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--runs", type=Path, default=Path("runs/precision-sensitivity"))
    ap.add_argument("--out", type=Path, help="markdown file (default: stdout only)")
    args = ap.parse_args(argv)
    runs = [("float32", eps, args.runs / f"f32-{eps:g}") for eps in args.eps]
    runs.append(("bfloat16", 0.0, args.runs / "bf16"))
    rows = [[p, f"{eps:g}", f"{final_error(p, eps, out):.2%}"] for p, eps, out in runs]
    command = shlex.join(["python", "figures/precision_sensitivity.py", *sys.argv[1:]])
    lines = [
        "# VGG8b on digits, 2 epochs: the final test error under rounding-sized noise",
        "",
        f"Machine: {machine_line()}. Command: `{command}`. Seed 0; the initial weights x "
        "(1 + eps z), z standard normal.",
        "",
        *markdown_table(["precision", "eps", "final test error"], rows),
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
