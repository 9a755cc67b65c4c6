"""Samples per second of parallel training on this machine, each case a world of local processes
(gloo, 127.0.0.1), round by round in one run (the machine is noisy: read the ratios), with the
performance model's prediction (``analysis.parallel``) beside each.

For each config (default ``fc-3x1000-fmnist`` and ``vgg8b-fmnist``, on the first
``--batches`` x batch Fashion-MNIST training images, by default 32 x 128 for FC and 6 x 32 for
VGG8b; ``--batch`` sets the batch) and each case:

- ``1 x 2 threads`` / ``1 x 1 thread``: one process (sigprop);
- ``2 stages x 1``: a layer pipeline of two processes of one thread each (``parallel.stages``);
- ``2 replicas x 1``: two data-parallel replicas of one thread each (``parallel.replicas``);
- ``BP 1 x 1`` / ``BP 2 replicas x 1``: end-to-end backprop of the same network.

A case trains two epochs of those images through ``DiscreteTrainer.train_epoch`` on its
backend (``ctsp.app.training_backend``, as ``ctsp train`` does); the second epoch is timed on
rank 0, the first warms up. The model takes the per-layer times of one process and one thread
(``analysis.efficiency.measure``, medians, at the batch and at the replicas' half batch, scaled
so that the layers add up to the measured step), the bytes each layer passes on, the state
and gradient sizes, and a gloo link measured here (latency from 1 kB round trips, bandwidth
from 16 MB ones, typed messages as the pipeline sends them); and the 0.55 MB carry of FC 3x1000
pickled (``send_object_list``, as ctsp sent it before issue 28) against a typed message.

    python benchmarks/parallel.py                       # both configs, 2 rounds (25 min here)
    python benchmarks/parallel.py --configs fc-3x1000-fmnist --rounds 3 --out /tmp/parallel.md
    python benchmarks/parallel.py --project vgg8b-cifar10      # the model's GPU projection

``--project CONFIG`` only computes: the model with assumed GPU numbers (``GPU_FLOPS``,
``GPU_LINK``) for 1, 2, 4 and 8 GPUs and 391 minibatches an epoch (CIFAR-10 at batch 128),
clearly a projection.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from ctsp.cli import passive_openmp_wait

passive_openmp_wait()  # as the ctsp command does, before torch loads its OpenMP runtime

import torch  # noqa: E402
from torch import distributed as dist  # noqa: E402

from analysis import Link, measure_efficiency, pipeline_seconds, replica_seconds  # noqa: E402
from ctsp import config as cfg  # noqa: E402
from ctsp import data as datasets  # noqa: E402
from ctsp.app import training_backend  # noqa: E402
from ctsp.config import make_learner  # noqa: E402
from ctsp.discrete import DiscreteTrainer  # noqa: E402
from ctsp.nn import StaticNeuron  # noqa: E402
from ctsp.parallel import Batch, Output, Stop, World, process_group, split_layers  # noqa: E402
from ctsp.runs import cpu_threads, machine_line, write_report  # noqa: E402
from models import build_discrete_network  # noqa: E402

CPU = torch.device("cpu")
# name: (rule, stages, replicas, threads)
CASES = {
    "1 x 2 threads": ("sigprop", 1, 1, 2),
    "1 x 1 thread": ("sigprop", 1, 1, 1),
    "2 stages x 1": ("sigprop", 2, 1, 1),
    "2 replicas x 1": ("sigprop", 1, 2, 1),
    "BP 1 x 1": ("bp", 1, 1, 1),
    "BP 2 replicas x 1": ("bp", 1, 2, 1),
}
MODELLED = ("1 x 1 thread", "2 replicas x 1")
DEFAULT_BATCH = {"vgg8b-fmnist": 32}  # VGG8b: a few seconds a minibatch on a 2-core CPU
DEFAULT_BATCHES = {"vgg8b-fmnist": 6}  # minibatches an epoch (others: 32)


def case_config(name: str, rule: str, stages: int, replicas: int, threads: int, batch: int):
    base = cfg.load(name, cfg.DiscreteRunConfig)
    return cfg.with_overrides(
        base,
        [
            (["train", "rule"], rule),
            (["parallel", "stages"], stages),
            (["parallel", "replicas"], replicas),
            (["threads"], threads),
            (["train", "batch_size"], batch),
            (["model", "dropout"], 0.0),
        ],
    )


def images(config, batches: int) -> datasets.Dataset:
    data = datasets.load(config.data.name, data_dir=config.data.dir or None)
    n = batches * config.train.batch_size
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


def worker(name: str, case: str, batch: int, batches: int) -> None:
    """One process of a case (rank from the environment); rank 0 prints the epochs' seconds."""
    rule, stages, replicas, threads = CASES[case]
    config = case_config(name, rule, stages, replicas, threads, batch)
    data = images(config, batches)
    group = process_group(World.from_environment(), stages * replicas, CPU)
    with group as transport, cpu_threads(threads):
        torch.manual_seed(config.seed)
        net = build_discrete_network(config, data.image_shape, data.classes)
        trainer = DiscreteTrainer(net, make_learner(net, config), config, CPU)
        backend = training_backend(trainer, transport, data.image_shape)
        if transport is not None and transport.rank > 0:
            backend.serve(trainer, data)
            return
        trainer.backend = backend
        seconds = []
        for epoch in (0, 1):
            t0 = time.perf_counter()
            trainer.train_epoch(data, epoch)
            seconds.append(time.perf_counter() - t0)
        backend.stop()
    print(json.dumps({"seconds": seconds}))


