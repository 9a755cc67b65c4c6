"""``DiscreteRunConfig``: discrete and spiking sigprop of ``ctsp train`` (bundled in
ctsp/configs/train/*.toml).

Four sections and three top-level keys::

    name, seed, device, threads
    [data]     name, dir, validation, crop, flip
    [model]    arch, hidden, channels, kernel, pool, width, dropout, batch_norm, slope,
               prediction, compare, time_steps, threshold, neuron, spike_loss
    [signal]   generator, into, sparse_features, eta, fixed, bn_targets, target_dropout
    [train]    epochs, schedule_epochs, batch_size, lr, decay, decay_at, schedule, t_max, rule,
               precision, eval_batch_size, recalibrate_bn, health

Every key is documented on its field (``ctsp train --help-config`` prints them all). The
learning rules (``train.rule``) come from the registry of the architecture's family
(:data:`ARCHS`: ``ctsp.discrete.RULES`` for fc, conv and vgg8b, ``ctsp.spiking.RULES`` for
snn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .. import discrete, spiking
from ..errors import ConfigError
from ..nn import BN_TARGETS, COMPARISONS, GENERATORS, PRECISIONS, TARGETS_INTO, check_precision
from ..registry import Registry
from .base import (
    TENSORBOARD_HELP,
    THREADS_HELP,
    ConfigBase,
    ParallelConfig,
    Section,
    _check_top_level,
    _require,
    option,
    section,
)
from .continuous import DECAY_AT, DataConfig
from .schedule import HEALTH, SCHEDULES, LRSchedule

# model.arch -> the learning rules of its family
ARCHS = Registry(
    "architecture",
    {"fc": discrete.RULES, "conv": discrete.RULES, "vgg8b": discrete.RULES, "snn": spiking.RULES},
)


def make_learner(net, config):
    """The ``ctsp.discrete.Learner`` of ``config.train.rule`` for ``net``, from the registry of
    the architecture's family (:data:`ARCHS`)."""
    return ARCHS[config.model.arch][config.train.rule](net, config)


def _valid_rules() -> str:
    return "; ".join(f"{arch}: {', '.join(rules)}" for arch, rules in ARCHS.items())


@dataclass(frozen=True)
class TrainDataConfig(DataConfig):
    crop: int = option(0, "random crop after zero-padding by this many pixels (0 = none)")
    flip: bool = option(False, "random horizontal flip")

    def check(self) -> None:
        super().check()
        _require(self.crop >= 0, "data.crop", self.crop, ">= 0")


