"""A sweep's spec (``SPEC.toml``) and the trials it stands for.

A spec names the command, a base config, the keys it fixes, the keys it sweeps and the seeds::

    command = "train"               # or "simulate"
    config = "fc-3x1000-fmnist"     # a bundled name, or a file (relative to the spec); none:
                                    # the command's default config (the digits demo)
    seeds = 2                       # each setting with seeds seed, seed + 1 (the config's seed)
    sample_seed = 0                 # seeds the draws of [random]
    [set]                           # keys every trial sets
    "train.epochs" = 3
    [grid]                          # every combination of these values
    "train.lr" = [1e-3, 3e-3]
    [variants]                      # named settings of several keys each, compared as
    ep = { config = "ep-digits" }   # one swept dimension ("variant"): a bundled config (or
    fixed = { "network.loop" = "fixed" }  # file) and keys; the [set] keys apply to all
    [random]                        # `samples` draws of each key from its distribution
    samples = 4
    "train.beta" = { loguniform = [0.1, 1.0] }    # uniform, loguniform, randint, choice
    [search]                        # optional, Ray Tune's own (``ctsp.sweeps.search``)
    algorithm = "optuna"            # propose the `samples` settings of the [random] keys in
                                    # turn, each from the results so far, instead of drawing them
    scheduler = "asha"              # stop trials whose validation error trails (ASHA)
    grace_period = 2                # epochs every trial runs before it may be stopped
    reduction_factor = 3            # 1 / the fraction of trials that go on at each rung

A trial is one setting (a variant, a grid point and, with ``[random]``, a draw) with one
seed; its name lists the swept keys and the seed (``train.lr=0.001,seed=1``) and is its run
directory's name under ``DIR/trials``. The trials are a function of the spec alone (the draws
seeded by ``sample_seed``), so a sweep run again on its directory finds the same trials. A
search's trials are not: the algorithm proposes them as results come in (seeded by
``sample_seed``), so a search has one seed and no grid, and its directory records the trials
proposed so far.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ROOTS, describe, load
from ..errors import ConfigError
from ..registry import Registry

SPEC_KEYS = (
    "command", "config", "seeds", "sample_seed", "set", "grid", "random", "search", "variants"
)  # fmt: skip
VARIANT = "variant"  # the swept dimension of a spec's [variants]
SEARCH_INTEGERS = {"grace_period": 1, "reduction_factor": 2}  # each with its least value
SEARCH_KEYS = ("algorithm", "scheduler", *SEARCH_INTEGERS)


@dataclass(frozen=True)
class Distribution:
    """A ``[random]`` distribution: ``draw(rng, *args)`` a value with numpy, ``optuna(*args)``
    the same distribution for a search algorithm (an ``optuna.distributions`` object).
    ``indexed``: the search algorithm draws the index of one of ``args`` (the values may be
    lists, which a search algorithm's categories cannot be)."""

    draw: Callable[..., Any]
    optuna: Callable[..., Any]
    indexed: bool = False


def _optuna(name: str, **fixed) -> Callable[..., Any]:
    def make(*args):
        import optuna.distributions as od

        return getattr(od, name)(*args, **fixed)

    return make


DISTRIBUTIONS: Registry[Distribution] = Registry(
    "distribution",
    {
        "uniform": Distribution(  # [low, high]
            lambda rng, low, high: float(rng.uniform(low, high)), _optuna("FloatDistribution")
        ),
        "loguniform": Distribution(  # [low, high], both > 0
            lambda rng, low, high: float(math.exp(rng.uniform(math.log(low), math.log(high)))),
            _optuna("FloatDistribution", log=True),
        ),
        "randint": Distribution(  # [low, high], both included
            lambda rng, low, high: int(rng.integers(low, high, endpoint=True)),
            _optuna("IntDistribution"),
        ),
        "choice": Distribution(  # one of the values
            lambda rng, *values: values[int(rng.integers(len(values)))],
            lambda *values: _optuna("CategoricalDistribution")(list(range(len(values)))),
            indexed=True,
        ),
    },
)


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: the swept keys' values, the seed, and the run directory's name."""

    params: dict[str, Any]
    seed: int
    sample: int | None = None  # the draw of [random], if the spec has one

    @property
    def name(self) -> str:
        parts = [f"{k}={_text(v)}" for k, v in self.params.items()]
        if self.sample is not None:
            parts.insert(0, f"sample={self.sample}")
        return ",".join([*parts, f"seed={self.seed}"])

    def overrides(self) -> list[tuple[list[str], Any]]:
        """The config keys this trial sets (its variant's are the spec's: ``config_of``)."""
        keys = [(k.split("."), v) for k, v in self.params.items() if k != VARIANT]
        return keys + [(["seed"], self.seed)]


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated spec (see the module docstring)."""

    command: str
    config: str
    seeds: int = 1
    sample_seed: int = 0
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, dict] = field(default_factory=dict)
    samples: int = 0
    search: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def base(self, variant: str | None = None):
        """The base config (``variant``'s, where given) with its keys and the ``[set]`` keys
        applied."""
        from ..config import with_overrides

        cls = ROOTS[self.command]
        keys = dict(self.variants[variant]) if variant is not None else {}
        name = keys.pop("config", self.config)
        overrides = [(k.split("."), v) for k, v in {**keys, **self.set}.items()]
        return with_overrides(load(name, cls) if name else cls(), overrides)

    def config_of(self, trial: Trial, threads: int | None = None):
        """The run config of ``trial`` (with ``threads`` when given)."""
        from ..config import with_overrides

        extra = [] if threads is None else [(["threads"], threads)]
        return with_overrides(self.base(trial.params.get(VARIANT)), trial.overrides() + extra)

    def dimensions(self) -> list[str]:
        """The swept dimensions of a settings' grid: the variant, then the grid's keys."""
        return [*([VARIANT] if self.variants else []), *self.grid]

    def swept(self) -> list[str]:
        """The swept keys: the variant, the grid's, then the random ones."""
        return [*self.dimensions(), *self.random]

    @property
    def searched(self) -> bool:
        """Whether a search algorithm proposes the trials (none are known in advance)."""
        return "algorithm" in self.search

    def trials(self) -> list[Trial]:
        """Every trial, settings in order (the grid's last key fastest), seeds innermost; none
        for a search (its trials are proposed as it runs: ``runner.trials``)."""
        if self.searched:
            return []
        grid = {**({VARIANT: list(self.variants)} if self.variants else {}), **self.grid}
        points = [dict(zip(grid, values, strict=True)) for values in _product(grid)]
        draws: list[tuple[int | None, dict]] = [(None, {})]
        if self.random:
            rng = np.random.default_rng(self.sample_seed)
            draws = [
                (k, {key: _draw(rng, key, dist) for key, dist in self.random.items()})
                for k in range(self.samples)
            ]
        firsts = {v: self.base(v).seed for v in self.variants or [None]}
        return [
            Trial({**point, **drawn}, firsts[point.get(VARIANT)] + s, sample)
            for point in points
            for sample, drawn in draws
            for s in range(self.seeds)
        ]


