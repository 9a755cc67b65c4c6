"""Discrete sigprop training (``ctsp train``): forward only, every layer learns from its own loss.

For every minibatch (paper Sec. III-A, Fig. 2a/2b; Sec. IV settings by default):

1. the target generator (``ctsp.signals``) turns the learning signal (the one-hot vectors of all
   classes; for the target-loop generators also the network's own output from an inference
   pass) into the first targets;
2. the input x and the targets go forward through the same layers (Eq. 1-3,
   ``DiscreteNetwork.pairs``). As soon as layer i has formed (h_i, t_i), its rule computes
   L(h_i, t_i) (L_pred, Eq. 9; cross entropy for a classification layer), back-propagates it
   into layer i alone (its inputs arrive detached) and steps layer i's own Adam optimizer; then
   (h_i, t_i) go on to layer i+1. No gradient crosses a layer; J = sum_i L(h_i, t_i) (Eq. 4) is
   never formed.

Evaluation: the early exits of every layer (Eq. 8) on the test (and validation) set; the
network's prediction is the last layer's. Learning rate: step decay by ``train.decay`` at the
``train.decay_at`` fractions of the epochs (paper: x0.25 at 50/75/89/94 %).

The run directory follows ``ctsp simulate``: ``config.toml``, ``metrics.nc`` (per epoch; the
per-layer variables ``train_loss``, ``train_exit_error``, ``test_exit_error`` and
``val_exit_error`` have dims (epoch, layer)), ``checkpoint.pt`` (atomic, every epoch: model,
optimizers, metrics rows) and ``best.pt``. The shuffling, augmentation and dropout of epoch e come
from generators seeded by (seed, e), so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from . import data as datasets
from . import runs
from .config import DiscreteRunConfig, DiscreteTrainConfig
from .errors import DivergenceError
from .layers import ClassifierCE, LPred, recalibrate_batch_norm
from .rundir import prepare
from .runs import RunResult, resolve_device

# keys (or key prefixes ending in ".") that a resumed run may change; train.recalibrate_bn acts
# from the next evaluation on (it changes training only where training reads the running
# statistics: signal.bn_targets = "running" and the target-loop generators' inference pass)
RESUMABLE_KEYS = ("train.epochs", "device", "train.recalibrate_bn")


def build_network(config: DiscreteRunConfig, image_shape: tuple[int, int, int], classes: int):
    """The network of ``config.model`` and ``config.signal``, seeded by ``config.seed``
    (``models.spiking`` for ``arch = "snn"``, else ``models.discrete``)."""
    torch.manual_seed(config.seed)
    if config.model.arch == "snn":
        from models.spiking import build as build_snn

        return build_snn(config, image_shape, classes)
    from models.discrete import build

    return build(config.model, config.signal, image_shape, classes)


def learning_rate(train: DiscreteTrainConfig, epoch: int) -> float:
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


class Learner(Protocol):
    """What :class:`DiscreteTrainer` needs from a learning rule (sigprop or a baseline).

    A learner owns its optimizers and trains a network one minibatch at a time. ``names``
    names its exits: one prediction per exit (sigprop: every layer's early exit, Eq. 8; a
    baseline: its output, and auxiliary heads if it has them); the last exit is the network's
    prediction.
    """

    names: tuple[str, ...]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One update from (x (B, ...), y (B,)): (loss per exit, wrong predictions per exit)."""
        ...

    def predict_exits(self, x: Tensor) -> Tensor:
        """The class predicted at every exit, (B, E); called in eval mode without grad."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def state_dict(self) -> list[dict]: ...

    def load_state_dict(self, states: list[dict]) -> None: ...


class Sigprop:
    """Sigprop's learner: ``rules[i]`` trains layer i (and the target generator, for i = 0)
    with its own Adam optimizer, :class:`ctsp.layers.ClassifierCE` for a classification layer,
    else :class:`ctsp.layers.LPred` with the network's comparison. Each layer updates as soon
    as its (h_i, t_i) arrive (``DiscreteNetwork.pairs``)."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        self.net, self.names = net, tuple(net.names)
        lr = config.train.lr
        self.rules: list[LPred] = []
        for i in range(len(net.layers)):
            params = net.layer_parameters(i)
            last = i == len(net.layers) - 1
            if last and net.prediction == "classifier":
                self.rules.append(ClassifierCE(params, lr=lr))
            else:
                self.rules.append(LPred(params, compare=net.compare_name, lr=lr))

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        losses, wrong = [], []
        for name, rule, (h, t) in zip(self.names, self.rules, self.net.pairs(x), strict=True):
            try:
                loss, logits = rule.update(h, t, y)
            except DivergenceError:
                raise DivergenceError(
                    f"training diverged: NaN or Inf in the loss of layer {name}"
                ) from None
            losses.append(loss)
            wrong.append((logits.argmax(1) != y).sum())
        return torch.stack(losses), torch.stack(wrong)

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net.predict_exits(x)

    def set_lr(self, lr: float) -> None:
        for rule in self.rules:
            rule.set_lr(lr)

    def state_dict(self) -> list[dict]:
        return [rule.state_dict() for rule in self.rules]

    def load_state_dict(self, states: list[dict]) -> None:
        for rule, state in zip(self.rules, states, strict=True):
            rule.load_state_dict(state)


