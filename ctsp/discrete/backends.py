"""Training backends: what runs a learner over an epoch's minibatches.

The seam between the epoch (order, augmentation, schedule: :class:`DiscreteTrainer`) and where
the minibatches are computed. A backend's ``run(learner, batches, context)`` consumes an
iterable of (x, y) minibatches and yields, per minibatch in order, (loss per exit, wrong
predictions per exit, batch size); each minibatch runs inside a fresh ``context()`` (the
trainer's autocast of ``train.precision``: entered and left per minibatch, since autocast
caches its low-precision copies of the weights until it is left, and the weights change at
every step). Sigprop layers never wait for a backward pass, so the layers can be pipelined over
processes (:class:`LayerPipeline`) as well as replicated (:class:`DataParallel`, any rule);
:class:`SingleProcess` is the default. Registry: :data:`BACKENDS`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor
from torch import distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ..errors import ConfigError, WorkerError
from ..nn import Shard, sharded
from ..registry import Registry


class SingleProcess:
    """Every minibatch in this process, one after the other (``learner.train_batch``)."""

    name = "single"

    def run(
        self, trainer, batches: Iterable[tuple[Tensor, Tensor]], epoch: int
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        for x, y in batches:
            with trainer.autocast():
                losses, wrong = trainer.learner.train_batch(x, y)
            yield losses, wrong, x.shape[0]

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
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)

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


@contextlib.contextmanager
def _peer(rank: int):
    """Messages with ``rank``: a lost connection becomes one :class:`WorkerError` naming it."""
    try:
        yield
    except RuntimeError as e:
        if "gloo" not in str(e).lower() and "connection" not in str(e).lower():
            raise
        raise WorkerError(
            f"rank {rank} of the pipeline stopped answering (its connection closed); the run "
            "stops (continue it with --resume)"
        ) from None


def _send(obj, dst: int) -> None:
    with _peer(dst):
        dist.send_object_list([obj], dst=dst)


def _recv(src: int):
    box = [None]
    with _peer(src):
        dist.recv_object_list(box, src=src)
    return box[0]


def _state(trainer) -> tuple[dict, dict]:
    return trainer.net.state_dict(), trainer.learner.state_dict()


def _begin(trainer, ranks: range, epoch: int, first: bool) -> None:
    """Rank 0, at the start of an epoch: tell ``ranks`` the epoch and its learning rate, with
    the whole network and learner state where theirs may differ from rank 0's: in the first
    epoch this backend runs (a resumed run starts from the checkpoint), and after every
    evaluation that recalibrates batch norm (``train.recalibrate_bn``: rank 0 alone)."""
    state = _state(trainer) if first or trainer.config.train.recalibrate_bn else None
    for r in ranks:
        _send(("epoch", epoch, trainer.lr, state), r)


def _serve_epoch(trainer, message) -> int:
    """Ranks > 0: take an epoch message of :func:`_begin`; returns the epoch."""
    _, epoch, lr, state = message
    if state is not None:
        trainer.net.load_state_dict(state[0])
        trainer.learner.load_state_dict(state[1])
    trainer.begin_epoch(epoch, lr)
    return epoch


class LayerPipeline:
    """Consecutive layers split over the processes of a torch.distributed group: stage r
    (rank r) trains layers ``splits[r]``, receives (h, t) and the labels from stage r - 1 and
    passes its last (h, t) on to stage r + 1 (paper Sec. III: no layer waits for a backward
    pass). Rank 0 reads the data, runs stage 0 and the epoch loop (``run``); the other ranks
    serve their stage (``serve``).

    Exact: what reaches layer l for minibatch k was computed by layer l - 1 with the weights it
    had after minibatch k - 1, in the pipeline as in one process, and the messages carry the
    tensors' exact bits, so the updates are the single process's. In its first epoch rank 0
    sends the whole network and learner state to every stage (so a resumed run starts every
    stage from the checkpoint; again only where a stage's may differ from rank 0's, see
    :func:`_begin`), and every stage sends its state back at the end of every epoch, so that
    rank 0 evaluates and checkpoints the whole network. Two minibatches are in flight: stage 0
    trains minibatch k + 1 while the later stages train minibatch k.

    Target-loop generators (``signal.needs_feedback``, Fig. 2c) need the network's output for
    minibatch k, computed with the weights after minibatch k - 1, before layer 1 trains on k:
    that inference pass goes through every stage (``("infer", h)`` messages, each stage after
    it has trained minibatch k - 1) and the last stage returns the output to rank 0. Exact as
    well, but the stages then work one after the other: no overlap, one more message per stage
    and minibatch.
    """

    name = "pipeline"

    def __init__(self, splits: list[tuple[int, int]], rank: int) -> None:
        self.splits, self.rank = splits, rank
        self._started = False

    @property
    def stages(self) -> int:
        return len(self.splits)

    def run(self, trainer, batches, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Rank 0: the epoch's minibatches through the pipeline; yields every minibatch's loss
        and wrong predictions per layer (all stages') in order."""
        _begin(trainer, range(1, self.stages), epoch, first=not self._started)
        self._started = True
        start, stop = self.splits[0]
        loop = trainer.net.signal.needs_feedback
        pending = None
        for x, y in batches:
            feedback = None
            if loop:  # the inference pass crosses every stage first
                if pending is not None:  # (gloo's sends block: never two ways at once)
                    yield self._reports(*pending)
                    pending = None
                with trainer.autocast():
                    _send(("infer", trainer.net.feedback(x, start, stop)), 1)
                feedback = _recv(self.stages - 1)
            with trainer.autocast():
                losses, wrong, carry = trainer.learner.train_layers(
                    x, y, start, stop, feedback=feedback
                )
            if pending is not None:
                yield self._reports(*pending)
            _send(("batch", carry, y), 1)
            pending = (losses, wrong, x.shape[0])
        if pending is not None:
            yield self._reports(*pending)
        _send(("end",), 1)
        for r in range(1, self.stages):
            self._merge(trainer, r, _recv(r))

    def _reports(self, losses: Tensor, wrong: Tensor, size: int) -> tuple[Tensor, Tensor, int]:
        """Stage 0's loss and errors of a minibatch joined with every later stage's report."""
        all_losses, all_wrong = [losses.float()], [wrong]
        for r in range(1, self.stages):
            n = self.splits[r][1] - self.splits[r][0]
            loss_r, wrong_r = torch.empty(n), torch.empty(n, dtype=torch.int64)
            with _peer(r):
                dist.recv(loss_r, src=r)
                dist.recv(wrong_r, src=r)
            all_losses.append(loss_r)
            all_wrong.append(wrong_r)
        return torch.cat(all_losses), torch.cat(all_wrong), size

    def _merge(self, trainer, rank: int, state) -> None:
        """Take stage ``rank``'s layers (parameters, buffers) and rules from its state."""
        net_state, learner_state = state
        start, stop = self.splits[rank]
        prefixes = tuple(f"layers.{i}." for i in range(start, stop))
        mine = trainer.net.state_dict()
        mine.update({k: v for k, v in net_state.items() if k.startswith(prefixes)})
        trainer.net.load_state_dict(mine)
        ours = trainer.learner.state_dict()
        for name in trainer.names[start:stop]:
            ours["rules"][name] = learner_state["rules"][name]
        trainer.learner.load_state_dict(ours)

    def stop(self) -> None:
        """Rank 0, after the last epoch: tell every stage that training is over."""
        for r in range(1, self.stages):
            _send(("stop",), r)

    def serve(self, trainer, data=None) -> None:
        """Ranks > 0: train this stage's layers for every epoch rank 0 runs, until it stops
        (``data`` unused: rank 0 sends what a stage needs)."""
        start, stop = self.splits[self.rank]
        last = self.rank == self.stages - 1
        while True:
            message = _recv(0)
            if message[0] == "stop":
                return
            _serve_epoch(trainer, message)
            while True:
                message = _recv(self.rank - 1)
                if message[0] == "end":
                    break
                if message[0] == "infer":  # this stage's part of the target-loop context
                    with trainer.autocast():
                        out = trainer.net.feedback(message[1], start, stop)
                    _send(out if last else ("infer", out), 0 if last else self.rank + 1)
                    continue
                _, carry, y = message
                with trainer.autocast():
                    losses, wrong, carry = trainer.learner.train_layers(None, y, start, stop, carry)
                if not last:
                    _send(("batch", carry, y), self.rank + 1)
                with _peer(0):
                    dist.send(losses.detach().float().cpu(), 0)
                    dist.send(wrong.cpu(), 0)
            if not last:
                _send(("end",), self.rank + 1)
            _send(_state(trainer), 0)


