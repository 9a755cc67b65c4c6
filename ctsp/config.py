"""Run configuration: frozen dataclasses loaded from TOML and overridden by CLI flags.

Two root configurations share one machinery (TOML load/write, dotted overrides, validation,
bundled configs): :class:`RunConfig` for ``ctsp simulate`` (the continuous-time model, bundled in
``ctsp/configs/*.toml``) and :class:`DiscreteRunConfig` for ``ctsp train`` (discrete sigprop,
bundled in ``ctsp/configs/train/*.toml``). The functions below take the root class as ``cls``
(default :class:`RunConfig`).

A ``RunConfig`` has five sections and three top-level keys::

    name = "digits-loop"      # run name (default run directory runs/<UTC time>-<name>)
    seed = 0
    device = "cpu"            # "cpu", "cuda" or "cuda:N"
    [data]     name, dir, validation
    [network]  sizes, loop, rate, tau
    [solver]   method, step, free_duration, clamped_duration, tol, check_every, rtol, atol
    [train]    epochs, batch_size, beta, beta_sign, symmetric, lr, loop_lr, persistent,
               chl_backend, decay, decay_at, schedule, t_max, eval_batch_size
    [record]   trajectories, trajectory_epochs, populations, stride, alignment_every

A ``DiscreteRunConfig`` has the same top-level keys and four sections::

    [data]     name, dir, validation, crop, flip
    [model]    arch, hidden, channels, kernel, pool, width, dropout, batch_norm, slope,
               prediction, compare, time_steps, threshold, spike_loss
    [signal]   generator, into, sparse_features, eta, fixed, bn_targets, target_dropout
    [train]    epochs, batch_size, lr, decay, decay_at, schedule, t_max, rule, precision,
               eval_batch_size, recalibrate_bn

Every key is documented on its dataclass field below. Unknown keys, wrong types and out-of-range
values raise :class:`ctsp.errors.ConfigError` with one line naming the key. ``to_toml`` writes a
resolved configuration that ``load`` reads back to the same object.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

SECTIONS = ("data", "network", "solver", "train", "record")
LOOP_MODES = ("learned", "fixed", "none")
SCHEDULES = ("step", "cosine")


class ConfigBase:
    """What every root configuration shares: TOML output and comparison.

    A root is a frozen dataclass whose ``SECTIONS`` name its dataclass-valued fields (the TOML
    tables); its other fields are top-level keys. ``BUNDLED`` is the folder under
    ``ctsp/configs`` holding its ready-made configs, ``COMMAND`` the CLI command that runs it.
    """

    SECTIONS: ClassVar[tuple[str, ...]] = ()
    BUNDLED: ClassVar[str] = ""
    COMMAND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved configuration as TOML text that :func:`loads` reads back unchanged."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(d[k])}" for k in d if k not in self.SECTIONS]
        for s in self.SECTIONS:
            lines += ["", f"[{s}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[s].items()]
        return "\n".join(lines) + "\n"

    def diff(self, other: ConfigBase) -> list[str]:
        """Dotted keys whose values differ between two configurations."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [k for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # dataset name (see `ctsp data list`)
    dir: str = ""  # explicit data directory; "" = $CTSP_DATA, ~/.cache/ctsp, /usr/share/datasets
    validation: int = 0  # training examples held out for validation (seeded by `seed`)

    def __post_init__(self) -> None:
        from .data import DATASET_NAMES

        if self.name not in DATASET_NAMES:
            raise ConfigError(f"unknown dataset {self.name!r}; valid: {', '.join(DATASET_NAMES)}")
        _require(self.validation >= 0, "data.validation", self.validation, ">= 0")


@dataclass(frozen=True)
class NetworkConfig:
    sizes: tuple[int, ...] = (64, 256, 10)  # [input, hidden..., output]
    loop: str = "learned"  # loop-back output -> first hidden: "learned" | "fixed" | "none"
    rate: str = "hard_sigmoid"  # rate function rho: "hard_sigmoid" | "sigmoid"
    tau: float = 1.0  # neuron time constant r_j (time unit of the simulation)

    def __post_init__(self) -> None:
        from .layers import rate_function

        _require(
            len(self.sizes) >= 3 and min(self.sizes) >= 1,
            "network.sizes",
            list(self.sizes),
            "[input, hidden..., output], at least 3 positive sizes",
        )
        _choice("network.loop", self.loop, LOOP_MODES)
        rate_function(self.rate)
        _require(self.tau > 0, "network.tau", self.tau, "> 0")