@dataclass(frozen=True)
class ModelConfig(Section):
    PREFIX: ClassVar[str] = "model."

    arch: str = option("fc", "fc | conv (Table VI) | vgg8b | snn (Table V spiking conv)", ARCHS)
    hidden: tuple[int, ...] = option((256, 256), "fc: hidden layers; conv, vgg8b, snn: dense head")
    channels: tuple[int, ...] = option((32, 64), "conv, snn: channels of the conv layers")
    kernel: int = option(5, 'conv, snn: kernel size ("same" padding; odd)')
    pool: int = option(3, "conv, snn: max-pool size (stride 2) after every conv layer; 0 = none")
    width: int = option(1, "vgg8b: channel multiplier (2 = VGG8b(2x))")
    dropout: float = option(0.0, "dropout rate after every hidden activation")
    batch_norm: bool = option(True, "batch norm before every hidden activation")
    slope: float = option(0.01, "leaky ReLU negative slope (0 = ReLU)")
    prediction: str = option("classifier", "how the last layer predicts", discrete.PREDICTIONS)
    compare: str = option("dot", "O(h, t) of L_pred and the early exits (Eq. 6/7)", COMPARISONS)
    time_steps: int = option(4, "snn: simulation steps T; outputs are averaged over them")
    threshold: float = option(0.0, "snn: firing threshold; 0 = the rule's (0.5 sigprop, 1.0 else)")
    neuron: str = option("if", "snn: spiking neuron model", spiking.NEURON_MODELS)
    spike_loss: str = option(
        "surrogate", "snn + sigprop: what each layer's loss sees", spiking.SPIKE_LOSSES
    )

    def check(self) -> None:
        _require(self.time_steps >= 1, "model.time_steps", self.time_steps, ">= 1")
        _require(self.threshold >= 0, "model.threshold", self.threshold, ">= 0")
        _require(min(self.hidden) >= 1, "model.hidden", list(self.hidden), "positive sizes")
        _require(min(self.channels) >= 1, "model.channels", list(self.channels), "positive")
        _require(self.kernel >= 1 and self.kernel % 2 == 1, "model.kernel", self.kernel, "odd")
        _require(self.pool >= 0, "model.pool", self.pool, ">= 0")
        _require(self.width >= 1, "model.width", self.width, ">= 1")
        _require(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        _require(self.slope >= 0, "model.slope", self.slope, ">= 0")


@dataclass(frozen=True)
class SignalConfig(Section):
    PREFIX: ClassVar[str] = "signal."

    generator: str = option(
        "target-only",
        "target generator: Eq. 1 | target-input (Eq. 10) | target-loop (Eq. 11) | "
        "target-loop-error (Eq. 12)",
        GENERATORS,
    )
    into: str = option("hidden", "where the first target enters", TARGETS_INTO)
    sparse_features: int = option(
        0, 'fc first layer, into = "sparse": target size (0 = input size / 4)'
    )
    eta: float = option(1.0, "target-loop-error: how much of the output error to integrate")
    fixed: bool = option(False, "the target generator keeps its random weights (not trained)")
    bn_targets: str = option("input", "batch-norm statistics of the target path", BN_TARGETS)
    target_dropout: bool = option(
        False, "apply model.dropout to the target path too (independent masks per target row)"
    )

    def check(self) -> None:
        _require(self.sparse_features >= 0, "signal.sparse_features", self.sparse_features, ">= 0")
        _require(self.eta >= 0, "signal.eta", self.eta, ">= 0")


@dataclass(frozen=True)
class DiscreteTrainConfig(Section, LRSchedule):
    PREFIX: ClassVar[str] = "train."

    epochs: int = option(30, "training epochs")
    schedule_epochs: int = option(
        0,
        "epochs the learning-rate schedule is planned over (0 = train.epochs); --resume with "
        "more epochs keeps the plan the run started with, the new epochs at its last rate",
    )
    batch_size: int = option(128, "minibatch size (>= 2: batch norm)")
    lr: float = option(5e-4, "Adam learning rate of every layer's optimizer")
    decay: float = option(0.25, "step decay factor of the learning rate")
    decay_at: tuple[float, ...] = option(
        DECAY_AT, "fractions of the planned epochs where decay applies"
    )
    schedule: str = option("step", "learning-rate schedule", SCHEDULES)
    t_max: int = option(0, "cosine: annealing period in epochs (0 = the planned epochs)")
    rule: str = option("sigprop", "learning rule (by model.arch)", valid=_valid_rules)
    precision: str = option(
        "float32",
        "autocast type of the layers' products (float16: CUDA only; bfloat16 pays on CPUs "
        "with AVX512-BF16 or AMX and on CUDA); weights and optimizer states stay float32",
        PRECISIONS,
    )
    eval_batch_size: int = option(1000, "minibatch size of evaluation")
    health: str = option(
        "warn", "a run at chance or saturated after an epoch (ctsp.runs.health)", HEALTH
    )
    recalibrate_bn: int = option(
        0,
        "before each evaluation, recompute the batch-norm running statistics from this many "
        "training minibatches (0 keeps the running averages of training)",
    )

    def check(self) -> None:
        self.check_schedule()
        _require(self.recalibrate_bn >= 0, "train.recalibrate_bn", self.recalibrate_bn, ">= 0")
        _require(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 2, "train.batch_size", self.batch_size, ">= 2")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, ">= 1")
        _require(self.lr > 0, "train.lr", self.lr, "> 0")


@dataclass(frozen=True)
class TrainRecordConfig(Section):
    PREFIX: ClassVar[str] = "record."

    tensorboard: bool = option(False, TENSORBOARD_HELP)


