"""Run configuration: frozen dataclasses loaded from TOML and overridden by CLI flags.

A configuration has four sections and three top-level keys::

    name = "digits-loop"      # run name (default run directory runs/<UTC time>-<name>)
    seed = 0
    device = "cpu"            # "cpu", "cuda" or "cuda:N"
    [data]     name, dir, validation
    [network]  sizes, loop, rate, tau
    [solver]   method, step, free_duration, clamped_duration, tol, check_every, rtol, atol
    [train]    epochs, batch_size, beta, beta_sign, symmetric, lr, loop_lr, persistent,
               chl_backend, eval_batch_size
    [record]   trajectories, trajectory_epochs, populations, stride, alignment_every

Every key is documented on its dataclass field below. Unknown keys, wrong types and out-of-range
values raise :class:`ctsp.errors.ConfigError` with one line naming the key. ``to_toml`` writes a
resolved configuration that ``load`` reads back to the same object.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SECTIONS = ("data", "network", "solver", "train", "record")
LOOP_MODES = ("learned", "fixed", "none")


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


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 20
    beta: float = 0.5  # nudging strength (> 0)
    beta_sign: str = "random"  # "positive" | "random" (random sign per minibatch)
    symmetric: bool = False  # nudge with +beta and -beta, update from their difference
    lr: tuple[float, ...] = (0.1, 0.05)  # per feed-forward projection, input side first
    loop_lr: float = 0.05  # loop-back projection (loop = "learned")
    persistent: bool = False  # start each example's free phase from its last fixed point
    chl_backend: str = "auto"  # "auto" | "numba" | "torch"
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        from .plasticity import BACKENDS

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
class RunConfig:
    name: str = "digits-loop"
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name, "name", self.name, "a non-empty name")
        _require(self.seed >= 0, "seed", self.seed, ">= 0")
        dev = self.device
        _require(
            dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()),
            "device",
            dev,
            '"cpu", "cuda" or "cuda:N"',
        )
        n_ff = len(self.network.sizes) - 1
        _require(
            len(self.train.lr) == n_ff,
            "train.lr",
            list(self.train.lr),
            f"one learning rate per feed-forward projection ({n_ff} for sizes "
            f"{list(self.network.sizes)})",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved configuration as TOML text that :func:`loads` reads back unchanged."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(d[k])}" for k in d if k not in SECTIONS]
        for s in SECTIONS:
            lines += ["", f"[{s}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[s].items()]
        return "\n".join(lines) + "\n"

    def diff(self, other: RunConfig) -> list[str]:
        """Dotted keys whose values differ between two configurations."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [k for k in a if a[k] != b[k]]


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


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a (possibly partial) nested dict."""
    return _build(RunConfig, values, "")


def loads(text: str, source: str = "<string>") -> RunConfig:
    """Parse TOML text into a validated :class:`RunConfig`."""
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return from_dict(values)


def bundled(name: str) -> Path | None:
    """Path of a ready-made config shipped with ctsp (``ctsp/configs/<name>.toml``), if any."""
    path = Path(__file__).parent / "configs" / f"{name}.toml"
    return path if path.is_file() else None


def bundled_names() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.toml"))


def load(path_or_name: str | Path) -> RunConfig:
    """Load a TOML config file, or a bundled config by name (see :func:`bundled_names`)."""
    path = Path(path_or_name)
    if not path.is_file():
        found = bundled(str(path_or_name))
        if found is None:
            raise ConfigError(
                f"config {str(path_or_name)!r} is neither a file nor a bundled config "
                f"({', '.join(bundled_names())})"
            )
        path = found
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    return loads(text, str(path))


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


def with_overrides(config: RunConfig, overrides: list[tuple[list[str], Any]]) -> RunConfig:
    """A new config with dotted-key overrides applied and validated."""
    d = config.to_dict()
    for path, value in overrides:
        node = d
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"unknown config section {'.'.join(path[:-1])!r}; valid: {', '.join(SECTIONS)}"
                )
            node = node[part]
        node[path[-1]] = value
    return from_dict(d)