class _ReplicaSum(torch.autograd.Function):
    """The sum of a tensor over the replicas (batch-norm statistics), differentiable for the
    loss sum_r w_r L_r of the whole minibatch (w_r: replica r's share of the samples, L_r its
    mean loss): the backward sums the replicas' gradients weighted by w_r and divides by this
    replica's w, since :func:`_sum_gradients` multiplies this replica's gradients
    by w again before their sum."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        out = grad * ctx.weight
        dist.all_reduce(out)
        return out / ctx.weight, None


def _sum_gradients(optimizer, weight: float) -> None:
    """Before an optimizer step (data-parallel replicas): its gradients weighted by this shard's
    share of the minibatch and summed over the replicas (one all-reduce)."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    with _peer(0):
        dist.all_reduce(flat)
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def _fingerprint(trainer) -> Tensor:
    """A float64 sum per parameter and buffer of the network: equal in replicas that agree."""
    tensors = [*trainer.net.parameters(), *trainer.net.buffers()]
    return torch.stack([t.detach().double().sum() for t in tensors]).cpu()


class DataParallel:
    """Data-parallel replicas: every process of the group holds the whole network and learner,
    and trains on its shard (a contiguous 1/R of the samples) of every minibatch of the
    single-process run (the same global batch). Each process draws the epoch's minibatches
    itself (the same seeded order and augmentation), so no data is sent.

    The minibatch's gradient is the single process's: each layer's loss is a mean over its
    samples, so every optimizer's gradients are weighted by the shard's share of the samples
    and summed over the replicas (one all-reduce) right before that optimizer steps — a layer
    waits for no other layer. Batch norm is synchronised (:func:`ctsp.nn.sharded`: the batch
    statistics summed over the replicas, with their gradients) and the dropout masks are the
    rows of the whole minibatch's, so the replicas apply the same updates and stay equal (a
    fingerprint of every parameter and buffer is compared at the end of every epoch). Equal to
    the single-process run up to float rounding: sums over the samples are taken in another
    order. Rank 0 drives the epochs (``run``), evaluates and writes the run; the other ranks
    serve (``serve``). Rank 0 sends the whole state to every replica in the first epoch (so a
    resumed run starts every replica from the checkpoint), see :func:`_begin`.
    """

    name = "replicas"

    def __init__(self, replicas: int, rank: int) -> None:
        self.replicas, self.rank = replicas, rank
        self._started = False

    def run(self, trainer, batches, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Rank 0: the epoch's minibatches over the replicas; yields every minibatch's loss per
        layer (of the whole minibatch) and its wrong predictions per layer."""
        _begin(trainer, range(1, self.replicas), epoch, first=not self._started)
        self._started = True
        for x, y in batches:
            yield self._step(trainer, x, y)
        self._agree(trainer)

    def serve(self, trainer, data) -> None:
        """Ranks > 0: train this replica's shards of every epoch rank 0 runs, until it stops."""
        while True:
            message = _recv(0)
            if message[0] == "stop":
                return
            epoch = _serve_epoch(trainer, message)
            for x, y in trainer.batches(data, epoch):
                self._step(trainer, x, y)
            self._agree(trainer)

    def _step(self, trainer, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
        """This replica's shard of one minibatch; the whole minibatch's loss and errors."""
        total = x.shape[0]
        if total < self.replicas:
            raise ConfigError(
                f"a minibatch of {total} sample(s) cannot be shared by parallel.replicas = "
                f"{self.replicas}; use fewer replicas or another train.batch_size"
            )
        lo, hi = total * self.rank // self.replicas, total * (self.rank + 1) // self.replicas
        weight = (hi - lo) / total
        per_sample = trainer.net.signal.per_sample
        shard = Shard(lo, hi, total, per_sample, lambda v: _ReplicaSum.apply(v, weight))
        hook = register_optimizer_step_pre_hook(
            lambda optimizer, args, kwargs: _sum_gradients(optimizer, weight)
        )
        try:
            with _peer(0), sharded(trainer.net, shard), trainer.autocast():
                losses, wrong = trainer.learner.train_batch(x[lo:hi], y[lo:hi])
                stats = torch.cat([losses.detach().double().cpu() * weight, wrong.cpu()])
                dist.all_reduce(stats)
        finally:
            hook.remove()
        n = losses.shape[0]
        return stats[:n].float(), stats[n:].round().long(), total

    def _agree(self, trainer) -> None:
        """End of an epoch: every replica's parameters and buffers must equal rank 0's."""
        mine = _fingerprint(trainer)
        every = [torch.empty_like(mine) for _ in range(self.replicas)]
        with _peer(0):
            dist.all_gather(every, mine)
        for r, theirs in enumerate(every):
            if not torch.equal(theirs, every[0]):
                raise WorkerError(
                    f"replica {r} no longer equals replica 0 (a nondeterministic step?); the "
                    "run stops"
                )

    def stop(self) -> None:
        """Rank 0, after the last epoch: tell every replica that training is over."""
        for r in range(1, self.replicas):
            _send(("stop",), r)


BACKENDS = Registry(
    "training backend",
    {"single": SingleProcess, "pipeline": LayerPipeline, "replicas": DataParallel},
)