# train.rule -> "module:factory"; a factory takes (network, config) and returns a Learner
LEARNERS = {
    "sigprop": "ctsp.discrete:Sigprop",
    "bp": "ctsp.baselines:Backprop",
    "fa": "ctsp.baselines:FeedbackAlignment",
    "dfa": "ctsp.baselines:DirectFeedbackAlignment",
    "ll-bp": "ctsp.baselines:LocalLearning",
    "ll-fa": "ctsp.baselines:LocalLearning",
    "shallow": "ctsp.baselines:Shallow",
}


def make_learner(net, config: DiscreteRunConfig) -> Learner:
    """The learner of ``config.train.rule`` for ``net``; spiking networks (``arch = "snn"``)
    get theirs from ``ctsp.spiking.make_learner``."""
    target = "ctsp.spiking:make_learner" if config.model.arch == "snn" else None
    module, name = (target or LEARNERS[config.train.rule]).split(":")
    return getattr(importlib.import_module(module), name)(net, config)


class DiscreteTrainer:
    """A network, its learner (``config.train.rule``), training and evaluation; no files, no
    printing (see :func:`train`)."""

    def __init__(self, net, config: DiscreteRunConfig, device: torch.device) -> None:
        self.net, self.config, self.device = net, config, device
        self.learner = make_learner(net, config)
        self.names = self.learner.names

    def set_epoch(self, epoch: int) -> float:
        """Set the learning rate for (0-based) ``epoch``; returns it."""
        lr = learning_rate(self.config.train, epoch)
        self.learner.set_lr(lr)
        return lr

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One minibatch: (loss per exit, wrong early-exit predictions per exit), (E,) each."""
        return self.learner.train_batch(x, y)

    def train_epoch(self, data: datasets.Dataset, epoch: int, bar=None) -> dict:
        """One pass over the training set; the order, augmentation and dropout come from
        generators seeded by (seed, epoch). Returns per-layer mean losses and exit errors."""
        tc, dc, n = self.config.train, self.config.data, data.train_x.shape[0]
        seed = self.config.seed * 1_000_003 + epoch
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed + 1)  # dropout
        self.net.train()
        layers = len(self.names)
        loss_sum = torch.zeros(layers, dtype=torch.float64)
        wrong = torch.zeros(layers, dtype=torch.int64)
        seen = 0
        for idx in torch.randperm(n, generator=gen).split(tc.batch_size):
            if idx.shape[0] < 2:  # batch norm needs two samples: a last batch of one is left out
                continue
            x, y = data.train_x[idx].to(self.device), data.train_y[idx].to(self.device)
            if dc.crop or dc.flip:
                x = augment(x, gen, dc.crop, dc.flip)
            losses, w = self.train_batch(x, y)
            loss_sum += losses.double().cpu() * idx.shape[0]
            wrong += w.cpu()
            seen += idx.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"train err {int(wrong[-1]) / seen:.3f}", refresh=False)
        for p in self.net.parameters():
            if not bool(torch.isfinite(p).all()):
                raise DivergenceError("training diverged: NaN or Inf in the weights")
        seen = max(seen, 1)
        return {"loss": (loss_sum / seen).tolist(), "exit_error": (wrong.double() / seen).tolist()}

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> list[float]:
        """Early-exit test error (fraction) of every layer, in eval mode."""
        bs, layers = self.config.train.eval_batch_size, len(self.names)
        wrong = torch.zeros(layers, dtype=torch.int64)
        self.net.eval()
        try:
            for i in range(0, x.shape[0], bs):
                pred = self.learner.predict_exits(x[i : i + bs].to(self.device)).cpu()
                wrong += (pred != y[i : i + bs, None]).sum(0)
        finally:
            self.net.train()
        return (wrong.double() / max(x.shape[0], 1)).tolist()

    def state_dict(self) -> list[dict]:
        return self.learner.state_dict()

    def load_state_dict(self, states: list[dict]) -> None:
        self.learner.load_state_dict(states)

    # the EpochTrainer protocol of ctsp.runs.fit

    def train_metrics(self, data: datasets.Dataset, epoch: int, bar) -> dict:
        lr = self.set_epoch(epoch)
        stats = self.train_epoch(data, epoch, bar)
        return {
            "train_error": stats["exit_error"][-1],
            "train_loss": stats["loss"],
            "train_exit_error": stats["exit_error"],
            "lr": lr,
        }

    def recalibrate(self, data: datasets.Dataset) -> None:
        """``train.recalibrate_bn`` minibatches of a seeded permutation of the training set
        through :func:`ctsp.layers.recalibrate_batch_norm` (nothing when 0)."""
        tc = self.config.train
        if not tc.recalibrate_bn:
            return
        gen = torch.Generator().manual_seed(self.config.seed)
        order = torch.randperm(data.train_x.shape[0], generator=gen)
        chunks = order[: tc.recalibrate_bn * tc.batch_size].split(tc.batch_size)
        batches = (data.train_x[idx].to(self.device) for idx in chunks if idx.shape[0] > 1)
        recalibrate_batch_norm(self.net, batches)

    def eval_metrics(self, data: datasets.Dataset) -> dict:
        self.recalibrate(data)
        test = self.evaluate(data.test_x, data.test_y)
        row = {"test_error": test[-1], "test_exit_error": test}
        if data.val_x.shape[0]:
            val = self.evaluate(data.val_x, data.val_y)
            row.update(val_error=val[-1], val_exit_error=val)
        return row

    def extra_state(self) -> dict:
        return {"optimizers": self.state_dict()}

    def load_extra_state(self, ckpt: dict) -> None:
        self.load_state_dict(ckpt["optimizers"])

    def after_epoch(self, epoch: int, path: Path, last: bool) -> None:
        pass

    def summary(self, row: dict) -> str:
        exits = row["test_exit_error"]
        return "exits: " + " ".join(f"{n} {e:.1%}" for n, e in zip(self.names, exits, strict=True))


def train(
    config: DiscreteRunConfig,
    out: str | Path | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    log=None,
    stop_after: int | None = None,
) -> RunResult:
    """Train the discrete sigprop network of ``config`` and write its run directory.

    Args:
        config: the resolved configuration.
        out: run directory (default runs/<UTC timestamp>-<name>).
        force: overwrite an existing non-empty run directory.
        resume: continue the run in ``out`` from its checkpoint (the config may differ from the
            saved one only in ``train.epochs`` and ``device``).
        progress: show a progress bar within each epoch (stderr).
        log: callable receiving one summary line per epoch (default: print to stdout).
        stop_after: return after this (1-based) epoch, leaving a resumable run (the schedule
            stays that of ``train.epochs``).
    """
    log = log or (lambda line: print(line, flush=True))
    device = resolve_device(config.device)
    data = runs.load_data(config)
    net = build_network(config, data.image_shape, data.classes)
    path = prepare(Path(out) if out is not None else None, config.name, force=force, resume=resume)
    net = net.to(device)
    trainer = DiscreteTrainer(net, config, device)
    metrics = runs.fit(
        trainer,
        data,
        config,
        path,
        resume=resume,
        resumable=RESUMABLE_KEYS,
        progress=progress,
        log=log,
        stop_after=stop_after,
        layers=list(trainer.names),
    )
    return RunResult(path, metrics, net)
