"""Time and memory of a training step, per layer and for the whole network, for every learning
rule (paper Tables I-IV: time per sample, maximum memory per batch).

:func:`measure` builds the network of a config once per rule (``train.rule``; the same seed,
so the same initial weights), takes the first ``batch_size`` training examples (the same batch
for every rule, already on the device) and runs the rule's ``train_batch`` on it:

1. ``warmup`` steps, not measured (Adam's state is created at the first step);
2. ``repeats`` whole steps, each timed end to end (no hooks; CUDA synchronised before and
   after);
3. ``repeats`` steps with :class:`Sections` hooks marking which part of the network is at work;
   the wall-clock time between marks is summed per part (CUDA synchronised at every mark);
4. ``repeats`` steps with the same hooks measuring memory: the peak of the bytes allocated
   above the level at the start of the step, while each part ran. CUDA:
   ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at every mark. CPU:
   the torch profiler's memory events (every allocation and free of the CPU allocator, with
   its time, read from the profiler's exported chrome trace) summed in time order between
   ``record_function`` marks; the profiler starts one step before the measured one, so that
   the frees of the previous step's tensors count.

Every number is the median over the repeats. :data:`COUNTED` says what each part contains;
:func:`markdown` writes the rows as tables with that statement.
"""

from __future__ import annotations

import decimal
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch.autograd import DeviceType
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.profiler import ProfilerActivity, profile, record_function

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.config import make_learner
from ctsp.runs import resolve_device
from models import build_discrete_network

TARGET = "target"  # the target generator's forward pass (sigprop)
UPDATE = "update"  # one optimizer step over several layers (BP, FA, DFA)
OTHER = "other"  # the learner's glue outside any layer (part of the total only)
TOTAL = "total"  # the whole train_batch call
MIB = 2**20
_CPU = int(DeviceType.CPU)  # "Device Type" of a memory event in a chrome trace

