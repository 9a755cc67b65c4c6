"""Milliseconds per training minibatch, each contender timed round by round in one run (the
machine is noisy: read the ratios), median over the rounds.

Two parts (``--part``):

- ``discrete``: for each bundled ``ctsp train`` config (default vgg8b-fmnist, conv-cifar10,
  fc-3x1000-fmnist, snn-fmnist-sp-voltage), on random input of the dataset's shape: sigprop in
  float32 and in bfloat16, plain end-to-end BP (``train.rule = "bp"``) of the same network in
  both, and, for networks with convolutions, sigprop float32 with contiguous (NCHW) maps instead
  of ctsp's channels-last ones. One minibatch = ``DiscreteTrainer``'s step
  (``learner.train_batch`` under the trainer's autocast).
- ``ct``: the continuous-time minibatch of fmnist-2x1500 (free phase, clamped phase, the CHL
  updates of Eq. 14) by ``ctsp.continuous.Trainer.train_batch`` against a plain hand-written
  torch loop of the same matrix products (Jacobi Euler steps or block sweeps over the
  populations, ``addmm_`` updates), at batch 20 and 100, for Euler (``--euler-steps`` free and
  clamped steps, no early stop) and "steady" (``--sweeps`` sweeps per phase, no early stop).

``--busy`` adds, for every contender, rounds with a busy process beside the run (one Python
loop, paused with SIGSTOP in the quiet rounds, resumed with SIGCONT in the busy ones, so that
quiet and busy rounds interleave). ``--threads N`` sets torch's and numba's threads
(``ctsp.runs.cpu_threads``; default: torch's). Like the ``ctsp`` command, the script lets idle
OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, ``ctsp.cli.passive_openmp_wait``) unless a
wait policy is set: ``GOMP_SPINCOUNT=300000`` gives GNU OpenMP's own default (spinning).

    python benchmarks/step.py --part ct --busy
    python benchmarks/step.py --part discrete --configs fc-3x1000-fmnist --rounds 5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from ctsp.cli import passive_openmp_wait

passive_openmp_wait()  # as the ctsp command does, before torch loads its OpenMP runtime

import torch  # noqa: E402

from ctsp import config as cfg  # noqa: E402
from ctsp.app import build_layered_network  # noqa: E402
from ctsp.config import make_learner  # noqa: E402
from ctsp.continuous import Trainer  # noqa: E402
from ctsp.discrete import DiscreteTrainer  # noqa: E402
from ctsp.runs import cpu_threads, machine_line  # noqa: E402
from models import build_discrete_network  # noqa: E402

CPU = torch.device("cpu")
SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class Busy:
    """A busy process beside the run: ``on()`` resumes it, ``off()`` pauses it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self.off()

    def on(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        time.sleep(0.05)

    def off(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def timed(contenders: dict, rounds: int, busy: Busy | None) -> dict[str, list[float]]:
    """Seconds per call of every contender, round by round (each called once untimed first);
    with ``busy``, every contender also runs ``name + " (busy)"`` in the same rounds."""
    for run in contenders.values():
        run()
    modes = [False, True] if busy is not None else [False]
    times = {f"{n} (busy)" if b else n: [] for n in contenders for b in modes}
    for _ in range(rounds):
        for name, run in contenders.items():
            for b in modes:
                if busy is not None:
                    busy.on() if b else busy.off()
                t0 = time.perf_counter()
                run()
                times[f"{name} (busy)" if b else name].append(time.perf_counter() - t0)
    if busy is not None:
        busy.off()
    return times


def report(title: str, times: dict[str, list[float]], reference: str) -> None:
    ref = statistics.median(times[reference])
    print(f"\n{title}")
    print(f"| contender | ms per minibatch (median) | min | vs {reference} |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {1e3 * med:.1f} | {1e3 * min(ts):.1f} | {med / ref:.2f}x |")


# --- discrete and spiking networks ---------------------------------------------------------------


def discrete_step(name: str, batch: int | None, rule: str, precision: str, contiguous: bool):
    """A callable that trains one minibatch of random input of ``name``'s shape."""
    c = cfg.load(name, cfg.DiscreteRunConfig)
    sets = [(["train", "rule"], rule), (["train", "precision"], precision)]
    if rule == "bp" and c.model.arch == "snn":  # BP of a spiking network: surrogate spikes
        sets.append((["model", "spike_loss"], "surrogate"))
    c = cfg.with_overrides(c, sets)
    shape = SHAPES[c.data.name]
    net = build_discrete_network(c, shape, 10)
    trainer = DiscreteTrainer(net, make_learner(net, c), c, CPU)
    if contiguous:
        net.to(memory_format=torch.contiguous_format)
        trainer.channels_last = False
    gen = torch.Generator().manual_seed(0)
    b = batch or c.train.batch_size
    x = trainer.inputs(torch.rand((b, *shape), generator=gen))
    y = torch.randint(0, 10, (b,), generator=gen)
    net.train()

    def run() -> None:
        with trainer.autocast():
            trainer.learner.train_batch(x, y)

    return run, trainer.channels_last


def discrete_part(args, busy) -> None:
    for name in args.configs:
        contenders = {}
        for rule in ("sigprop", "bp"):
            for precision in ("float32", "bfloat16"):
                run, conv = discrete_step(name, args.batch, rule, precision, False)
                contenders[f"{rule} {precision}{' channels-last' if conv else ''}"] = run
        if conv:
            contenders["sigprop float32 NCHW"] = discrete_step(
                name, args.batch, "sigprop", "float32", True
            )[0]
        times = timed(contenders, args.rounds, busy)
        batch = args.batch or cfg.load(name, cfg.DiscreteRunConfig).train.batch_size
        report(f"{name}, batch {batch}", times, next(iter(contenders)))


# --- the continuous-time minibatch -------------------------------------------------------------


def ct_config(method: str, batch: int, steps: int, sweeps: int):
    c = cfg.load("fmnist-2x1500")
    step = c.solver.step
    sets = {
        "solver.method": method,
        "solver.tol": 0.0,  # a fixed amount of work: no early stop
        "solver.max_sweeps": sweeps,
        "solver.free_duration": steps * step,
        "solver.clamped_duration": max(1, steps // 5) * step,
        "train.batch_size": batch,
    }
    return cfg.with_overrides(c, [(k.split("."), v) for k, v in sets.items()])


def hand_loop(net, config, lrs: dict, method: str, steps: int, sweeps: int):
    """The same minibatch as plain torch: the matrix products of the phases, then Eq. 14 by
    ``addmm_`` (hard sigmoid within its bounds: rho(s) = s; tau = 1). ``lrs``: the learning
    rate of every projection, as the trainer has them."""
    pops = range(len(net.populations))
    edges = [(e.src, e.dst, net.projections[e.name].weight) for e in net.edges if e.src >= 0]
    w_in = net.projections["input"].weight
    learns = [
        (e.src, e.dst, net.projections[e.name].weight, lrs[e.name], e.owns_bias)
        for e in net.edges
        if net.projections[e.name].trainable and lrs[e.name] > 0
    ]
    beta, dt = config.train.beta, config.solver.step
    clamped_steps = max(1, steps // 5)

    def bias(i0, k):
        return i0 if k == 0 else net.biases[k].expand(i0.shape[0], -1)

    def currents(i0, s):
        cur = [bias(i0, k) for k in pops]
        for src, dst, w in edges:
            cur[dst] = torch.addmm(cur[dst], s[src], w.T)
        return cur

    def euler(i0, s, target, n):
        for _ in range(n):
            cur = currents(i0, s)
            new = []
            for k in pops:
                ds = cur[k] - s[k]
                if target is not None and k == len(s) - 1:
                    ds = ds - beta * (s[k] - target)
                new.append((s[k] + dt * ds).clamp_(0, 1))
            s = new
        return s

    def sweep(i0, s, target, n):
        s = list(s)
        for _ in range(n):
            for k in pops:
                cur = bias(i0, k)
                for src, dst, w in edges:
                    if dst == k:
                        cur = torch.addmm(cur, s[src], w.T)
                if target is not None and k == len(s) - 1:
                    cur = (cur + beta * target) / (1 + beta)
                s[k] = cur.clamp_(0, 1)
        return s

    relax = euler if method == "euler" else sweep
    n_free, n_clamped = (steps, clamped_steps) if method == "euler" else (sweeps, sweeps)

    def run(x, y) -> None:
        b = x.shape[0]
        s0 = [x.new_zeros(b, n) for n in net.sizes[1:]]
        i0 = torch.addmm(net.biases[0], x, w_in.T)  # the input current, once per minibatch
        free = relax(i0, s0, None, n_free)
        target = torch.nn.functional.one_hot(y, net.sizes[-1]).to(x.dtype)
        nudged = relax(i0, free, target, n_clamped)
        for src, dst, w, lr, owns_bias in learns:
            diff = nudged[dst] - free[dst]
            scale = lr / (beta * b)
            w.addmm_(diff.T, x if src < 0 else free[src], alpha=scale)
            if owns_bias:
                net.biases[dst].add_(diff.sum(0), alpha=scale)

    return run


def ct_part(args, busy) -> None:
    for batch in args.ct_batches:
        contenders = {}
        for method in ("euler", "steady"):
            c = ct_config(method, batch, args.euler_steps, args.sweeps)
            gen = torch.Generator().manual_seed(0)
            x = torch.rand((batch, 784), generator=gen)
            y = torch.randint(0, 10, (batch,), generator=gen)
            idx = torch.arange(batch)
            net = build_layered_network(c)
            trainer = Trainer(net, c, CPU, batch)
            contenders[f"ctsp {method}"] = lambda t=trainer, x=x, y=y, i=idx: t.learn(x, y, i, 1.0)
            lrs = {k: v * trainer.lr_scale for k, v in trainer.lr.items()}
            hand = hand_loop(
                build_layered_network(c), c, lrs, method, args.euler_steps, args.sweeps
            )
            contenders[f"hand {method}"] = lambda h=hand, x=x, y=y: h(x, y)
        with torch.no_grad():
            times = timed(contenders, args.rounds, busy)
        work = f"Euler {args.euler_steps}+{max(1, args.euler_steps // 5)} steps"
        report(
            f"fmnist-2x1500, batch {batch} ({work}; {args.sweeps}+{args.sweeps} sweeps)",
            times,
            "hand euler",
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("discrete", "ct", "all"), default="all")
    p.add_argument(
        "--configs",
        nargs="+",
        default=["vgg8b-fmnist", "conv-cifar10", "fc-3x1000-fmnist", "snn-fmnist-sp-voltage"],
    )
    p.add_argument("--batch", type=int, help="discrete minibatch size (default: the config's)")
    p.add_argument("--ct-batches", type=int, nargs="+", default=[20, 100])
    p.add_argument("--euler-steps", type=int, default=30, help="free-phase Euler steps")
    p.add_argument("--sweeps", type=int, default=5, help="steady sweeps per phase")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--busy", action="store_true", help="also time with a busy core beside")
    args = p.parse_args(argv)
    busy = Busy() if args.busy else None
    try:
        with cpu_threads(args.threads):
            print(machine_line())
            if args.part in ("ct", "all"):
                ct_part(args, busy)
            if args.part in ("discrete", "all"):
                discrete_part(args, busy)
    finally:
        if busy is not None:
            busy.close()


if __name__ == "__main__":
    main()