STREAM_ROUNDS = 9


def _round_trip(rank: int, rounds: int, send, recv) -> float:
    """Median seconds of one way (half a round trip between ranks 0 and 1; the first round
    left out)."""
    spent = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        if rank == 0:
            send(1)
            recv(1)
        else:
            recv(0)
            send(0)
        spent.append((time.perf_counter() - t0) / 2)
    return statistics.median(spent[1:])


def _stream(rank: int, count: int, send, recv) -> float:
    """Seconds per message of ``count`` messages sent from rank 0 to rank 1 one after the
    other, as a pipeline sends its carries (rank 1 answers once, at the end), median of
    :data:`STREAM_ROUNDS` (a first round warms up)."""
    spent = []
    for _ in range(STREAM_ROUNDS + 1):
        t0 = time.perf_counter()
        for _ in range(count):
            send(1) if rank == 0 else recv(0)
        recv(1) if rank == 0 else send(0)
        spent.append((time.perf_counter() - t0) / count)
    return statistics.median(spent[1:])


def _typed_stream(transport, count: int, message) -> float:
    """:func:`_stream` of typed messages, the receiver keeping its next receive posted as a
    pipeline stage does (``Transport.expect``); the answer is a small message."""
    spent = []
    for _ in range(STREAM_ROUNDS + 1):
        t0 = time.perf_counter()
        if transport.rank == 0:
            for _ in range(count):
                transport.send(message, 1)
            transport.recv(1)
        else:
            for k in range(count):
                transport.recv(0)
                if k < count - 1:
                    transport.expect(0)
            transport.send(Stop(), 0)
        spent.append((time.perf_counter() - t0) / count)
    return statistics.median(spent[1:])


def _pickled(value):
    """(send, recv) of ``value`` through ``send_object_list`` (pickled), as ctsp sent every
    message until issue 28."""

    def send(dst):
        dist.send_object_list([value], dst=dst)

    def recv(src):
        box = [None]
        dist.recv_object_list(box, src=src)
        return box[0]

    return send, recv


def _typed(transport, message):
    """(send, recv) of ``message`` through the run's transport (typed, as ctsp sends)."""
    return (lambda dst: transport.send(message, dst)), transport.recv


