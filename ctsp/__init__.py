"""ctsp — continuous-time signal propagation (sigprop) simulator.

The public API, imported lazily (so that ``ctsp --help`` does not load torch):

- configuration: ``RunConfig``, ``load_config`` (TOML file or bundled name), ``with_overrides``,
  ``parse_override``;
- data: ``load_dataset``;
- dynamics and solver: ``eq13`` (Eq. 13), ``Field``, ``relax``, ``Relaxation``, ``RelaxStats``;
- plasticity: ``chl_update`` (Eq. 14), ``chl_bias_update``;
- runs: ``simulate``, ``Trainer``, ``RunResult``;
- discrete sigprop (``ctsp train``): ``DiscreteRunConfig``, ``train``, ``DiscreteTrainer``,
  ``Learner``, ``LEARNERS`` (sigprop and the baselines by ``train.rule``);
- spiking: ``if_step``, ``IFNeuron``;
- errors: ``CtspError`` and its kinds.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": ("ctsp.config", "RunConfig"),
    "load_config": ("ctsp.config", "load"),
    "with_overrides": ("ctsp.config", "with_overrides"),
    "parse_override": ("ctsp.config", "parse_override"),
    "load_dataset": ("ctsp.data", "load"),
    "eq13": ("ctsp.dynamics", "eq13"),
    "Field": ("ctsp.dynamics", "Field"),
    "relax": ("ctsp.solver", "relax"),
    "Relaxation": ("ctsp.solver", "Relaxation"),
    "RelaxStats": ("ctsp.solver", "RelaxStats"),
    "chl_update": ("ctsp.plasticity", "chl_update"),
    "chl_bias_update": ("ctsp.plasticity", "chl_bias_update"),
    "simulate": ("ctsp.simulate", "simulate"),
    "Trainer": ("ctsp.simulate", "Trainer"),
    "RunResult": ("ctsp.runs", "RunResult"),
    "DiscreteRunConfig": ("ctsp.config", "DiscreteRunConfig"),
    "train": ("ctsp.discrete", "train"),
    "DiscreteTrainer": ("ctsp.discrete", "DiscreteTrainer"),
    "Learner": ("ctsp.discrete", "Learner"),
    "LEARNERS": ("ctsp.discrete", "LEARNERS"),
    "if_step": ("ctsp.spiking", "if_step"),
    "IFNeuron": ("ctsp.spiking", "IFNeuron"),
    "CtspError": ("ctsp.errors", "CtspError"),
    "ConfigError": ("ctsp.errors", "ConfigError"),
    "DataError": ("ctsp.errors", "DataError"),
    "DivergenceError": ("ctsp.errors", "DivergenceError"),
    "RunDirError": ("ctsp.errors", "RunDirError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ctsp' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