@dataclass(frozen=True)
class SolverConfig:
    method: str = "euler"  # torchdiffeq method (see ctsp.solver.METHODS)
    step: float = 0.5  # step size eps (fixed-grid) / first step (adaptive), time units
    free_duration: float = 10.0  # free phase length (cap when tol > 0), time units
    clamped_duration: float = 2.0  # clamped phase length, time units
    tol: float = 0.0  # steady-state stop: max |ds/dt| per sample below tol; 0 = off
    check_every: int = 5  # steps between steady-state checks
    rtol: float = 1e-5  # adaptive methods only
    atol: float = 1e-6  # adaptive methods only

    def __post_init__(self) -> None:
        from .solver import check_method

        check_method(self.method)
        _require(self.step > 0, "solver.step", self.step, "> 0")
        _require(self.free_duration > 0, "solver.free_duration", self.free_duration, "> 0")
        _require(self.clamped_duration > 0, "solver.clamped_duration", self.clamped_duration, "> 0")
        _require(self.tol >= 0, "solver.tol", self.tol, ">= 0")
        _require(self.check_every >= 1, "solver.check_every", self.check_every, ">= 1")
        _require(self.rtol > 0 and self.atol > 0, "solver.rtol/atol", (self.rtol, self.atol), "> 0")


class LRSchedule:
    """The learning-rate schedule of a ``[train]`` section (fields ``epochs``, ``decay``,
    ``decay_at``, ``schedule``, ``t_max``), shared by both run configurations."""

    def lr_factor(self, epoch: int) -> float:
        """The factor on the learning rates in (0-based) ``epoch``.

        ``schedule = "step"``: ``decay`` for every milestone floor(f * epochs), f in
        ``decay_at``, that the epoch has reached (with 100 epochs and the paper's 0.5, 0.75,
        0.89, 0.94: epochs 50, 75, 89 and 94). ``"cosine"``: (1 + cos(pi e / T)) / 2 with
        T = ``t_max`` (or ``epochs``), the closed form of
        ``torch.optim.lr_scheduler.CosineAnnealingLR`` (minimum 0).
        """
        if self.schedule == "cosine":
            return (1 + math.cos(math.pi * epoch / (self.t_max or self.epochs))) / 2
        milestones = [int(f * self.epochs + 1e-9) for f in self.decay_at]
        return self.decay ** sum(epoch >= m for m in milestones)

    def _check_schedule(self) -> None:
        _require(0 < self.decay <= 1, "train.decay", self.decay, "in (0, 1]")
        _require(
            all(0 < f <= 1 for f in self.decay_at),
            "train.decay_at",
            list(self.decay_at),
            "in (0, 1]",
        )
        _choice("train.schedule", self.schedule, SCHEDULES)
        _require(self.t_max >= 0, "train.t_max", self.t_max, ">= 0")


@dataclass(frozen=True)
class TrainConfig(LRSchedule):
    epochs: int = 30
    batch_size: int = 20
    beta: float = 0.5  # nudging strength (> 0)
    beta_sign: str = "random"  # "positive" | "random" (random sign per minibatch)
    symmetric: bool = False  # nudge with +beta and -beta, update from their difference
    lr: tuple[float, ...] = (0.1, 0.05)  # per feed-forward projection, input side first
    loop_lr: float = 0.05  # loop-back projection (loop = "learned")
    persistent: bool = False  # start each example's free phase from its last fixed point
    chl_backend: str = "auto"  # "auto" | "numba" | "torch"
    decay: float = 1.0  # step decay factor of all learning rates (1 = constant rates) ...
    decay_at: tuple[float, ...] = (0.5, 0.75, 0.89, 0.94)  # ... at these fractions of the epochs
    schedule: str = "step"  # "step" (decay at decay_at) | "cosine" (annealing, period t_max)
    t_max: int = 0  # cosine: annealing period in epochs (0 = train.epochs)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        from .plasticity import BACKENDS

        self._check_schedule()
        _require(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, ">= 1")
        _require(self.beta > 0, "train.beta", self.beta, "> 0")
        _choice("train.beta_sign", self.beta_sign, ("positive", "random"))
        _require(all(v >= 0 for v in self.lr), "train.lr", list(self.lr), "all >= 0")
        _require(self.loop_lr >= 0, "train.loop_lr", self.loop_lr, ">= 0")
        _choice("train.chl_backend", self.chl_backend, BACKENDS)


