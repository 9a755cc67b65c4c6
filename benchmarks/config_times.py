"""Estimate the run time of every bundled config on this machine (for ``ctsp configs``).

For each config: build its network and trainer as ``ctsp simulate`` / ``ctsp train`` do, time
``--batches`` training minibatches (at least 200 examples), after a warm-up pass over the same
minibatches (the first pass costs several times more), and the evaluation of as many test
images (at least 200), and extrapolate to the config's epochs:

    run time = epochs * (n_train / batch_size * t_train + n_eval / eval_batch_size * t_eval)

with n_train, n_eval the dataset's training and test (+ validation) sizes. The inputs are the
dataset's real images where the files are here (Fashion-MNIST; it also stands in for MNIST,
same shape), else uniform random images of its shape (CIFAR-10). Times in a continuous-time run
that stops relaxations at a tolerance depend on the training; the estimate is that of the
first minibatches. Writes ``ctsp/configs/times.json`` (read by ``ctsp configs``):

    python benchmarks/config_times.py     # about 10 minutes on 2 cores, on a quiet machine
    python benchmarks/config_times.py --configs fmnist-2x1500   # re-time some, keep the rest
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ctsp import config as cfg
from ctsp import continuous, data, discrete
from ctsp.app import build_layered_network
from ctsp.config import make_learner
from ctsp.continuous import chl_update
from ctsp.errors import DataError
from ctsp.runs import machine_line
from models import build_discrete_network

MIN_EXAMPLES = 200  # timed training examples at least (10 minibatches of 20)
OUT = Path(__file__).resolve().parents[1] / "ctsp" / "configs" / "times.json"
# (train, test, image shape) of each dataset
SIZES = {
    "digits": (1438, 359, (1, 8, 8)),
    "fashion-mnist": (60000, 10000, (1, 28, 28)),
    "mnist": (60000, 10000, (1, 28, 28)),
    "kmnist": (60000, 10000, (1, 28, 28)),
    "cifar10": (50000, 10000, (3, 32, 32)),
}


def _images(name: str, n_train: int, n_test: int) -> data.Dataset:
    """n_train + n_test images of dataset ``name`` (real where here, else random)."""
    try:
        real = data.load("fashion-mnist" if name == "mnist" else name, download=False)
        if real.image_shape == SIZES[name][2]:
            return data.Dataset(
                name, real.train_x[:n_train], real.train_y[:n_train], real.test_x[:n_test],
                real.test_y[:n_test], real.train_x[:0], real.train_y[:0], real.classes,
            )  # fmt: skip
    except DataError:
        pass
    gen = torch.Generator().manual_seed(0)
    shape = SIZES[name][2]
    return data.Dataset(
        name,
        torch.rand(n_train, *shape, generator=gen),
        torch.randint(0, 10, (n_train,), generator=gen),
        torch.rand(n_test, *shape, generator=gen),
        torch.randint(0, 10, (n_test,), generator=gen),
        torch.zeros(0, *shape),
        torch.zeros(0, dtype=torch.int64),
        10,
    )


def _trainer(config, subset: data.Dataset):
    if isinstance(config, cfg.RunConfig):
        net = build_layered_network(config)
        return continuous.Trainer(net, config, torch.device("cpu"), subset.train_x.shape[0])
    net = build_discrete_network(config, subset.image_shape, subset.classes)
    return discrete.DiscreteTrainer(net, make_learner(net, config), config, torch.device("cpu"))


def estimate(config, batches: int) -> dict:
    """Seconds per training and evaluation example, and the extrapolated run time."""
    tc = config.train
    n_train, n_test, _ = SIZES[config.data.name]
    n_sub = max(batches, -(-MIN_EXAMPLES // tc.batch_size)) * tc.batch_size
    subset = _images(config.data.name, n_sub, max(n_sub, 200))
    trainer = _trainer(config, subset)
    trainer.train_metrics(subset, 0, None)  # warm-up: compiles, allocations, optimizer states
    t0 = time.perf_counter()
    trainer.train_metrics(subset, 0, None)
    t_train = (time.perf_counter() - t0) / subset.train_x.shape[0]
    t0 = time.perf_counter()
    trainer.eval_metrics(subset)
    t_eval = (time.perf_counter() - t0) / subset.test_x.shape[0]
    n_val = data.held_out(config.data.validation, n_train, config.data.name)
    epoch = (n_train - n_val) * t_train + (n_test + n_val) * t_eval
    return {"epoch_seconds": epoch, "run_seconds": epoch * tc.epochs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=2, help="timed minibatches per config")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--configs", nargs="+", help="time only these and keep the others' entries in --out"
    )
    args = ap.parse_args(argv)
    command = "python benchmarks/config_times.py"
    result = {"machine": machine_line(), "command": command}
    times = {}
    if args.configs:  # the machine and command of the kept entries stay as recorded
        kept = json.loads(args.out.read_text())
        times = kept["configs"]
        result = {**kept, "updated": f"{command} --configs {' '.join(args.configs)} on "
                  f"{machine_line()}"}  # fmt: skip
    # the numba CHL kernel compiles (or loads from its cache) on first use: not in a timing
    w = torch.zeros(3, 2)
    chl_update(w, torch.ones(1, 2), torch.zeros(1, 3), torch.ones(1, 3), 1.0, backend="numba")
    for cls in cfg.ROOTS.values():
        for name in cfg.bundled_names(cls):
            if args.configs and name not in args.configs:
                continue
            config = cfg.load(name, cls)
            times[name] = estimate(config, args.batches)
            est = times[name]
            print(
                f"{name:<28} {est['epoch_seconds']:>9.1f} s/epoch  "
                f"{est['run_seconds'] / 3600:>7.2f} h ({config.train.epochs} epochs)",
                flush=True,
            )
    result["configs"] = times
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
