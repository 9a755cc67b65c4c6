"""Discrete sigprop training (``ctsp train``): forward only, every layer learns from its own loss.

:class:`DiscreteTrainer` trains a network with a learner (``train.rule``: sigprop, or a baseline
of ``ctsp.discrete.RULES``) epoch by epoch: shuffling, crop/flip augmentation, the learning-rate
schedule, precise batch norm before evaluation (``train.recalibrate_bn``) and the early-exit
errors of every layer (Eq. 8) on the test (and validation) set; the network's prediction is the
last exit's. Training and evaluation run under the autocast of ``train.precision``
(``ctsp.nn.precision``; the learners' backward passes and optimizer steps outside it), the
inputs of convolutional networks channels-last. The minibatch loop runs on a training backend
(:data:`ctsp.parallel.BACKENDS`: one process, a layer pipeline, replicas), which sees the trainer
through its :class:`ctsp.parallel.Stage` methods. The shuffling, augmentation and dropout
of epoch e come from generators seeded by (seed, e), so a resumed run repeats an uninterrupted
one exactly. It writes no files: ``ctsp.runs.fit`` drives it and writes the run directory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DivergenceError, RunDirError
from ..nn import (
    Shard,
    autocast,
    memory_format,
    recalibrate_batch_norm,
    seed_dropout,
    sharded,
    uses_channels_last,
)
from ..parallel import SingleProcess
from .learner import Learner

# keys (or key prefixes ending in ".") that a resumed run may change; train.recalibrate_bn acts
# from the next evaluation on (it changes training only where training reads the running
# statistics: signal.bn_targets = "running" and the target-loop generators' inference pass)
RESUMABLE_KEYS = (
    "train.epochs",
    "device",
    "threads",
    "train.recalibrate_bn",
    "train.health",
    "parallel.",
    "record.",
)


def learning_rate(train, epoch: int) -> float:
    """The Adam learning rate of (0-based) ``epoch``: ``lr`` times the schedule's factor
    (:meth:`ctsp.config.LRSchedule.lr_factor`; paper: x0.25 at 50/75/89/94 % of the epochs)."""
    return train.lr * train.lr_factor(epoch)


def augment(x: Tensor, gen: torch.Generator, crop: int = 0, flip: bool = False) -> Tensor:
    """Random crop (zero-pad by ``crop`` pixels, cut the original size at a random offset per
    image) and random horizontal flip, drawn from ``gen``. x: (B, C, H, W)."""
    b, _, h, w = x.shape
    if crop:
        padded = torch.nn.functional.pad(x, (crop, crop, crop, crop)).permute(0, 2, 3, 1)
        dy, dx = torch.randint(0, 2 * crop + 1, (2, b), generator=gen).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        x = padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if flip:
        flipped = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(flipped[:, None, None, None], x.flip(3), x)
    return x


class DiscreteTrainer:
    """A network, its learner, training and evaluation; no files, no printing.

    Args:
        net: the network (``models.discrete.DiscreteNetwork`` or a subclass).
        learner: a :class:`ctsp.discrete.Learner` for ``net`` (``ctsp.config.make_learner``).
        config: the ``DiscreteRunConfig``.
        device: where the minibatches go.
        backend: the training backend that runs the minibatches (default: one process).
    """

    learning_keys = ("train.lr",)

    def __init__(self, net, learner: Learner, config, device: torch.device, backend=None) -> None:
        self.net, self.learner, self.config, self.device = net, learner, config, device
        self.backend = backend if backend is not None else SingleProcess()
        self.names = learner.names
        self.channels_last = uses_channels_last(net)

    def autocast(self):
        """The autocast context of ``train.precision`` on the trainer's device. Enter it for
        one minibatch (or one evaluation batch) at a time: autocast keeps its low-precision
        copies of the weights until it is left, and the learners step the weights."""
        return autocast(self.device, self.config.train.precision)

    def inputs(self, x: Tensor) -> Tensor:
        """A minibatch of images on the device, channels-last for convolutional networks."""
        return memory_format(x.to(self.device), self.channels_last)

    def set_epoch(self, epoch: int) -> float:
        """Set the learning rate for (0-based) ``epoch``; returns it."""
        lr = learning_rate(self.config.train, epoch)
        self.learner.set_lr(lr)
        return lr

    def begin_epoch(self, epoch: int, lr: float | None = None) -> None:
        """What every process that trains layers of ``epoch`` sets first: the learning rate
        (``lr``, default the schedule's: :meth:`set_epoch`; kept in ``self.epoch_lr``), the dropout
        generator seeded by (seed, epoch), training mode."""
        if lr is None:
            lr = self.set_epoch(epoch)
        else:
            self.learner.set_lr(lr)
        self.epoch_lr = lr
        seed = self.config.seed * 1_000_003 + epoch + 1
        torch.manual_seed(seed)  # dropout of networks without StaticNeurons
        seed_dropout(self.net, seed)
        self.net.train()

    def batches(self, data, epoch: int):
        """The training minibatches (x, y) of ``epoch``, on the device: a permutation drawn from
        a generator seeded by (seed, epoch), augmented from the same generator; a last batch of
        one is left out (batch norm needs two samples)."""
        tc, dc, n = self.config.train, self.config.data, data.train_x.shape[0]
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        for idx in torch.randperm(n, generator=gen).split(tc.batch_size):
            if idx.shape[0] < 2:
                continue
            x, y = data.train_x[idx].to(self.device), data.train_y[idx].to(self.device)
            if dc.crop or dc.flip:
                x = augment(x, gen, dc.crop, dc.flip)
            yield self.inputs(x), y

    def train_epoch(self, data, epoch: int, bar=None, on_batch=None) -> dict:
        """One pass over the training set on the backend; the order, augmentation and dropout
        come from generators seeded by (seed, epoch); ``on_batch(epoch, k)`` after every
        minibatch. Returns per-layer mean losses and exit errors."""
        self.begin_epoch(epoch)
        layers = len(self.names)
        loss_sum = torch.zeros(layers, dtype=torch.float64)
        wrong = torch.zeros(layers, dtype=torch.int64)
        seen = 0
        steps = self.backend.run(self, self.batches(data, epoch), epoch)
        try:
            for k, (losses, w, size) in enumerate(steps):
                loss_sum += losses.double().cpu() * size
                wrong += w.cpu()
                seen += size
                if on_batch is not None:
                    on_batch(epoch, k)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"train err {int(wrong[-1]) / seen:.3f}", refresh=False)
        except RuntimeError as e:  # an optimizer step beyond the float range (a huge train.lr)
            if "overflow" not in str(e):
                raise
            raise DivergenceError(
                f"training diverged: a learning step overflowed ({e}); train.lr = "
                f"{self.config.train.lr:g} is likely too large"
            ) from None
        for p in self.net.parameters():
            if not bool(torch.isfinite(p).all()):
                raise DivergenceError("training diverged: NaN or Inf in the weights")
        seen = max(seen, 1)
        return {"loss": (loss_sum / seen).tolist(), "exit_error": (wrong.double() / seen).tolist()}

    # the Stage interface of ctsp.parallel's backends

    @property
    def resend_state(self) -> bool:
        """Rank 0's batch-norm statistics change between epochs (``train.recalibrate_bn``)."""
        return bool(self.config.train.recalibrate_bn)

    @property
    def needs_feedback(self) -> bool:
        """The target generator needs the network's output first (target-loop, Fig. 2c)."""
        return self.net.signal.needs_feedback

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One minibatch through every layer: (loss per layer, wrong predictions per layer)."""
        with self.autocast():
            return self.learner.train_batch(x, y)

    def train_layers(self, x, y: Tensor, start: int, stop: int, carry=None, feedback=None):
        """Layers [start, stop) of one minibatch (a pipeline stage): (loss per layer, wrong
        predictions per layer, the carry for layer ``stop``)."""
        with self.autocast():
            return self.learner.train_layers(x, y, start, stop, carry=carry, feedback=feedback)

    def infer(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Layers [start, stop) of the target-loop context pass."""
        with self.autocast():
            return self.net.feedback(x, start, stop)

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "learner": self.learner.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.learner.load_state_dict(state["learner"])

    def layer_state(self, start: int, stop: int) -> dict:
        """The state of layers [start, stop) alone (parameters, buffers, rules): what a pipeline
        stage sends rank 0 at the end of an epoch."""
        prefixes = tuple(f"layers.{i}." for i in range(start, stop))
        net = {k: v for k, v in self.net.state_dict().items() if k.startswith(prefixes)}
        rules = self.learner.state_dict()["rules"]
        return {"net": net, "learner": {"rules": {n: rules[n] for n in self.names[start:stop]}}}

    def take_layers(self, state: dict, start: int, stop: int) -> None:
        """Layers [start, stop) from another stage's :meth:`layer_state`."""
        mine = self.net.state_dict()
        mine.update(state["net"])
        self.net.load_state_dict(mine)
        ours = self.learner.state_dict()
        ours["rules"].update(state["learner"]["rules"])
        self.learner.load_state_dict(ours)

    def sharded(self, lo: int, hi: int, total: int, reduce):
        """Within: the network sees samples [lo, hi) of a minibatch of ``total`` (a replica);
        ``reduce`` sums a tensor over the replicas (``ctsp.nn.sharded``)."""
        return sharded(self.net, Shard(lo, hi, total, self.net.signal.per_sample, reduce))

    def optimizers(self) -> list:
        return self.learner.optimizers()

    def fingerprint(self) -> Tensor:
        """A float64 sum per parameter and buffer of the network: equal in replicas that agree."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        return torch.stack([t.detach().double().sum() for t in tensors])

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> list[float]:
        """Early-exit test error (fraction) of every layer, in eval mode."""
        bs, layers = self.config.train.eval_batch_size, len(self.names)
        wrong = torch.zeros(layers, dtype=torch.int64)
        self.net.eval()
        try:
            for i in range(0, x.shape[0], bs):
                with self.autocast():
                    pred = self.learner.predict_exits(self.inputs(x[i : i + bs])).cpu()
                wrong += (pred != y[i : i + bs, None]).sum(0)
        finally:
            self.net.train()
        return (wrong.double() / max(x.shape[0], 1)).tolist()

    # the EpochTrainer protocol of ctsp.runs.fit

    def train_metrics(self, data, epoch: int, bar, on_batch=None) -> dict:
        stats = self.train_epoch(data, epoch, bar, on_batch)
        return {
            "train_error": stats["exit_error"][-1],
            "train_loss": stats["loss"],
            "train_exit_error": stats["exit_error"],
            "lr": learning_rate(self.config.train, epoch),
        }

    def recalibrate(self, data) -> None:
        """``train.recalibrate_bn`` minibatches of a seeded permutation of the training set
        through :func:`ctsp.nn.recalibrate_batch_norm` (nothing when 0)."""
        tc = self.config.train
        if not tc.recalibrate_bn:
            return
        gen = torch.Generator().manual_seed(self.config.seed)
        order = torch.randperm(data.train_x.shape[0], generator=gen)
        chunks = order[: tc.recalibrate_bn * tc.batch_size].split(tc.batch_size)
        batches = (self.inputs(data.train_x[idx]) for idx in chunks if idx.shape[0] > 1)
        with self.autocast():
            recalibrate_batch_norm(self.net, batches)

    def eval_metrics(self, data) -> dict:
        self.recalibrate(data)
        test = self.evaluate(data.test_x, data.test_y)
        row = {"test_error": test[-1], "test_exit_error": test}
        if data.val_x.shape[0]:
            val = self.evaluate(data.val_x, data.val_y)
            row.update(val_error=val[-1], val_exit_error=val)
        return row

    def extra_state(self) -> dict:
        return {"learner": self.learner.state_dict()}

    def load_extra_state(self, ckpt: dict) -> None:
        if "learner" not in ckpt:
            raise RunDirError(
                "the checkpoint is from an older ctsp version (no keyed learner state); "
                "start the run again"
            )
        self.learner.load_state_dict(ckpt["learner"])

    def summary(self, row: dict) -> str:
        exits = row["test_exit_error"]
        return "exits: " + " ".join(f"{n} {e:.1%}" for n, e in zip(self.names, exits, strict=True))