@dataclass(frozen=True)
class RecordConfig:
    trajectories: int = 0  # test samples whose relaxations are recorded (0 = none)
    trajectory_epochs: int = 0  # also record every K epochs (0 = only at the end of the run)
    populations: tuple[str, ...] = ("all",)  # population names (h1, h2, …, out) or "all"
    stride: int = 1  # keep every `stride`-th solver step of a recorded relaxation
    alignment_every: int = 0  # loop alignment angles every N minibatches (0 = off)

    def __post_init__(self) -> None:
        _require(self.trajectories >= 0, "record.trajectories", self.trajectories, ">= 0")
        _require(
            self.trajectory_epochs >= 0, "record.trajectory_epochs", self.trajectory_epochs, ">= 0"
        )
        _require(self.stride >= 1, "record.stride", self.stride, ">= 1")
        _require(self.alignment_every >= 0, "record.alignment_every", self.alignment_every, ">= 0")


@dataclass(frozen=True)
class RunConfig(ConfigBase):
    SECTIONS: ClassVar[tuple[str, ...]] = SECTIONS
    BUNDLED: ClassVar[str] = ""
    COMMAND: ClassVar[str] = "simulate"

    name: str = "digits-loop"
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    def __post_init__(self) -> None:
        _check_top_level(self.name, self.seed, self.device)
        n_ff = len(self.network.sizes) - 1
        _require(
            len(self.train.lr) == n_ff,
            "train.lr",
            list(self.train.lr),
            f"one learning rate per feed-forward projection ({n_ff} for sizes "
            f"{list(self.network.sizes)})",
        )


# ---------------------------------------------------------------------------------------------
# ``ctsp train``: discrete sigprop (paper Sec. III-IV)
# ---------------------------------------------------------------------------------------------

DISCRETE_SECTIONS = ("data", "model", "signal", "train")
ARCHS = ("fc", "conv", "vgg8b", "snn")
RULES = ("sigprop", "bp", "fa", "dfa", "ll-bp", "ll-fa", "shallow")
SNN_RULES = ("sigprop", "bp", "shallow")  # Table V: SP (surrogate/voltage), BP, Shallow
PRECISIONS = ("float32", "float16", "bfloat16")
SPIKE_LOSSES = ("surrogate", "voltage")
PREDICTIONS = ("classifier", "target")
COMPARISONS = ("dot", "l2")
GENERATORS = ("target-only", "target-input", "target-loop", "target-loop-error")
TARGETS_INTO = ("hidden", "input", "sparse")
BN_TARGETS = ("input", "running", "joint")


