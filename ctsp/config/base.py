"""The configuration machinery both root configurations share.

A root configuration is a frozen dataclass (:class:`ConfigBase`) whose ``SECTIONS`` name its
dataclass-valued fields (the TOML tables); its other fields are top-level keys. Every field is
declared with :func:`option`: its default, its meaning and, for a choice, the registry of valid
values (``ctsp.registry.Registry``) that validation, error messages and ``--help-config`` use.
TOML load/write, dotted overrides (``--set train.beta=1.0``), one-line validation errors
(:class:`ctsp.errors.ConfigError` naming the key) and the bundled configs live here.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError

ROOTS: dict[str, type] = {}  # COMMAND -> root configuration class, in definition order


def option(default: Any, help: str, choices: Any = None, valid: Any = None) -> Any:
    """A config field: its ``default``, its meaning (``help``) and, for a choice, the valid
    values (a :class:`ctsp.registry.Registry` or a tuple of names), checked on construction.
    ``valid``: for a choice the section checks itself, a callable giving the valid values as
    text (for ``--help-config``)."""
    meta = {"help": help, "choices": choices, "valid": valid}
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A config field holding a section (a TOML table) of type ``cls``."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "choices": None})


class Section:
    """A config section (or root): on construction every field declared with ``choices``
    is checked against them, then :meth:`check` runs the section's other rules. ``PREFIX`` is
    the dotted prefix of its keys in messages ("train.", "" for a root)."""

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None:
                check_choice(f"{self.PREFIX}{f.name}", getattr(self, f.name), choices)
        self.check()

    def check(self) -> None:
        """Rules beyond the choices (ranges, consistency); raise ConfigError naming the key."""


def check_choice(key: str, value: Any, choices: Any) -> None:
    """Refuse ``value`` (or any item of a tuple value) not among ``choices``."""
    for v in value if isinstance(value, tuple) else (value,):
        if hasattr(choices, "check"):
            choices.check(v, key)
        elif v not in choices:
            raise ConfigError(f"invalid value for {key}: {v!r}; valid: {', '.join(choices)}")


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """Every key of the config class ``cls``: (dotted key, type, default, valid values, meaning),
    sections expanded in order (what ``--help-config`` prints)."""
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), f"{prefix}{f.name}.")
            continue
        choices, valid = f.metadata.get("choices"), f.metadata.get("valid")
        valid = valid() if valid is not None else ", ".join(choices) if choices is not None else ""
        rows.append(
            (f"{prefix}{f.name}", _type_name(value), _toml_value(value), valid, f.metadata["help"])
        )
    return rows


def _type_name(value: Any) -> str:
    if isinstance(value, tuple):  # an empty default: a list of integers (see _coerce)
        return f"list of {_type_name(value[0] if value else 0)}"
    return {bool: "bool", int: "int", float: "float", str: "string"}[type(value)]


class ConfigBase(Section):
    """What every root configuration shares: TOML output and comparison.

    A root is a frozen dataclass whose ``SECTIONS`` name its dataclass-valued fields (the TOML
    tables); its other fields are top-level keys. ``BUNDLED`` is the folder under
    ``ctsp/configs`` holding its ready-made configs, ``COMMAND`` the CLI command that runs it.
    """

    SECTIONS: ClassVar[tuple[str, ...]] = ()
    BUNDLED: ClassVar[str] = ""
    COMMAND: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.COMMAND:
            ROOTS[cls.COMMAND] = cls

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


TENSORBOARD_HELP = (
    "write per-epoch scalars, loop angles and weight histograms to RUN/tensorboard (needs the "
    "tensorboard package: pip install -e '.[tensorboard]')"
)
THREADS_HELP = (
    "CPU threads of torch and numba for the run (0: torch's as they are, numba follows them)"
)


def _check_top_level(name: str, seed: int, device: str, threads: int) -> None:
    _require(bool(name) and "/" not in name, "name", name, "a non-empty name without '/'")
    _require(threads >= 0, "threads", threads, ">= 0")
    _require(0 <= seed < 2**32, "seed", seed, "in [0, 2**32)")
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


# a field's default type -> what a value of it must be, and the words for it (bool before int:
# a bool is an int)
_SCALARS = (
    (bool, lambda v: isinstance(v, bool), "true or false"),
    (int, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    (float, lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    (str, lambda v: isinstance(v, str), "a string"),
)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the field's default; ints are accepted for floats
    (which must be finite); a list field with an empty default holds integers and may be
    empty."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"wrong type for {key}: {value!r} (expected {expected})")

    if isinstance(default, tuple):  # a list like the default; an empty default: of integers
        if not isinstance(value, list | tuple) or (default and not value):
            raise bad("a non-empty list" if default else "a list of integers")
        proto = default[0] if default else 0
        return tuple(_coerce(f"{key}[{i}]", v, proto) for i, v in enumerate(value))
    kind, accepts, expected = next((t for t in _SCALARS if isinstance(default, t[0])), (None,) * 3)
    if kind is None:
        raise TypeError(f"unsupported config field type for {key}")
    if not accepts(value):
        raise bad(expected)
    if kind is float and not math.isfinite(value):
        raise bad("a finite number")
    return float(value) if kind is float else value


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


def _root(cls: type | None) -> type:
    return cls or ROOTS["simulate"]


def from_dict(values: dict[str, Any], cls: type | None = None) -> Any:
    """Build and validate a root config (default ``RunConfig``) from a partial nested dict."""
    return _build(_root(cls), values, "")


def loads(text: str, source: str = "<string>", cls: type | None = None) -> Any:
    """Parse TOML text into a validated root config (default ``RunConfig``)."""
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return from_dict(values, cls)


def _bundled_dir(cls: type | None) -> Path:
    return Path(__file__).parent.parent / "configs" / _root(cls).BUNDLED


def bundled(name: str, cls: type | None = None) -> Path | None:
    """Path of a ready-made config shipped with ctsp, if any: ``ctsp/configs/<name>.toml`` for
    ``RunConfig``, ``ctsp/configs/train/<name>.toml`` for ``DiscreteRunConfig``."""
    path = _bundled_dir(cls) / f"{name}.toml"
    return path if path.is_file() else None


def bundled_names(cls: type | None = None) -> list[str]:
    return sorted(p.stem for p in _bundled_dir(cls).glob("*.toml"))


def load(path_or_name: str | Path, cls: type | None = None) -> Any:
    """Load a TOML config file, or a bundled config by name (see :func:`bundled_names`)."""
    cls = _root(cls)
    path = Path(path_or_name)
    if not path.is_file():
        found = bundled(str(path_or_name), cls)
        if found is None:
            for other in ROOTS.values():
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
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a TOML config: it is not UTF-8 text") from None
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


@dataclasses.dataclass(frozen=True)
class ParallelConfig(Section):
    """The ``parallel`` section of both run commands (``ctsp.parallel.build_backend`` reads it)."""

    PREFIX: ClassVar[str] = "parallel."

    stages: int = option(
        1, "layer pipeline: consecutive layers split into this many processes (ctsp train, sigprop)"
    )
    replicas: int = option(
        1,
        "data-parallel replicas: each process a shard of every minibatch (any rule, both commands)",
    )
    split: tuple[int, ...] = option(
        (), "layers per pipeline stage, input side first (e.g. [3, 5]); [] = by multiply-adds"
    )

    def check(self) -> None:
        _require(self.stages >= 1, "parallel.stages", self.stages, ">= 1")
        _require(
            not self.split or (len(self.split) == self.stages and min(self.split) >= 1),
            "parallel.split",
            list(self.split),
            "[] or one layer count >= 1 per stage (parallel.stages of them)",
        )
        _require(self.replicas >= 1, "parallel.replicas", self.replicas, ">= 1")
        _require(
            self.stages == 1 or self.replicas == 1,
            "parallel.replicas",
            self.replicas,
            "1 when parallel.stages > 1 (stages x replicas are not combined yet)",
        )
