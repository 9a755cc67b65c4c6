"""What trajectory recording costs an epoch of the default digits run, in one run.

Times one epoch (training, test evaluation, the recorders' ``after_epoch``) of the default config
(digits, 64-256-10 loop network, Euler eps 0.5, 20 free + 4 clamped steps) in three ways:

- ``before``: the epoch as it was before recorders existed (``train_epoch`` without recorders);
- ``empty``:  recording off, the run's code path: the recorders ``ctsp.app.build_recorders``
  returns for the default config (an empty list), called after every minibatch and epoch as
  ``ctsp.runs.fit`` calls them;
- ``on``:     ``--record N``: a ``TrajectoryRecorder`` records N test samples after the epoch and
  writes ``trajectories.nc`` (one recording, as at the end of a run).

Each variant has its own trainer from the same seed and goes through the same epochs; the
variants take turns (in rotating order) and each time is the median over the repeats. Prints the
times and the ratios to ``before``; the target is empty/before = 1.00 within noise.

    python benchmarks/recording.py                  # 15 repeats, N = 10
    python benchmarks/recording.py --repeats 30 --record 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from analysis.recording import TrajectoryRecorder
from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import build_layered_network, build_recorders
from ctsp.continuous import Trainer
from ctsp.runs import files, machine_line


def epoch(trainer: Trainer, data, k: int, recorders, path: Path) -> float:
    """One epoch as ``ctsp.runs.fit`` runs it (no metrics or checkpoint files); returns the
    seconds spent in the recorders' ``after_epoch``."""
    if recorders is None:
        trainer.train_epoch(data, k)
        trainer.evaluate(data.test_x, data.test_y)
        return 0.0

    def on_batch(e: int, b: int) -> None:
        for r in recorders:
            r.after_batch(trainer, e, b)

    trainer.train_epoch(data, k, None, on_batch if recorders else None)
    trainer.evaluate(data.test_x, data.test_y)
    t0 = time.perf_counter()
    for r in recorders:
        r.after_epoch(trainer, k + 1, path, last=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed epochs per variant")
    ap.add_argument("--record", type=int, default=10, help="samples recorded when on")
    args = ap.parse_args()
    off = cfg.RunConfig()
    on = cfg.with_overrides(off, [(["record", "trajectories"], args.record)])
    data = datasets.load("digits")
    n = data.train_x.shape[0]
    trainers = {
        name: Trainer(build_layered_network(off), off, torch.device("cpu"), n)
        for name in ("before", "empty", "on")
    }
    print(f"machine: {machine_line()}")
    print(
        f"default digits config: {n} training examples in minibatches of "
        f"{off.train.batch_size}, test {data.test_x.shape[0]}; recording on: {args.record} "
        f"samples; {args.repeats} repeats"
    )
    times: dict[str, list[float]] = {name: [] for name in trainers}
    recording: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        for name, trainer in trainers.items():  # warm-up (numba, first allocations)
            epoch(trainer, data, 0, None if name == "before" else [], path)
        names = list(trainers)
        for k in range(1, args.repeats + 1):
            for name in names[k % 3 :] + names[: k % 3]:
                recorders = {
                    "before": None,
                    "empty": build_recorders(off, data),
                    "on": [TrajectoryRecorder(on, data)],
                }[name]
                t0 = time.perf_counter()
                spent = epoch(trainers[name], data, k, recorders, path)
                times[name].append(time.perf_counter() - t0)
                if name == "on":
                    recording.append(spent)
        size = (path / files.TRAJECTORIES).stat().st_size
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'variant':<8} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for name, t in times.items():
        print(f"{name:<8} {med[name]:>9.3f} {min(t):>7.3f} {med[name] / med['before']:>6.3f}")
    print(
        f"empty/before {med['empty'] / med['before']:.3f}   on/before "
        f"{med['on'] / med['before']:.3f}"
    )
    print(
        f"recording alone (after_epoch: both phases of {args.record} samples, trajectories.nc "
        f"of {size / 1e3:.0f} kB): median {statistics.median(recording) * 1e3:.1f} ms, "
        f"min {min(recording) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