@dataclass(frozen=True)
class TrainDataConfig(DataConfig):
    crop: int = 0  # random crop after zero-padding by this many pixels (0 = no augmentation)
    flip: bool = False  # random horizontal flip

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.crop >= 0, "data.crop", self.crop, ">= 0")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "fc"  # "fc" | "conv" (Table VI CONV) | "vgg8b" | "snn" (Table V spiking conv)
    hidden: tuple[int, ...] = (256, 256)  # fc: hidden layers; conv, vgg8b, snn: the dense head
    channels: tuple[int, ...] = (32, 64)  # conv, snn: channels of the conv layers
    kernel: int = 5  # conv: kernel size ("same" padding)
    pool: int = 3  # conv: max-pool size (stride 2) after every conv layer; 0 = none
    width: int = 1  # vgg8b: channel multiplier (2 = VGG8b(2x))
    dropout: float = 0.0  # dropout rate after every hidden activation
    batch_norm: bool = True  # batch norm before every hidden activation
    slope: float = 0.01  # leaky ReLU negative slope (0 = ReLU)
    prediction: str = "classifier"  # "classifier" (Fig. 2b) | "target" (output target, Fig. 2a)
    compare: str = "dot"  # O(h, t) of L_pred and the early exits: "dot" (Eq. 6) | "l2" (Eq. 7)
    time_steps: int = 4  # snn: simulation steps T; the classifier output is averaged over them
    threshold: float = 0.0  # snn: IF firing threshold; 0 = the rule's (0.5 sigprop, 1.0 else)
    spike_loss: str = "surrogate"  # snn + sigprop: each layer's loss sees the surrogate output
    #                                ("surrogate") or the pre-spike membrane voltage ("voltage")

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ARCHS)
        _require(self.time_steps >= 1, "model.time_steps", self.time_steps, ">= 1")
        _require(self.threshold >= 0, "model.threshold", self.threshold, ">= 0")
        _choice("model.spike_loss", self.spike_loss, SPIKE_LOSSES)
        _require(min(self.hidden) >= 1, "model.hidden", list(self.hidden), "positive sizes")
        _require(min(self.channels) >= 1, "model.channels", list(self.channels), "positive")
        _require(self.kernel >= 1 and self.kernel % 2 == 1, "model.kernel", self.kernel, "odd")
        _require(self.pool >= 0, "model.pool", self.pool, ">= 0")
        _require(self.width >= 1, "model.width", self.width, ">= 1")
        _require(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        _require(self.slope >= 0, "model.slope", self.slope, ">= 0")
        _choice("model.prediction", self.prediction, PREDICTIONS)
        _choice("model.compare", self.compare, COMPARISONS)


@dataclass(frozen=True)
class SignalConfig:
    generator: str = "target-only"  # Eq. 1 | "target-input" (Eq. 10) | "target-loop" (Eq. 11)
    #                                  | "target-loop-error" (Eq. 12)
    into: str = "hidden"  # first target shaped like h_1 (as in Eq. 1) | "input" (like x, taken
    #                       by layer 1) | "sparse" (Sec. III-E: shaped like layer 1's weights)
    sparse_features: int = 0  # fc first layer, into = "sparse": target size (0 = input size / 4)
    eta: float = 1.0  # target-loop-error: how much of the output error to integrate (Eq. 12)
    fixed: bool = False  # the target generator keeps its random weights (not trained)
    bn_targets: str = "input"  # batch-norm statistics: "input" (inputs only, Sec. III-D),
    #                            "running" (targets in inference mode), "joint" (inputs and targets)
    target_dropout: bool = False  # apply model.dropout to the target path too (independent masks
    #                               per target row); off: targets pass without dropout

    def __post_init__(self) -> None:
        _choice("signal.generator", self.generator, GENERATORS)
        _choice("signal.into", self.into, TARGETS_INTO)
        _require(self.sparse_features >= 0, "signal.sparse_features", self.sparse_features, ">= 0")
        _require(self.eta >= 0, "signal.eta", self.eta, ">= 0")
        _choice("signal.bn_targets", self.bn_targets, BN_TARGETS)


@dataclass(frozen=True)
class DiscreteTrainConfig(LRSchedule):
    epochs: int = 30
    batch_size: int = 128
    lr: float = 5e-4  # Adam learning rate of every layer's optimizer
    decay: float = 0.25  # step decay factor of the learning rate ...
    decay_at: tuple[float, ...] = (0.5, 0.75, 0.89, 0.94)  # ... at these fractions of the epochs
    schedule: str = "step"  # "step" (decay at decay_at) | "cosine" (annealing, period t_max)
    t_max: int = 0  # cosine: annealing period in epochs (0 = train.epochs)
    rule: str = "sigprop"  # learning rule: "sigprop" | baselines "bp", "fa", "dfa", "ll-bp",
    #                        "ll-fa" | "shallow" (only the classification layer trains)
    precision: str = "float32"  # "float16" (autocast + gradient scaling, CUDA) | "bfloat16"
    eval_batch_size: int = 1000
    recalibrate_bn: int = 0  # before each evaluation, recompute the batch-norm running
    #   statistics from this many training minibatches (inference path, no dropout, no update;
    #   ctsp.layers.recalibrate_batch_norm); 0 keeps the running averages of training

    def __post_init__(self) -> None:
        self._check_schedule()
        _choice("train.rule", self.rule, RULES)
        _require(self.recalibrate_bn >= 0, "train.recalibrate_bn", self.recalibrate_bn, ">= 0")
        _choice("train.precision", self.precision, PRECISIONS)
        _require(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 2, "train.batch_size", self.batch_size, ">= 2")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, ">= 1")
        _require(self.lr > 0, "train.lr", self.lr, "> 0")


@dataclass(frozen=True)
class DiscreteRunConfig(ConfigBase):
    """``ctsp train``: a discrete network trained by sigprop, every layer by its own loss."""

    SECTIONS: ClassVar[tuple[str, ...]] = DISCRETE_SECTIONS
    BUNDLED: ClassVar[str] = "train"
    COMMAND: ClassVar[str] = "train"

    name: str = "digits-fc"
    seed: int = 0
    device: str = "cpu"
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    train: DiscreteTrainConfig = field(default_factory=DiscreteTrainConfig)

    def __post_init__(self) -> None:
        _check_top_level(self.name, self.seed, self.device)
        if self.model.arch == "snn" and self.train.rule not in SNN_RULES:
            raise ConfigError(
                f'train.rule = {self.train.rule!r} is not available for model.arch = "snn" '
                f"(choose from {', '.join(SNN_RULES)})"
            )
        if self.train.rule != "sigprop" and self.model.prediction != "classifier":
            raise ConfigError(
                f"train.rule = {self.train.rule!r} trains a classification layer and needs "
                'model.prediction = "classifier"'
            )
        g = self.signal.generator
        if g.startswith("target-loop") and self.model.prediction != "classifier":
            raise ConfigError(
                f"signal.generator = {g!r} feeds the classification layer's output back "
                'and needs model.prediction = "classifier"'
            )
        if g == "target-input" and self.signal.into == "sparse":
            raise ConfigError(
                'signal.generator = "target-input" scales and shifts h_1 or x: use signal.into '
                '= "hidden" or "input", not "sparse"'
            )