def _product(grid: dict[str, list]) -> list[tuple]:
    combos: list[tuple] = [()]
    for values in grid.values():
        combos = [(*c, v) for c in combos for v in values]
    return combos


def _draw(rng: np.random.Generator, key: str, dist: dict) -> Any:
    ((name, args),) = dist.items()
    return DISTRIBUTIONS[name].draw(rng, *args)


BUNDLED = Path(__file__).parent.parent / "configs" / "sweeps"


def bundled_specs() -> list[str]:
    """The names of the sweep specs shipped with ctsp (``ctsp/configs/sweeps``)."""
    return sorted(p.stem for p in BUNDLED.glob("*.toml"))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate ``SPEC.toml`` (a file, or the name of a bundled spec): its keys, the
    command, the base config (resolved relative to the spec's folder), the swept and set keys
    (config keys of the command), the grid's lists and the distributions. One-line
    ConfigErrors."""
    path = Path(path)
    if not path.is_file() and (BUNDLED / f"{path}.toml").is_file():
        path = BUNDLED / f"{path}.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read sweep spec {path}: {getattr(e, 'strerror', e)} (bundled specs: "
            f"{', '.join(bundled_specs())})"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid: {', '.join(SPEC_KEYS)}")
    command = raw.get("command")
    if command not in ROOTS:
        raise ConfigError(f"{path}: command must be one of {', '.join(ROOTS)} (got {command!r})")
    config = _resolved({"config": str(raw.get("config", ""))}, path)["config"]
    random = dict(raw.get("random", {}))
    samples = random.pop("samples", 0)
    variants = {
        name: _resolved(dict(keys), path) if isinstance(keys, dict) else keys
        for name, keys in dict(raw.get("variants", {})).items()
    }
    spec = SweepSpec(
        command, config, raw.get("seeds", 1), raw.get("sample_seed", 0), dict(raw.get("set", {})),
        dict(raw.get("grid", {})), random, samples, dict(raw.get("search", {})), variants,
    )  # fmt: skip
    _check(spec, path)
    return spec


def _resolved(keys: dict, path: Path) -> dict:
    """``keys`` with a ``config`` that names a file beside the spec as that file's path."""
    config = str(keys.get("config", ""))
    if config and (path.parent / config).is_file():
        keys["config"] = str((path.parent / config).resolve())
    return keys


def _check_variants(spec: SweepSpec, path: Path, keys: set[str]) -> None:
    """Each variant: a name fit for a directory, a table of config keys (and ``config``) that
    neither ``[set]`` nor the swept keys repeat, and a config those make (built here)."""
    for name, variant in spec.variants.items():
        if not (name and all(c.isalnum() or c in "-_." for c in name)):
            raise ConfigError(f"{path}: variant name {name!r}: use letters, digits, '-', '_', '.'")
        if not isinstance(variant, dict):
            raise ConfigError(f"{path}: variant {name!r} needs a table of config keys")
        for key in variant:
            if key != "config" and key not in keys:
                raise ConfigError(f"{path}: variant {name!r}: {key!r} is not a config key")
            if key in spec.set or key in spec.grid or key in spec.random:
                raise ConfigError(f"{path}: variant {name!r} sets {key!r}, which the spec sets too")
        spec.base(name)


def _check(spec: SweepSpec, path: Path) -> None:
    keys = {row[0] for row in describe(ROOTS[spec.command])}
    for key in [*spec.set, *spec.grid, *spec.random]:
        if key not in keys:
            raise ConfigError(f"{path}: {key!r} is not a `ctsp {spec.command}` config key")
        if key == "seed":
            raise ConfigError(f"{path}: the seed is swept by `seeds = N`, not as a key")
    _integer(spec.seeds, 1, "seeds", path)
    for key, values in spec.grid.items():
        if not (isinstance(values, list) and values):
            raise ConfigError(f"{path}: grid key {key!r} needs a non-empty list of values")
    if spec.random and not (isinstance(spec.samples, int) and spec.samples >= 1):
        raise ConfigError(f"{path}: [random] needs samples = N (an integer >= 1)")
    for key, dist in spec.random.items():
        _check_distribution(key, dist, path)
    _check_variants(spec, path, keys)
    _check_search(spec, path, spec.base())  # spec.base(): the config and [set] keys are valid


def _integer(value: Any, least: int, what: str, path: Path) -> None:
    if not (isinstance(value, int) and value >= least):
        raise ConfigError(f"{path}: {what} must be an integer >= {least} (got {value!r})")


def _check_distribution(key: str, dist: Any, path: Path) -> None:
    if not (isinstance(dist, dict) and len(dist) == 1):
        raise ConfigError(
            f"{path}: random key {key!r} needs one distribution, e.g. {{ uniform = [0, 1] }}"
        )
    ((name, args),) = dist.items()
    DISTRIBUTIONS.check(name, f"{key}'s distribution")
    if not isinstance(args, list):
        raise ConfigError(f"{path}: {key!r}: {name} needs a list of arguments")


def _check_search(spec: SweepSpec, path: Path, base) -> None:
    from .search import SCHEDULERS, SEARCHERS

    unknown = [k for k in spec.search if k not in SEARCH_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown [search] key {unknown[0]!r}; valid: {', '.join(SEARCH_KEYS)}"
        )
    if spec.searched:
        SEARCHERS.check(spec.search["algorithm"], "search.algorithm")
        if spec.grid or spec.variants or spec.seeds != 1 or not spec.random:
            raise ConfigError(
                f"{path}: a search proposes settings of the [random] keys for one seed: give "
                "[random] keys and no [grid], [variants] or seeds (run the best setting over "
                "seeds in a sweep of its own)"
            )
    if "scheduler" in spec.search:
        SCHEDULERS.check(spec.search["scheduler"], "search.scheduler")
    for key, least in SEARCH_INTEGERS.items():
        _integer(spec.search.get(key, least), least, f"search.{key}", path)
    if spec.search and base.data.validation == 0:
        raise ConfigError(
            f"{path}: [search] selects on the validation error: hold out data with "
            '"data.validation" = N in [set]'
        )
