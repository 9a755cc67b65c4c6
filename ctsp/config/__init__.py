"""Run configuration: frozen dataclasses loaded from TOML and overridden by CLI flags.

Two root configurations share one machinery (``ctsp.config.base``: TOML load/write, dotted
overrides, validation against the registries, bundled configs, field documentation):
:class:`RunConfig` for ``ctsp simulate`` (the continuous-time model, bundled in
``ctsp/configs/*.toml``) and :class:`DiscreteRunConfig` for ``ctsp train`` (discrete and
spiking sigprop, bundled in ``ctsp/configs/train/*.toml``). The functions below take the root
class as ``cls`` (default :class:`RunConfig`).

Every key is declared with its default, meaning and valid values (:func:`describe`, printed by
``--help-config``). Unknown keys, wrong types and out-of-range values raise
:class:`ctsp.errors.ConfigError` with one line naming the key. ``to_toml`` writes a resolved
configuration that :func:`load` reads back to the same object.
"""

from .base import (
    ROOTS,
    ConfigBase,
    bundled,
    bundled_names,
    describe,
    from_dict,
    load,
    loads,
    parse_override,
    with_overrides,
)
from .continuous import (
    DataConfig,
    NetworkConfig,
    RecordConfig,
    RunConfig,
    SolverConfig,
    TrainConfig,
)
from .discrete import (
    ARCHS,
    DiscreteRunConfig,
    DiscreteTrainConfig,
    ModelConfig,
    ParallelConfig,
    SignalConfig,
    TrainDataConfig,
    make_learner,
)
from .schedule import HEALTH, SCHEDULES, LRSchedule

__all__ = [
    "HEALTH",
    "make_learner",
    "ARCHS",
    "ROOTS",
    "SCHEDULES",
    "ConfigBase",
    "DataConfig",
    "DiscreteRunConfig",
    "DiscreteTrainConfig",
    "LRSchedule",
    "ModelConfig",
    "NetworkConfig",
    "RecordConfig",
    "RunConfig",
    "SignalConfig",
    "SolverConfig",
    "TrainConfig",
    "ParallelConfig",
    "TrainDataConfig",
    "bundled",
    "bundled_names",
    "describe",
    "from_dict",
    "load",
    "loads",
    "parse_override",
    "with_overrides",
]