def link_worker(rounds: int) -> None:
    """Rank 0 and 1: round trips of 1 kB and 16 MB typed messages through the transport (the
    link the model uses), and a stream of carries of FC 3x1000 at batch 128 (h 128 x 1000,
    t 10 x 1000 float32 and the labels: 0.55 MB) both ways: pickled through
    ``send_object_list`` as before issue 28, and as typed :class:`ctsp.parallel.Batch`
    messages. Rank 0 prints the seconds."""
    carry = (torch.randn(128, 1000), torch.randn(10, 1000))
    labels = torch.randint(0, 10, (128,))
    with process_group(World.from_environment(), 2, CPU) as transport, cpu_threads(1):
        rank = transport.rank
        times = {
            n: _round_trip(rank, rounds, *_typed(transport, Output(torch.zeros(n // 4))))
            for n in (1000, 16_000_000)
        }
        pickled = _stream(rank, 32, *_pickled(("batch", carry, labels)))
        typed = _typed_stream(transport, 32, Batch(carry, labels))
        transport.flush()
    if rank == 0:
        latency = times[1000]
        print(
            json.dumps(
                {
                    "latency": latency,
                    "bandwidth": 16e6 / (times[16_000_000] - latency),
                    "carry_pickled": pickled,
                    "carry_typed": typed,
                }
            )
        )


def world(args: list[str], size: int, timeout: float = 1800) -> dict:
    """Run ``benchmarks/parallel.py *args`` as ``size`` local processes; rank 0's JSON line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(size)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *args],
            env={**os.environ, **env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(size)
    ]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a process of {args} failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def layer_seconds(config, data, batch: int) -> tuple[list[float], float]:
    """Per-layer seconds of one minibatch (one thread, the target pass in the first layer's,
    scaled so that they add up to the measured step) and the step's seconds."""
    c = cfg.with_overrides(config, [(["train", "batch_size"], batch)])
    with cpu_threads(1):
        rows = measure_efficiency(c, data=data, repeats=3, warmup=1)
    total = next(r for r in rows if r["layer"] == "total")["time_us"] * batch * 1e-6
    parts = {r["layer"]: r["time_us"] * batch * 1e-6 for r in rows if r["layer"] != "total"}
    names = [r["layer"] for r in rows if r["layer"] not in ("total", "target", "update")]
    per = [parts[n] for n in names]
    per[0] += parts.get("target", 0.0)
    per[-1] += parts.get("update", 0.0)
    scale = total / sum(per)
    return [t * scale for t in per], total


def carries_and_norms(net, shape: tuple[int, ...], batch: int) -> tuple[list[int], int]:
    """The bytes each layer passes on (its h and t in float32, a minibatch of ``batch``
    images of ``shape``) and the number of batch-norm layers."""
    net.eval()
    with torch.no_grad():
        carry = [
            4 * (h.numel() + (0 if t is None else t.numel()))
            for h, t in net.pairs(torch.zeros(batch, *shape))
        ]
    norms = sum(1 for m in net.modules() if isinstance(m, StaticNeuron) and m.batch_norm)
    return carry, norms


def model(name: str, batch: int, batches: int, link: Link) -> dict:
    """The model's seconds per (timed) epoch of every case."""
    out = {}
    for rule in ("sigprop", "bp"):
        config = case_config(name, rule, 1, 1, 1, batch)
        data = images(config, batches)
        net = build_discrete_network(config, data.image_shape, data.classes)
        learner = make_learner(net, config)
        carry, norms = carries_and_norms(net, data.image_shape, batch)
        full, step = layer_seconds(config, data, batch)
        _, half = layer_seconds(config, data, batch // 2)
        if rule == "sigprop":
            step_bytes = [4 * sum(p.numel() for p in learner.rules[n].params) for n in net.names]
        else:
            step_bytes = [4 * sum(p.numel() for p in net.parameters())]
        one, two = ("BP 1 x 1", "BP 2 replicas x 1") if rule == "bp" else MODELLED
        out[one] = batches * step
        out[two] = replica_seconds(half, step_bytes, norms, link, 2, batches)
        if rule == "sigprop":
            splits = split_layers(net.multiply_adds(data.image_shape, batch), 2)
            state = sum(v.numel() * v.element_size() for v in net.state_dict().values())
            state += 2 * 4 * sum(p.numel() for p in net.parameters())  # Adam's two moments
            out["2 stages x 1"] = pipeline_seconds(full, carry, splits, link, batches, state)
    return out


# the projection's assumptions (not measured): one GPU's sustained rate on VGG8b's layers and an
# NVLink-class link between GPUs
GPU_FLOPS = (50e12, 200e12)  # multiply-adds x 2 x 3 (forward, backward, update) per second
GPU_LINK = Link(latency=10e-6, bandwidth=100e9)


def projection(name: str, gpus: tuple[int, ...], batches: int) -> list[str]:
    """Projected speedups of a layer pipeline and of data-parallel replicas over ``gpus`` GPUs
    (for each rate of ``GPU_FLOPS``, with ``GPU_LINK``; per-layer time from the multiply-adds;
    the replicas' shards assumed to run at the same rate as the whole batch)."""
    config = cfg.load(name, cfg.DiscreteRunConfig)
    shape = (3, 32, 32) if config.data.name == "cifar10" else (1, 28, 28)
    batch = config.train.batch_size
    net = build_discrete_network(config, shape, 10)
    learner = make_learner(net, config)
    macs = net.multiply_adds(shape, batch)
    carry, norms = carries_and_norms(net, shape, batch)
    step_bytes = [4 * sum(p.numel() for p in learner.rules[n].params) for n in net.names]
    rates = " and ".join(f"{f / 1e12:.0f}" for f in GPU_FLOPS)
    lines = [
        f"Projection (not measured) for {name}, batch {batch}, {batches} minibatches an epoch: "
        f"one GPU at {rates} TFLOP/s sustained (6 x multiply-adds per sample and layer), a "
        f"link of {GPU_LINK.latency * 1e6:.0f} µs per message and "
        f"{GPU_LINK.bandwidth / 1e9:.0f} GB/s, float32 messages, nothing overlapped (as ctsp "
        "does it); stages split by multiply-adds (`split_layers`), replicas' shards at the "
        "whole batch's rate. Layer shares of the multiply-adds: "
        + ", ".join(f"{n} {m / sum(macs):.0%}" for n, m in zip(net.names, macs, strict=True))
        + ".",
        "",
        "| GPUs | pipeline stages | "
        + " | ".join(
            f"pipeline, {f / 1e12:.0f} TFLOP/s | replicas, {f / 1e12:.0f} TFLOP/s"
            for f in GPU_FLOPS
        )
        + " |",
        "|---|---|" + "---|---|" * len(GPU_FLOPS),
    ]
    for g in gpus:
        splits = split_layers(macs, min(g, len(macs)))
        row = [str(g), "; ".join(f"{net.names[a]}-{net.names[b - 1]}" for a, b in splits)]
        for flops in GPU_FLOPS:
            layer = [6 * m / flops for m in macs]
            one = batches * sum(layer)
            pipe = pipeline_seconds(layer, carry, splits, GPU_LINK, batches)
            reps = replica_seconds(sum(layer) / g, step_bytes, norms, GPU_LINK, g, batches)
            row += [f"{one / pipe:.2f}", f"{one / reps:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["fc-3x1000-fmnist", "vgg8b-fmnist"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--batches", type=int, default=0, help="minibatches an epoch; 0: 32 (VGG8b: 6)"
    )
    parser.add_argument("--batch", type=int, default=0, help="0: the config's (VGG8b: 32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument(
        "--project",
        metavar="CONFIG",
        help="print the projection for 1/2/4/8 GPUs of CONFIG (e.g. vgg8b-cifar10) and stop",
    )
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--link", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.link:
        return link_worker(20)
    if args.worker:
        return worker(*args.worker, args.batch, args.batches)
    if args.project:
        text = "\n".join(projection(args.project, (1, 2, 4, 8), 391)) + "\n"
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        return None

    link_json = world(["--link"], 2)
    link = Link(link_json["latency"], link_json["bandwidth"])
    lines = [
        f"Machine: {machine_line()}. gloo link measured: latency {link.latency * 1e6:.0f} µs, "
        f"bandwidth {link.bandwidth / 1e9:.2f} GB/s (typed messages). The 0.55 MB carry of FC "
        f"3x1000 (batch 128), a stream of 32: {link_json['carry_pickled'] * 1e3:.2f} ms each "
        f"pickled (send_object_list), {link_json['carry_typed'] * 1e3:.2f} ms as typed messages, "
        "the next receive posted "
        f"({link_json['carry_pickled'] / link_json['carry_typed']:.1f}x faster).",
        "",
        "| config | batch | case | samples/s | vs 1 x 1 | model samples/s | model vs 1 x 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.configs:
        default = cfg.load(name, cfg.DiscreteRunConfig).train.batch_size
        batch = args.batch or DEFAULT_BATCH.get(name, default)
        batches = args.batches or DEFAULT_BATCHES.get(name, 32)
        spent = {case: [] for case in args.cases}
        for r in range(args.rounds):
            for case in args.cases:
                _, stages, replicas, _ = CASES[case]
                run = ["--worker", name, case, "--batch", str(batch)]
                seconds = world([*run, "--batches", str(batches)], stages * replicas)
                seconds = seconds["seconds"][1]
                spent[case].append(seconds)
                print(f"{name} round {r + 1}: {case}: {seconds:.2f} s", flush=True)
        predicted = model(name, batch, batches, link)
        samples = batch * batches
        rate = {case: samples / statistics.median(s) for case, s in spent.items()}
        base = rate.get("1 x 1 thread")
        base_model = samples / predicted["1 x 1 thread"]
        for case in args.cases:
            ratio = f"{rate[case] / base:.2f}" if base else ""
            m = samples / predicted[case] if case in predicted else None
            mcol = f"{m:.1f} | {m / base_model:.2f}" if m else " | "
            lines.append(f"| {name} | {batch} | {case} | {rate[case]:.1f} | {ratio} | {mcol} |")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
