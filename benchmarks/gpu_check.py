"""The prepared GPU check (issue 30): on a CUDA machine, the training speed of the bundled
networks on the GPU, in one markdown table; run by ``benchmarks/gpu_check.sh``.

Each case trains 2 epochs of ``--batches`` minibatches of synthetic images of the config's
dataset shape (random pixels, random labels: the speed does not depend on them, and the GPU
machine need not hold the dataset) with 1,000 test images, and reports the second epoch
(the first warms up: cuDNN's choices, autocast's caches): samples per second of training and
the epoch's seconds. Cases: fmnist-2x1500 (continuous time, float32), fc-3x1000-fmnist and
vgg8b-fmnist (float32, bfloat16), snn-fmnist-sp-surrogate (float32, float16 with its gradient
scaler), and fc-3x1000-fmnist on the CPU for scale.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.md
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ctsp import config as cfg
from ctsp.app import simulate, train
from ctsp.data import Dataset
from ctsp.runs import machine_line, write_report

# (config, command, device, precision, batches)
CASES = [
    ("fmnist-2x1500", "simulate", "cuda", "float32", 200),
    ("fc-3x1000-fmnist", "train", "cuda", "float32", 200),
    ("fc-3x1000-fmnist", "train", "cuda", "bfloat16", 200),
    ("fc-3x1000-fmnist", "train", "cpu", "float32", 50),
    ("vgg8b-fmnist", "train", "cuda", "float32", 50),
    ("vgg8b-fmnist", "train", "cuda", "bfloat16", 50),
    ("snn-fmnist-sp-surrogate", "train", "cuda", "float32", 50),
    ("snn-fmnist-sp-surrogate", "train", "cuda", "float16", 50),
]


def synthetic(config, batches: int) -> Dataset:
    """Random images in [0, 1] of the config's dataset shape (Fashion-MNIST: 1 x 28 x 28)."""
    gen = torch.Generator().manual_seed(0)
    n = batches * config.train.batch_size

    def images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(count, 1, 28, 28, generator=gen), torch.randint(
            0, 10, (count,), generator=gen
        )

    (tx, ty), (sx, sy) = images(n), images(1000)
    return Dataset("synthetic", tx, ty, sx, sy, tx[:0], ty[:0])


def case(name: str, command: str, device: str, precision: str, batches: int) -> str:
    kind = cfg.RunConfig if command == "simulate" else cfg.DiscreteRunConfig
    overrides = [(["device"], device), (["train", "epochs"], 2), (["data", "validation"], 0)]
    overrides.append((["train", "health"], "off"))  # random labels: chance on purpose
    if command == "train":
        overrides.append((["train", "precision"], precision))
    config = cfg.with_overrides(cfg.load(name, kind), overrides)
    run = simulate if command == "simulate" else train
    data = synthetic(config, batches)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = run(config, f"{out}/run", data=data, progress=False, log=lambda line: None)
        total = time.perf_counter() - t0
    seconds = float(result.metrics.train_seconds[-1])
    rate = batches * config.train.batch_size / seconds
    return (
        f"| {name} | {device} | {precision} | {config.train.batch_size} | {batches} | "
        f"{rate:,.0f} | {seconds:.2f} | {total:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    lines = [
        f"Machine: {machine_line()}; GPU: {gpu}, {torch.cuda.device_count()} device(s); "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}.",
        "",
        "| config | device | precision | batch | minibatches | train samples/s (epoch 2) | "
        "epoch 2 train s | case s (both epochs, evaluation, start) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in CASES:
        if spec[2] == "cuda" and not torch.cuda.is_available():
            continue
        try:
            lines.append(case(*spec))
        except Exception as e:  # one failing case must not cost the others' numbers
            lines.append(
                f"| {spec[0]} | {spec[2]} | {spec[3]} | | | failed: {type(e).__name__}: {e} | | |"
            )
        print(lines[-1], flush=True)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