COUNTED = (
    "What is counted, per training step of one minibatch (the batch already on the device; "
    "medians over the repeats after warm-up steps). A layer's row holds everything the rule "
    "does for that layer: its forward pass (sigprop: input and target path together), its "
    "loss (LL: the auxiliary head, a 3x3 conv and a linear classifier; sigprop: L_pred), its "
    "backward pass (BP, FA: from the gradient's arrival at the layer's output until it "
    "reaches the layer below; DFA: the projection of the output error and the layer's local "
    "backward) and its own optimizer step (sigprop, LL, the classifier of Shallow). "
    "`target`: the forward pass of sigprop's target generator (its backward and update are in "
    "the first layer's row). `update`: one optimizer step over all layers (BP, FA, DFA). "
    "`total`: the whole step, timed without hooks; memory: the step's peak. Time: wall clock "
    "per sample (µs) = section time / batch size. Memory: the peak of the bytes allocated "
    "above the level at the start of the step while that part ran (CUDA: "
    "torch.cuda.max_memory_allocated; CPU: the torch profiler's allocation events). At the "
    "start of a step the parameters, the gradients of the previous step, the optimizer state "
    "and any fixed random matrices are allocated already, so this is what the step needs on "
    "top of them: activations kept for the backward pass, temporaries and gradients not yet "
    "allocated. `persistent`: parameters, buffers, gradients, optimizer state, auxiliary "
    "heads and fixed random matrices (MiB)."
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Sections:
    """Hooks that call ``mark(label)`` whenever a training step moves on to another part of
    the network (a context manager; the hooks are removed on exit).

    Labels: a layer's name when its forward pass starts (forward pre-hook) and when the
    gradient arrives at its output (a tensor hook on every output that requires grad: the
    backward pass through that layer starts); :data:`TARGET` while the target generator runs
    its forward pass (then back to the part before it); :data:`UPDATE` for an optimizer step
    over parameters of several layers (then :data:`OTHER`). A step of an optimizer over one
    layer's parameters (with or without auxiliary parameters) stays in that layer's part.
    Every optimizer that steps is added to ``optimizers`` (when given).
    """

    def __init__(self, net, mark: Callable[[str], None], optimizers: list | None = None) -> None:
        self.net, self.mark = net, mark
        self.optimizers = optimizers if optimizers is not None else []
        self.owner = {}
        for name, layer in zip(net.names, net.layers, strict=True):
            self.owner.update({id(p): name for p in layer.parameters()})
        self.owner.update({id(p): net.names[0] for p in net.signal.parameters()})
        self.current, self.before, self.handles = OTHER, [], []

    def go(self, label: str) -> None:
        if label != self.current:
            self.current = label
            self.mark(label)

    def __enter__(self) -> Sections:
        net = self.net
        for name, layer in zip(net.names, net.layers, strict=True):
            self.handles.append(layer.register_forward_pre_hook(self._enter(name)))
            self.handles.append(layer.register_forward_hook(self._watch(name)))
        self.handles += [
            net.signal.register_forward_pre_hook(self._target_pre),
            net.signal.register_forward_hook(self._target_post),
            register_optimizer_step_pre_hook(self._step_pre),
            register_optimizer_step_post_hook(self._step_post),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _enter(self, name: str):
        return lambda module, args: self.go(name)

    def _watch(self, name: str):
        def grad_hook(grad):
            self.go(name)

        def hook(module, args, output):
            for tensor in output if isinstance(output, tuple) else (output,):
                if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                    tensor.register_hook(grad_hook)

        return hook

    def _target_pre(self, module, args, kwargs=None):
        self.before.append(self.current)
        self.go(TARGET)

    def _target_post(self, module, args, output):
        self.go(self.before.pop() if self.before else OTHER)

    def _step_pre(self, optimizer, args, kwargs):
        if optimizer not in self.optimizers:
            self.optimizers.append(optimizer)
        owners = {
            self.owner[id(p)]
            for group in optimizer.param_groups
            for p in group["params"]
            if id(p) in self.owner
        }
        if len(owners) > 1:
            self.go(UPDATE)

    def _step_post(self, optimizer, args, kwargs):
        if self.current == UPDATE:
            self.go(OTHER)


class _Clock:
    """Wall-clock seconds per part (CUDA synchronised at every mark)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.spent = device, defaultdict(float)

    def start(self) -> None:
        _sync(self.device)
        self.current, self.t = OTHER, time.perf_counter()

    def mark(self, label: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.spent[self.current] += now - self.t
        self.current, self.t = label, now

    def stop(self) -> dict[str, float]:
        self.mark(OTHER)
        return dict(self.spent)


class _CudaMemory:
    """Peak bytes allocated above the step's start, per part: max_memory_allocated, reset at
    every mark."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, {}

    def start(self, lead_in: Callable[[], None]) -> None:
        _sync(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base, self.current = torch.cuda.memory_allocated(self.device), OTHER

    def mark(self, label: str) -> None:
        used = torch.cuda.max_memory_allocated(self.device) - self.base
        self.peak[self.current] = max(self.peak.get(self.current, used), used)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.current = label

    def stop(self) -> dict[str, float]:
        self.mark(OTHER)
        return self.peak


class _CpuMemory:
    """Peak bytes allocated above the step's start, per part, from the torch profiler's CPU
    memory events, between ``record_function`` marks named ``PREFIX + label``, both read from
    the trace that ``profile.export_chrome_trace`` writes (:meth:`timeline`, :meth:`peaks`).

    The profiler reports no free of a block allocated before it started, so it starts one
    step early (``lead_in``, not measured): the tensors a step frees (the previous step's
    gradients, say) were then allocated under the profiler and their frees count."""

    PREFIX = "ctsp.efficiency:"

    def start(self, lead_in: Callable[[], None]) -> None:
        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.prof.__enter__()
        lead_in()
        self.mark(OTHER)

    def mark(self, label: str) -> None:
        with record_function(self.PREFIX + label):
            pass

    def stop(self) -> dict[str, float]:
        self.mark(self.PREFIX)  # the end (a label no part has)
        self.prof.__exit__(None, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            self.prof.export_chrome_trace(path)
            with open(path, encoding="utf-8") as f:
                trace = json.load(f, parse_float=decimal.Decimal)
        return self.peaks(self.timeline(trace["traceEvents"]))

    @classmethod
    def timeline(cls, trace_events: list[dict]) -> list[tuple[int, int, str | None, int]]:
        """The marks and the CPU allocator's memory events of a chrome trace (as
        ``profile.export_chrome_trace`` writes it), as ``(ns, kind, label, nbytes)`` in time
        order: kind 0 a mark (``label`` without the prefix), kind 1 an allocation (``nbytes``
        > 0) or a free (< 0); a mark comes before a memory event at the same time.

        The trace has every memory event of the profiler on its own (an instant event
        ``[memory]`` with ``Bytes`` and ``Device Type``), while ``profile.events()`` only has
        the sum of those inside each op, which hides the peaks within an op."""
        events = []
        for e in trace_events:
            name, ts = e.get("name", ""), e.get("ts")
            if ts is None:
                continue
            ns = int(decimal.Decimal(ts) * 1000)  # microseconds with three decimals
            if name == "[memory]":
                args = e.get("args", {})
                if args.get("Device Type") == _CPU:
                    events.append((ns, 1, None, int(args["Bytes"])))
            elif name.startswith(cls.PREFIX) and e.get("ph") == "X":
                events.append((ns, 0, name[len(cls.PREFIX) :], 0))
        if not any(kind == 1 for _, kind, _, _ in events):
            raise RuntimeError("the profiler's trace has no CPU memory events (is kineto there?)")
        events.sort(key=lambda ev: ev[:2])
        return events

    @classmethod
    def peaks(cls, events: list[tuple[int, int, str | None, int]]) -> dict[str, float]:
        """Peak bytes above the level at the first mark, per label, from a :meth:`timeline`:
        the running sum of the memory events, taken after every event while that label's
        part runs (from its mark to the next)."""
        level, base, current, peak = 0, None, None, {}
        for _, kind, label, nbytes in events:
            if kind == 0:
                if base is None:
                    base = level
                current = None if label == cls.PREFIX else label
            else:
                level += nbytes
            if current is not None and base is not None:
                peak[current] = max(peak.get(current, level - base), level - base)
        return peak


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def persistent_bytes(net, learner, optimizers: Sequence[torch.optim.Optimizer]) -> int:
    """Parameters, buffers, gradients, optimizer state (with auxiliary heads' parameters) and
    the learner's fixed random matrices, each storage counted once."""
    tensors = [*net.parameters(), *net.buffers(), *getattr(learner, "fixed", [])]
    for p in net.parameters():
        tensors.append(p.grad)
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                tensors += [p, p.grad, *opt.state.get(p, {}).values()]
    return _tensor_bytes(tensors)


def measure(
    config: cfg.DiscreteRunConfig,
    rules: Sequence[str] | None = None,
    *,
    data: datasets.Dataset | None = None,
    batch_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str | None = None,
    run: str | None = None,
) -> list[dict]:
    """Time per sample and peak memory per batch of one training step, per layer and in total,
    for every rule in ``rules`` (default: ``config.train.rule``) on the network of ``config``.

    Args:
        config: the run config (model, signal, seed; ``train.rule`` is replaced by each rule).
        rules: learning rule names (``ctsp.discrete.RULES``; snn: ``ctsp.spiking.RULES``).
        data: the dataset (default: ``config.data``); its first ``batch_size`` training
            examples are the batch of every rule.
        batch_size: default ``config.train.batch_size``.
        repeats: measured steps per quantity (medians); ``warmup`` (>= 1) steps before.
        device: default ``config.device``.
        run: the ``run`` field of the rows (default: the rule's name), to tell apart
            measurements of one rule under different configs.

    Returns: rows (dicts) with ``run``, ``rule``, ``layer`` (a layer name, :data:`TARGET`,
    :data:`UPDATE` or :data:`TOTAL`), ``time_us`` (per sample), ``memory_mib`` (peak per
    batch), ``persistent_mib`` (the total row only, else None), ``device``, ``batch``,
    ``arch``. Every rule has one row per layer of the network, in order, then its
    target/update rows where it has them, then the total.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError("measure needs warmup >= 1 and repeats >= 1")
    rules = tuple(rules or (config.train.rule,))
    dev = resolve_device(device or config.device)
    if data is None:
        data = datasets.load(config.data.name, data_dir=config.data.dir or None)
    b = batch_size or config.train.batch_size
    x, y = data.train_x[:b].to(dev), data.train_y[:b].to(dev)
    rows = []
    for rule in rules:
        c = cfg.with_overrides(config, [(["train", "rule"], rule)])
        rows += _measure_rule(c, data, x, y, dev, repeats, warmup, run or rule)
    return rows


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _measure_rule(config, data, x, y, device, repeats, warmup, run) -> list[dict]:
    net = build_discrete_network(config, data.image_shape, data.classes).to(device)
    learner = make_learner(net, config)
    net.train()
    torch.manual_seed(config.seed)

    def step() -> None:
        learner.train_batch(x, y)

    optimizers: list = []
    with Sections(net, lambda label: None, optimizers):
        for _ in range(warmup):
            step()
    totals, spent, peaks = [], [], []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        totals.append(time.perf_counter() - t0)
    for _ in range(repeats):
        clock = _Clock(device)
        clock.start()
        with Sections(net, clock.mark):
            step()
        spent.append(clock.stop())
    for _ in range(repeats):
        meter = _CudaMemory(device) if device.type == "cuda" else _CpuMemory()
        meter.start(lead_in=step)
        with Sections(net, meter.mark):
            step()
        peaks.append(meter.stop())

    b = x.shape[0]
    common = {"run": run, "rule": config.train.rule, "device": str(device), "batch": b}
    common["arch"] = config.model.arch
    labels = [*net.names, *(e for e in (TARGET, UPDATE) if any(e in s for s in spent))]
    rows = [
        {
            **common,
            "layer": label,
            "time_us": _median([s.get(label, 0.0) for s in spent]) / b * 1e6,
            "memory_mib": _median([p.get(label, 0.0) for p in peaks]) / MIB,
            "persistent_mib": None,
        }
        for label in labels
    ]
    rows.append(
        {
            **common,
            "layer": TOTAL,
            "time_us": _median(totals) / b * 1e6,
            "memory_mib": _median([max(p.values()) for p in peaks]) / MIB,
            "persistent_mib": persistent_bytes(net, learner, optimizers) / MIB,
        }
    )
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], *, per_layer: bool = True, counted: bool = True) -> str:
    """The rows as markdown: a summary table (one line per run: total time per sample, peak
    memory per batch, persistent memory), then (``per_layer``) one line per layer with every
    run's time and memory, then (``counted``) the statement of what is counted."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    by = {(r["run"], r["layer"]): r for r in rows}
    first = rows[0] if rows else {}
    lines = [
        f"Device {first.get('device', '?')}, batch {first.get('batch', '?')}.",
        "",
        "| run | rule | time per sample (µs) | peak memory per batch (MiB) | persistent (MiB) |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        t = by[(run, TOTAL)]
        lines.append(
            f"| {run} | {t['rule']} | {_fmt(t['time_us'])} | {_fmt(t['memory_mib'], 2)} | "
            f"{_fmt(t['persistent_mib'], 1)} |"
        )
    if per_layer:
        layers = list(dict.fromkeys(r["layer"] for r in rows if r["layer"] != TOTAL))
        head = " | ".join(f"{run} µs | {run} MiB" for run in runs)
        lines += ["", f"| layer | {head} |", "|---|" + "---|---|" * len(runs)]
        for layer in [*layers, TOTAL]:
            cells = []
            for run in runs:
                r = by.get((run, layer))
                cells += [_fmt(r and r["time_us"]), _fmt(r and r["memory_mib"], 2)]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    if counted:
        lines += ["", COUNTED]
    return "\n".join(lines) + "\n"
