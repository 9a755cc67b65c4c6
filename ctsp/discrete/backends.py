"""Training backends: what runs a learner over an epoch's minibatches.

The seam between the epoch (order, augmentation, schedule: :class:`DiscreteTrainer`) and where
the minibatches are computed. A backend's ``run(learner, batches, context)`` consumes an
iterable of (x, y) minibatches and yields, per minibatch in order, (loss per exit, wrong
predictions per exit, batch size); each minibatch runs inside a fresh ``context()`` (the
trainer's autocast of ``train.precision``: entered and left per minibatch, since autocast
caches its low-precision copies of the weights until it is left, and the weights change at
every step). Sigprop layers never wait for a backward pass, so later backends can pipeline
the layers over processes or replicate them (docs/architecture.md, "where to add a training
backend"); today there is one: a single process. Registry: :data:`BACKENDS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor
from torch import distributed as dist

from ..errors import ConfigError, WorkerError
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
    cost per layer, e.g. its parameter count): each cut where the running total crosses the
    next multiple of total / stages, every stage keeping at least one layer."""
    if not 1 <= stages <= len(sizes):
        raise ConfigError(
            f"parallel.stages = {stages} needs between 1 and {len(sizes)} stages (the layers)"
        )
    total, cuts, run = sum(sizes), [0], 0
    for i, size in enumerate(sizes[:-1]):
        run += size
        left = stages - len(cuts)  # cuts still to place
        if left and (run >= total * len(cuts) / stages or len(sizes) - 1 - i == left):
            cuts.append(i + 1)
    return list(zip(cuts, [*cuts[1:], len(sizes)], strict=True))


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


class LayerPipeline:
    """Consecutive layers split over the processes of a torch.distributed group: stage r
    (rank r) trains layers ``splits[r]``, receives (h, t) and the labels from stage r - 1 and
    passes its last (h, t) on to stage r + 1 (paper Sec. III: no layer waits for a backward
    pass). Rank 0 reads the data, runs stage 0 and the epoch loop (``run``); the other ranks
    serve their stage (``serve``).

    Exact: what reaches layer l for minibatch k was computed by layer l - 1 with the weights it
    had after minibatch k - 1, in the pipeline as in one process, and the messages carry the
    tensors' exact bits, so the updates are the single process's. Per epoch: rank 0 sends the
    whole network and learner state to every stage first (so a resumed run starts every stage
    from the checkpoint), and every stage sends its state back at the end, so that rank 0
    evaluates and checkpoints the whole network. Two minibatches are in flight: stage 0 trains
    minibatch k + 1 while the later stages train minibatch k.
    """

    name = "pipeline"

    def __init__(self, splits: list[tuple[int, int]], rank: int) -> None:
        self.splits, self.rank = splits, rank

    @property
    def stages(self) -> int:
        return len(self.splits)

    def run(self, trainer, batches, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Rank 0: the epoch's minibatches through the pipeline; yields every minibatch's loss
        and wrong predictions per layer (all stages') in order."""
        state = _state(trainer)
        for r in range(1, self.stages):
            _send(("epoch", epoch, trainer.lr, state), r)
        start, stop = self.splits[0]
        pending = None
        for x, y in batches:
            with trainer.autocast():
                losses, wrong, carry = trainer.learner.train_layers(x, y, start, stop)
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

    def serve(self, trainer) -> None:
        """Ranks > 0: train this stage's layers for every epoch rank 0 runs, until it stops."""
        start, stop = self.splits[self.rank]
        last = self.rank == self.stages - 1
        while True:
            message = _recv(0)
            if message[0] == "stop":
                return
            _, epoch, lr, (net_state, learner_state) = message
            trainer.net.load_state_dict(net_state)
            trainer.learner.load_state_dict(learner_state)
            trainer.begin_epoch(epoch, lr)
            while True:
                message = _recv(self.rank - 1)
                if message[0] == "end":
                    break
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


BACKENDS = Registry("training backend", {"single": SingleProcess, "pipeline": LayerPipeline})
