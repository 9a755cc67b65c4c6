"""Training backends: what runs an epoch's minibatches, in one process or over several.

The seam between an engine's epoch (order, augmentation, schedule, evaluation: its trainer) and
where the minibatches are computed. A backend's ``run(stage, batches, epoch)`` (rank 0) consumes
an iterable of (x, y) minibatches and yields, per minibatch in order, (loss per layer, wrong
predictions per layer, batch size); on the other ranks ``serve(stage, data)`` does that rank's
part of every epoch rank 0 runs, until rank 0's ``stop()``. A backend sees the trainer only
through the narrow :class:`Stage` interface and the other ranks only through a
:class:`~ctsp.parallel.transport.Transport` (gloo, NCCL or in-process).

Sigprop layers never wait for a backward pass, so the layers can be pipelined over processes
(:class:`LayerPipeline`) as well as replicated (:class:`DataParallel`, any rule);
:class:`SingleProcess` is the default. Registry: :data:`BACKENDS`; :func:`build_backend` chooses
and validates from the config's ``parallel`` section.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from ..errors import ConfigError, WorkerError
from ..registry import Registry
from .messages import Batch, End, Epoch, Infer, Output, Report, State, Stop
from .transport import Transport

# what a backend yields per minibatch: (means over its samples, e.g. the loss per layer;
# counts, e.g. the wrong predictions per layer; the batch size). Replicas average the means by
# their shares of the samples and sum the counts.
Step = tuple[Tensor, Tensor, int]
# minibatches a pipeline's rank 0 trains before it reads the later stages' reports of one: it
# does not wait for a stage that is a minibatch behind
REPORT_LAG = 3


class Stage(Protocol):
    """What a backend needs of an engine's trainer (``DiscreteTrainer``, the continuous-time
    ``Trainer``). A pipeline needs ``train_layers``, ``infer``, ``layer_state`` and
    ``take_layers`` as well; replicas need ``sharded``, ``optimizers`` and ``batches``."""

    epoch_lr: float  # the learning rate (or the schedule's factor) of the epoch begun last
    resend_state: bool  # rank 0's state changes between epochs (batch-norm recalibration)

    def begin_epoch(self, epoch: int, lr: float | None = None) -> None: ...

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...

    def fingerprint(self) -> Tensor: ...


class Backend(Protocol):
    """Runs an epoch's minibatches: ``run`` on rank 0 (yields a :data:`Step` per minibatch),
    ``serve`` on the other ranks (until rank 0's ``stop``). ``build(parallel, transport,
    costs)`` makes one from a ``parallel`` config section for this rank of a transport's
    world."""

    name: str
    group: str  # what its processes are, for messages: "rank 1 of the replicas stopped …"

    def run(
        self, stage, batches: Iterable[tuple[Tensor, Tensor]], epoch: int
    ) -> Iterator[Step]: ...

    def serve(self, stage, data) -> None: ...

    def stop(self) -> None: ...


class SingleProcess:
    """Every minibatch in this process, one after the other (``stage.train_batch``)."""

    name = "single"
    group = "the run"

    @classmethod
    def build(cls, parallel, transport, costs: Callable[[], list[int]]):
        return cls()

    def run(self, stage, batches: Iterable[tuple[Tensor, Tensor]], epoch: int) -> Iterator[Step]:
        for x, y in batches:
            losses, wrong = stage.train_batch(x, y)
            yield losses, wrong, x.shape[0]

    def serve(self, stage, data) -> None:
        """Nothing to serve: one process."""

    def stop(self) -> None:
        """Nothing to stop."""


def split_layers(sizes: list[int], stages: int) -> list[tuple[int, int]]:
    """Consecutive layer ranges [start, stop) for ``stages`` stages, balanced by ``sizes`` (a
    cost per layer, e.g. its multiply-adds): the split whose costliest stage costs least (the
    pipeline's pace), every stage keeping at least one layer; among equal ones the one with
    the lightest first stage (rank 0 also reads the data and evaluates)."""
    n = len(sizes)
    if not 1 <= stages <= n:
        raise ConfigError(f"parallel.stages = {stages} needs between 1 and {n} stages (the layers)")
    prefix = [0, *itertools.accumulate(sizes)]

    @functools.cache
    def best(start: int, k: int) -> tuple[int, tuple[int, ...]]:
        """(the costliest stage, the cuts) of layers start.. in k stages."""
        if k == 1:
            return prefix[n] - prefix[start], ()
        options = []
        for cut in range(start + 1, n - k + 2):
            rest, cuts = best(cut, k - 1)
            options.append((max(prefix[cut] - prefix[start], rest), cut, cuts))
        worst, cut, cuts = min(options)  # ties: the earliest cut
        return worst, (cut, *cuts)

    cuts = [0, *best(0, stages)[1], n]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


class _Driven:
    """What the multi-process backends share: rank 0 begins each epoch on the other ranks (the
    learning rate, and the whole state where theirs may differ from rank 0's: in the first epoch
    this backend runs, since a resumed run starts from the checkpoint, and after every
    evaluation that recalibrates batch norm, which rank 0 does alone) and stops them."""

    transport: Transport
    _started: bool = False

    def _begin(self, stage, epoch: int) -> None:
        """Rank 0, at the start of an epoch."""
        state = stage.state() if not self._started or stage.resend_state else None
        self._started = True
        for r in range(1, self.transport.size):
            self.transport.send(Epoch(epoch, stage.epoch_lr, state), r)

    def _next_epoch(self, stage) -> int | None:
        """Ranks > 0: the next epoch rank 0 begins (its state loaded), or None at the end."""
        message = self.transport.recv(0)
        if isinstance(message, Stop):
            return None
        if message.state is not None:
            stage.load_state(message.state)
        stage.begin_epoch(message.epoch, message.lr)
        return message.epoch

    def stop(self) -> None:
        """Rank 0, after the last epoch: tell every other rank that training is over."""
        for r in range(1, self.transport.size):
            self.transport.send(Stop(), r)
        self.transport.flush()


class LayerPipeline(_Driven):
    """Consecutive layers split over the ranks: stage r trains layers ``splits[r]``, receives
    (h, t) and the labels from stage r - 1 and passes its last (h, t) on to stage r + 1 (paper
    Sec. III: no layer waits for a backward pass). Rank 0 reads the data, runs stage 0 and the
    epoch loop (``run``); the other ranks serve their stage (``serve``).

    Exact: what reaches layer l for minibatch k was computed by layer l - 1 with the weights it
    had after minibatch k - 1, in the pipeline as in one process, and the messages carry the
    tensors' exact bits, so the updates are the single process's. Every stage sends its state
    back at the end of every epoch, so that rank 0 evaluates and checkpoints the whole network.
    Minibatches are in flight at once: stage 0 trains minibatch k + 1 while the later stages
    train minibatch k, and rank 0 reads the stages' reports of minibatch k only after it has
    sent minibatch k + :data:`REPORT_LAG` on (the yields lag as much behind).

    Target-loop generators (``stage.needs_feedback``, Fig. 2c) need the network's output for
    minibatch k, computed with the weights after minibatch k - 1, before layer 1 trains on k:
    that inference pass goes through every stage (:class:`Infer` messages, each stage after it
    has trained minibatch k - 1) and the last stage returns the :class:`Output` to rank 0. Exact
    as well, but the stages then work one after the other.
    """

    name = "pipeline"
    group = "the layer pipeline"  # what its processes are, for messages

    def __init__(self, splits: list[tuple[int, int]], transport: Transport) -> None:
        if len(splits) != transport.size:
            raise ConfigError(
                f"{len(splits)} stages need {len(splits)} processes, not {transport.size}"
            )
        self.splits, self.transport = splits, transport
        transport.group = self.group

    @classmethod
    def build(cls, parallel, transport, costs: Callable[[], list[int]]):
        split, sizes = parallel.split, costs()
        if not split:
            return cls(split_layers(sizes, parallel.stages), transport)
        layers = len(sizes)
        if sum(split) != layers:
            raise ConfigError(
                f"invalid value for parallel.split: {list(split)} (expected layer counts that "
                f"add up to the network's {layers} layers)"
            )
        cuts = [0, *itertools.accumulate(split)]
        return cls(list(zip(cuts[:-1], cuts[1:], strict=True)), transport)

    @property
    def stages(self) -> int:
        return len(self.splits)

    def run(self, stage, batches, epoch: int) -> Iterator[Step]:
        """Rank 0: the epoch's minibatches through the pipeline; yields every minibatch's loss
        and wrong predictions per layer (all stages') in order."""
        self._begin(stage, epoch)
        start, stop = self.splits[0]
        pending: collections.deque = collections.deque()  # minibatches whose reports are due
        for x, y in batches:
            feedback = None
            if stage.needs_feedback:  # the inference pass crosses every stage first; the
                while pending:  # last stage's reports come before its output
                    yield self._reports(*pending.popleft())
                self.transport.send(Infer(stage.infer(x, start, stop)), 1)
                feedback = self.transport.recv(self.stages - 1).out
            losses, wrong, carry = stage.train_layers(x, y, start, stop, feedback=feedback)
            self.transport.send(Batch(carry, y), 1)
            for r in range(1, self.stages):  # their reports of it will come
                self.transport.expect(r)
            pending.append((losses, wrong, x.shape[0]))
            while len(pending) > REPORT_LAG:
                yield self._reports(*pending.popleft())
        while pending:
            yield self._reports(*pending.popleft())
        self.transport.send(End(), 1)
        for r in range(1, self.stages):
            state = self.transport.recv(r)
            stage.take_layers({"net": state.net, "learner": state.learner}, *self.splits[r])

    def _reports(self, losses: Tensor, wrong: Tensor, size: int) -> Step:
        """Stage 0's loss and errors of a minibatch joined with every later stage's report."""
        reports = [self.transport.recv(r) for r in range(1, self.stages)]
        all_losses = torch.cat([losses.float(), *(r.losses for r in reports)])
        return all_losses, torch.cat([wrong, *(r.wrong for r in reports)]), size

    def serve(self, stage, data=None) -> None:
        """Ranks > 0: train this stage's layers for every epoch rank 0 runs, until it stops
        (``data`` unused: rank 0 sends what a stage needs)."""
        while self._next_epoch(stage) is not None:
            self._serve_epoch(stage)
        self.transport.flush()

    def _serve_epoch(self, stage) -> None:
        rank, t = self.transport.rank, self.transport
        start, stop = self.splits[rank]
        last = rank == self.stages - 1
        while not isinstance(message := t.recv(rank - 1), End):
            t.expect(rank - 1)  # the next minibatch, or the end of the epoch
            if isinstance(message, Infer):  # this stage's part of the target-loop context
                out = stage.infer(message.h, start, stop)
                t.send(Output(out) if last else Infer(out), 0 if last else rank + 1)
                continue
            losses, wrong, carry = stage.train_layers(
                None, message.labels, start, stop, message.carry
            )
            if not last:
                t.send(Batch(carry, message.labels), rank + 1)
            t.send(Report(losses.detach().float(), wrong), 0)
        if not last:
            t.send(End(), rank + 1)
        state = stage.layer_state(start, stop)
        t.send(State(state["net"], state["learner"]), 0)


class _ReplicaSum(torch.autograd.Function):
    """The sum of a tensor over the replicas (batch-norm statistics), differentiable for the
    loss sum_r w_r L_r of the whole minibatch (w_r: replica r's share of the samples, L_r its
    mean loss): the backward sums the replicas' gradients weighted by w_r and divides by this
    replica's w, since :meth:`DataParallel._sum_gradients` multiplies this replica's gradients
    by w again before their sum."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: float, transport: Transport) -> Tensor:
        ctx.weight, ctx.transport = weight, transport
        out = x.clone(memory_format=torch.contiguous_format)
        transport.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        out = grad * ctx.weight
        ctx.transport.all_reduce(out)
        return out / ctx.weight, None, None


class DataParallel(_Driven):
    """Data-parallel replicas: every rank holds the whole network and learner, and trains on its
    shard (a contiguous 1/R of the samples) of every minibatch of the single-process run (the
    same global batch). Each rank draws the epoch's minibatches itself (the same seeded order
    and augmentation), so no data is sent.

    The minibatch's gradient is the single process's: each layer's loss is a mean over its
    samples, so every optimizer's gradients are weighted by the shard's share of the samples
    and summed over the replicas (one all-reduce, an optimizer step pre-hook registered once)
    right before that optimizer steps — a layer waits for no other layer. Batch norm is
    synchronised (``stage.sharded``: the batch statistics summed over the replicas, with their
    gradients) and the dropout masks are the rows of the whole minibatch's, so the replicas
    apply the same updates and stay equal (a fingerprint of every parameter and buffer is
    compared at the end of every epoch). Equal to the single-process run up to float rounding:
    sums over the samples are taken in another order. Rank 0 drives the epochs (``run``),
    evaluates and writes the run; the other ranks serve (``serve``).
    """

    name = "replicas"
    group = "the replicas"

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        transport.group = self.group
        self._weight = 1.0
        self._hooked: set[int] = set()

    @classmethod
    def build(cls, parallel, transport, costs: Callable[[], list[int]]):
        return cls(transport)

    @property
    def replicas(self) -> int:
        return self.transport.size

    def run(self, stage, batches, epoch: int) -> Iterator[Step]:
        """Rank 0: the epoch's minibatches over the replicas; yields every minibatch's loss per
        layer (of the whole minibatch) and its wrong predictions per layer."""
        self._begin(stage, epoch)
        for x, y in batches:
            yield self.step(stage, x, y)
        self._agree(stage)

    def serve(self, stage, data) -> None:
        """Ranks > 0: train this replica's shards of every epoch rank 0 runs, until it stops."""
        while (epoch := self._next_epoch(stage)) is not None:
            for x, y in stage.batches(data, epoch):
                self.step(stage, x, y)
            self._agree(stage)

    def _hook(self, stage) -> None:
        for optimizer in stage.optimizers():
            if id(optimizer) not in self._hooked:
                self._hooked.add(id(optimizer))
                optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._sum_gradients(opt))

    def _sum_gradients(self, optimizer) -> None:
        """Before an optimizer step: its gradients weighted by this shard's share of the
        minibatch and summed over the replicas (one all-reduce)."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * self._weight
        self.transport.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def step(self, stage, x: Tensor, y: Tensor) -> Step:
        """This replica's shard of one minibatch; the whole minibatch's loss and errors."""
        total, rank = x.shape[0], self.transport.rank
        if total < self.replicas:
            raise ConfigError(
                f"a minibatch of {total} sample(s) cannot be shared by parallel.replicas = "
                f"{self.replicas}; use fewer replicas or another train.batch_size"
            )
        lo, hi = total * rank // self.replicas, total * (rank + 1) // self.replicas
        self._weight = weight = (hi - lo) / total
        self._hook(stage)
        reduce = functools.partial(_reduce, weight=weight, transport=self.transport)
        with stage.sharded(lo, hi, total, reduce):
            losses, wrong = stage.train_batch(x[lo:hi], y[lo:hi])
        stats = torch.cat([losses.detach().double() * weight, wrong.double()])
        self.transport.all_reduce(stats)
        n = losses.shape[0]
        return stats[:n].float(), stats[n:].round().long(), total

    def _agree(self, stage) -> None:
        """End of an epoch: every replica's parameters and buffers must equal rank 0's."""
        every = self.transport.all_gather(stage.fingerprint())
        for r, theirs in enumerate(every):
            if not torch.equal(theirs, every[0]):
                raise WorkerError(
                    f"replica {r} no longer equals replica 0 (a nondeterministic step?)"
                )


def _reduce(v: Tensor, weight: float, transport: Transport) -> Tensor:
    return _ReplicaSum.apply(v, weight, transport)


BACKENDS = Registry(
    "training backend",
    {"single": SingleProcess, "pipeline": LayerPipeline, "replicas": DataParallel},
)


def backend_name(parallel) -> str:
    """The :data:`BACKENDS` name of a ``parallel`` section (replicas, stages, or neither)."""
    return "replicas" if parallel.replicas > 1 else "pipeline" if parallel.stages > 1 else "single"


def build_backend(parallel, transport: Transport | None, costs: Callable[[], list[int]]):
    """The backend of ``parallel`` (a config's ``parallel`` section) for this rank of
    ``transport``'s world (None: one process). ``costs()``: a cost per layer (e.g. its
    multiply-adds), called by a layer pipeline alone: its layers are split as
    ``parallel.split`` says (checked against their number), or by these costs."""
    return BACKENDS[backend_name(parallel)].build(parallel, transport, costs)