@dataclass(frozen=True)
class DiscreteRunConfig(ConfigBase):
    """``ctsp train``: a discrete network trained by sigprop, every layer by its own loss."""

    SECTIONS: ClassVar[tuple[str, ...]] = ("data", "model", "signal", "train", "parallel", "record")
    BUNDLED: ClassVar[str] = "train"
    COMMAND: ClassVar[str] = "train"

    name: str = option("digits-fc", "run name (default run directory runs/<UTC time>-<name>)")
    seed: int = option(0, "random seed of weights, shuffling, augmentation and dropout")
    device: str = option("cpu", '"cpu", "cuda" or "cuda:N"')
    threads: int = option(0, THREADS_HELP)
    data: TrainDataConfig = section(TrainDataConfig, "the dataset and augmentation")
    model: ModelConfig = section(ModelConfig, "the network")
    signal: SignalConfig = section(SignalConfig, "the learning signal (target generator)")
    train: DiscreteTrainConfig = section(DiscreteTrainConfig, "training")
    parallel: ParallelConfig = section(ParallelConfig, "training over several processes")
    record: TrainRecordConfig = section(TrainRecordConfig, "recordings")

    def network_summary(self) -> str:
        """The network and rule in a few words (``ctsp configs``), e.g. "vgg8b x1, sigprop"."""
        m = self.model
        head = "-".join(map(str, m.hidden))
        convs = f"conv {'-'.join(map(str, m.channels))} k{m.kernel}, fc {head}"
        arch = {
            "fc": f"fc {head}",
            "conv": convs,
            "vgg8b": f"vgg8b x{m.width}, fc {head}",
            "snn": f"snn {convs}, T {m.time_steps}",
        }.get(m.arch, m.arch)
        return f"{arch}, {self.train.rule}"

    def check(self) -> None:
        _check_top_level(self.name, self.seed, self.device, self.threads)
        model, rule = self.model, self.train.rule
        rules = ARCHS[model.arch]
        if rule not in rules:
            raise ConfigError(
                f"invalid value for train.rule: {rule!r} (model.arch = {model.arch!r}); "
                f"valid: {', '.join(rules)}"
            )
        stages = self.parallel.stages
        if stages > 1 and rule != "sigprop":
            raise ConfigError(
                f"parallel.stages = {stages} pipelines sigprop's layers; train.rule = {rule!r} "
                "cannot be pipelined (BP, FA and DFA send the error back through every layer, "
                "the local-learning rules have no layer-range training yet)"
            )
        if self.parallel.replicas > 1 and self.train.precision == "float16":
            raise ConfigError(
                "train.precision = 'float16' skips a step where the scaled gradients overflow, "
                "which parallel.replicas > 1 would have to agree on (not done yet); use "
                "bfloat16 or float32"
            )
        if rule != "sigprop" and model.prediction != "classifier":
            raise ConfigError(
                f"train.rule = {rule!r} trains a classification layer and needs "
                'model.prediction = "classifier"'
            )
        g = self.signal.generator
        if g.startswith("target-loop") and not discrete.PREDICTIONS[model.prediction].classifier:
            raise ConfigError(
                f"signal.generator = {g!r} feeds the classification layer's output back "
                'and needs model.prediction = "classifier"'
            )
        if g == "target-input" and not TARGETS_INTO[self.signal.into].like_activity:
            raise ConfigError(
                'signal.generator = "target-input" scales and shifts h_1 or x: use signal.into '
                '= "hidden" or "input", not "sparse"'
            )
        if model.arch == "snn":
            self._check_spiking()
        check_precision(self.train.precision, self.device)

    def _check_spiking(self) -> None:
        model, rule = self.model, self.train.rule
        if spiking.SPIKE_LOSSES[model.spike_loss].voltage and rule != "sigprop":
            raise ConfigError(
                f'model.spike_loss = "voltage" is a sigprop variant; train.rule = {rule!r} needs '
                '"surrogate"'
            )
        if model.prediction != "classifier":
            raise ConfigError(
                'model.arch = "snn" has a classification layer: use model.prediction = "classifier"'
            )
        if model.dropout:
            raise ConfigError('model.dropout is not available for model.arch = "snn" (use 0)')
