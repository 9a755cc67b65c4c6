"""Record free/nudged rates of a trained loop network, for ``benchmarks/chl.py --rates``.

Trains the bundled ``fmnist-2x1500`` network (784-1500-1500-10, loop-back) on Fashion-MNIST for
``--batches`` minibatches, then runs the free and clamped phases (no update) on ``--record``
further training examples and saves, for each projection k in the network's edge order
(input, ff1, ff2, loop), ``pre_k`` (N, n_pre), ``free_k`` and ``nudged_k`` (N, n_post).

    python benchmarks/record_rates.py --batches 1000 --out /tmp/rates.npz
    python benchmarks/chl.py --rates /tmp/rates.npz
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import build_layered_network
from ctsp.continuous import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="fmnist-2x1500")
    ap.add_argument("--batches", type=int, default=1000, help="training minibatches first")
    ap.add_argument("--record", type=int, default=100, help="examples to record")
    ap.add_argument("--out", default="rates.npz")
    args = ap.parse_args()
    config = cfg.load(args.config)
    data = datasets.load(config.data.name, data_dir=config.data.dir or None)
    net = build_layered_network(config)
    trainer = Trainer(net, config, torch.device("cpu"), data.train_x.shape[0])
    bs = config.train.batch_size
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in range(args.batches):
            idx = torch.arange(k * bs, (k + 1) * bs) % data.train_x.shape[0]
            trainer.learn(data.train_x[idx], data.train_y[idx], idx, 1.0)
        start = args.batches * bs
        idx = torch.arange(start, start + args.record) % data.train_x.shape[0]
        x = data.train_x[idx]
        ph = trainer.phases(x, data.train_y[idx], idx, 1.0)
    arrays = {}
    for k, e in enumerate(net.edges):
        dst = net.populations[e.dst]
        pre = x.flatten(1) if e.src < 0 else ph.free_rates[:, net.populations[e.src]]
        arrays[f"pre_{k}"] = pre.numpy()
        arrays[f"free_{k}"] = ph.base_rates[:, dst].numpy()
        arrays[f"nudged_{k}"] = ph.nudged_rates[:, dst].numpy()
        diff = arrays[f"nudged_{k}"] - arrays[f"free_{k}"]
        print(f"{e.name:>6}: nonzero rate differences {np.count_nonzero(diff) / diff.size:.3f}")
    np.savez(args.out, **arrays)
    print(
        f"trained {args.batches} minibatches in {time.perf_counter() - t0:.0f} s; "
        f"recorded {args.record} examples to {args.out}"
    )


if __name__ == "__main__":
    main()
