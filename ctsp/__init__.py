"""ctsp — continuous-time signal propagation (sigprop) simulator.

The public API, imported lazily (so that ``ctsp --help`` does not load torch); each subpackage
(``ctsp.nn``, ``ctsp.continuous``, ``ctsp.discrete``, ``ctsp.spiking``, ``ctsp.runs``,
``ctsp.data``, ``ctsp.config``) re-exports its own public names:

- configuration: ``RunConfig``, ``DiscreteRunConfig``, ``load_config`` (TOML file or bundled
  name), ``with_overrides``, ``parse_override``;
- data: ``load_dataset``;
- the continuous model: ``eq13`` (Eq. 13), ``Field``, ``relax``, ``RelaxSpec``, ``SOLVERS``,
  ``Relaxation``, ``RelaxStats``, ``Status``, ``chl_update`` (Eq. 14), ``chl_bias_update``,
  ``Trainer``;
- runs: ``simulate``, ``train`` (the application edge, ``ctsp.app``), ``open_run``,
  ``RunResult``, ``Recorder``; studies: ``open_sweep`` (``ctsp.sweeps``);
- discrete sigprop: ``DiscreteTrainer``, ``Learner``, ``RULES`` (sigprop and the baselines by
  ``train.rule``);
- spiking: ``if_step``, ``IFNeuron``, ``NEURON_MODELS``;
- errors: ``CtspError`` and its kinds.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": ("ctsp.config", "RunConfig"),
    "DiscreteRunConfig": ("ctsp.config", "DiscreteRunConfig"),
    "load_config": ("ctsp.config", "load"),
    "with_overrides": ("ctsp.config", "with_overrides"),
    "parse_override": ("ctsp.config", "parse_override"),
    "load_dataset": ("ctsp.data", "load"),
    "eq13": ("ctsp.continuous", "eq13"),
    "Field": ("ctsp.continuous", "Field"),
    "relax": ("ctsp.continuous", "relax"),
    "RelaxSpec": ("ctsp.continuous", "RelaxSpec"),
    "Status": ("ctsp.continuous", "Status"),
    "SOLVERS": ("ctsp.continuous", "SOLVERS"),
    "Relaxation": ("ctsp.continuous", "Relaxation"),
    "RelaxStats": ("ctsp.continuous", "RelaxStats"),
    "chl_update": ("ctsp.continuous", "chl_update"),
    "chl_bias_update": ("ctsp.continuous", "chl_bias_update"),
    "Trainer": ("ctsp.continuous", "Trainer"),
    "simulate": ("ctsp.app", "simulate"),
    "train": ("ctsp.app", "train"),
    "open_run": ("ctsp.runs", "open_run"),
    "open_sweep": ("ctsp.sweeps", "open_sweep"),
    "RunResult": ("ctsp.runs", "RunResult"),
    "Recorder": ("ctsp.runs", "Recorder"),
    "DiscreteTrainer": ("ctsp.discrete", "DiscreteTrainer"),
    "Learner": ("ctsp.discrete", "Learner"),
    "RULES": ("ctsp.discrete", "RULES"),
    "if_step": ("ctsp.spiking", "if_step"),
    "IFNeuron": ("ctsp.spiking", "IFNeuron"),
    "NEURON_MODELS": ("ctsp.spiking", "NEURON_MODELS"),
    "CtspError": ("ctsp.errors", "CtspError"),
    "ConfigError": ("ctsp.errors", "ConfigError"),
    "DataError": ("ctsp.errors", "DataError"),
    "DivergenceError": ("ctsp.errors", "DivergenceError"),
    "RunDirError": ("ctsp.errors", "RunDirError"),
    "LearningError": ("ctsp.errors", "LearningError"),
    "CtspWarning": ("ctsp.errors", "CtspWarning"),
    "LearningWarning": ("ctsp.errors", "LearningWarning"),
    "PerformanceWarning": ("ctsp.errors", "PerformanceWarning"),
    "WriteError": ("ctsp.errors", "WriteError"),
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