ROOTS = (RunConfig, DiscreteRunConfig)


def _check_top_level(name: str, seed: int, device: str) -> None:
    _require(bool(name) and "/" not in name, "name", name, "a non-empty name")
    _require(seed >= 0, "seed", seed, ">= 0")
    _require(
        device == "cpu"
        or device == "cuda"
        or (device.startswith("cuda:") and device[5:].isdigit()),
        "device",
        device,
        '"cpu", "cuda" or "cuda:N"',
    )


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for {key}: {value!r} (expected {expected})")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"invalid value for {key}: {value!r}; valid: {', '.join(valid)}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the field's default; ints are accepted for floats."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"wrong type for {key}: {value!r} (expected {expected})")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not value:
            raise bad("a non-empty list")
        return tuple(_coerce(f"{key}[{i}]", v, default[0]) for i, v in enumerate(value))
    raise TypeError(f"unsupported config field type for {key}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    defaults = cls()
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        key = f"{where}{k}"
        if k not in names:
            valid = ", ".join(names)
            raise ConfigError(f"unknown config key {key!r}; valid keys in this section: {valid}")
        sub = getattr(defaults, k)
        if dataclasses.is_dataclass(sub):
            if not isinstance(v, dict):
                raise ConfigError(f"wrong type for {key}: expected a [{k}] table")
            kwargs[k] = _build(type(sub), v, f"{key}.")
        else:
            kwargs[k] = _coerce(key, v, sub)
    return cls(**kwargs)


def from_dict(values: dict[str, Any], cls: type | None = None) -> Any:
    """Build and validate a root config (default :class:`RunConfig`) from a partial nested dict."""
    return _build(cls or RunConfig, values, "")


def loads(text: str, source: str = "<string>", cls: type | None = None) -> Any:
    """Parse TOML text into a validated root config (default :class:`RunConfig`)."""
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return from_dict(values, cls)


def _bundled_dir(cls: type | None) -> Path:
    return Path(__file__).parent / "configs" / (cls or RunConfig).BUNDLED


def bundled(name: str, cls: type | None = None) -> Path | None:
    """Path of a ready-made config shipped with ctsp, if any: ``ctsp/configs/<name>.toml`` for
    :class:`RunConfig`, ``ctsp/configs/train/<name>.toml`` for :class:`DiscreteRunConfig`."""
    path = _bundled_dir(cls) / f"{name}.toml"
    return path if path.is_file() else None


def bundled_names(cls: type | None = None) -> list[str]:
    return sorted(p.stem for p in _bundled_dir(cls).glob("*.toml"))


def load(path_or_name: str | Path, cls: type | None = None) -> Any:
    """Load a TOML config file, or a bundled config by name (see :func:`bundled_names`)."""
    cls = cls or RunConfig
    path = Path(path_or_name)
    if not path.is_file():
        found = bundled(str(path_or_name), cls)
        if found is None:
            for other in ROOTS:
                if other is not cls and bundled(str(path_or_name), other) is not None:
                    raise ConfigError(
                        f"config {str(path_or_name)!r} is a bundled `ctsp {other.COMMAND}` "
                        f"config, not a `ctsp {cls.COMMAND}` one"
                    )
            raise ConfigError(
                f"config {str(path_or_name)!r} is neither a file nor a bundled config "
                f"({', '.join(bundled_names(cls))})"
            )
        path = found
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    return loads(text, str(path), cls)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value in TOML syntax; bare words are strings)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def with_overrides(config: Any, overrides: list[tuple[list[str], Any]]) -> Any:
    """A new config of the same root class with dotted-key overrides applied and validated."""
    d, sections = config.to_dict(), type(config).SECTIONS
    for path, value in overrides:
        node = d
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"unknown config section {'.'.join(path[:-1])!r}; valid: {', '.join(sections)}"
                )
            node = node[part]
        node[path[-1]] = value
    return from_dict(d, type(config))
