"""A sweep's ``[search]``: Ray Tune's search algorithms and trial schedulers, by name.

Both minimise :data:`METRIC`, the lowest validation error of a trial's epochs so far (the
epoch a run would select: ``ctsp.runs.selection``), which every trial reports each epoch.

- ``SEARCHERS``: ``algorithm = "optuna"`` is Tune's ``OptunaSearch`` (a TPE sampler) over the
  ``[random]`` keys' distributions; :func:`searcher` numbers its proposals and keeps at most as
  many in flight as trials run at once. On a rerun it is told the results of the trials that
  ended (``add_evaluated_point``) and proposes the interrupted ones again first, so that they
  resume from their checkpoints.
- ``SCHEDULERS``: ``scheduler = "asha"`` is Tune's ``ASHAScheduler`` on the epochs
  (``grace_period``, ``reduction_factor``; ``max_t`` the trials' epochs). A trial it stops is
  recorded as stopped (``on_stop``) before Tune stops it, so that a rerun tells it from an
  interrupted trial and does not resume it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .spec import DISTRIBUTIONS, Distribution, SweepSpec

METRIC = "best_val_error"

Evaluated = tuple[dict[str, Any], float | None]  # a trial's params and METRIC (None: failed)


def _optuna(spec: SweepSpec, evaluated: list[Evaluated], again: list[dict], seed: int):
    """Tune's OptunaSearch over ``spec.random``, told ``evaluated``, proposing ``again`` first."""
    from ray.tune.search.optuna import OptunaSearch

    space = {key: dist.optuna(*args) for key, (dist, args) in _distributions(spec).items()}
    searcher = OptunaSearch(
        space, metric=METRIC, mode="min", seed=seed, points_to_evaluate=again or None
    )
    for params, value in evaluated:
        searcher.add_evaluated_point(params, value, error=value is None)
    return searcher


def _distributions(spec: SweepSpec) -> dict[str, tuple[Distribution, list]]:
    """The ``[random]`` keys' distributions and their arguments."""
    found = {}
    for key, dist in spec.random.items():
        ((name, args),) = dist.items()
        found[key] = (DISTRIBUTIONS[name], args)
    return found


def _coded(spec: SweepSpec, params: dict, encode: bool) -> dict:
    """``params`` as the search algorithm sees them (``encode``) or as a trial's values: an
    ``indexed`` distribution's value is the index of one of its arguments."""
    coded = dict(params)
    for key, (dist, args) in _distributions(spec).items():
        if dist.indexed and key in coded:
            coded[key] = args.index(coded[key]) if encode else args[coded[key]]
    return coded


def searcher(spec: SweepSpec, ended: dict[int, Evaluated], again: dict[int, dict], slots: int):
    """The spec's search algorithm, told the trials that ``ended`` and proposing those to run
    ``again`` first (both by their proposal numbers), at most ``slots`` proposals in flight.
    Each proposal carries its number as ``sample``: again's their own, new ones the numbers
    after every earlier proposal's, so that a trial keeps its name over reruns. The algorithm
    is seeded by ``sample_seed`` plus the first new number (a rerun does not repeat the
    proposals of the first run)."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter, Searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = 1 + max([*ended, *again], default=-1)
    told = [(_coded(spec, params, True), value) for params, value in ended.values()]
    queued = [_coded(spec, params, True) for params in again.values()]
    inner = SEARCHERS[spec.search["algorithm"]](spec, told, queued, spec.sample_seed + first)
    numbers = [*again, *range(first, first + spec.samples)]

    class Numbered(ConcurrencyLimiter):
        def suggest(self, trial_id: str):
            params = super().suggest(trial_id)
            if params in (None, Searcher.FINISHED):
                return params
            return {**_coded(spec, params, False), "sample": numbers.pop(0)}

    return Numbered(inner, max_concurrent=slots)


def _asha(spec: SweepSpec, epochs: int, on_stop: Callable[[dict, dict], None]):
    """Tune's ASHAScheduler over ``epochs``, calling ``on_stop(config, result)`` for each trial
    it stops before its last epoch."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class Recorded(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result["epoch"] < epochs:
                on_stop(trial.config, result)
            return decision

    return Recorded(
        time_attr="epoch", max_t=epochs, grace_period=spec.search.get("grace_period", 1),
        reduction_factor=spec.search.get("reduction_factor", 3),
    )  # fmt: skip


SEARCHERS: Registry = Registry("search algorithm", {"optuna": _optuna})
SCHEDULERS: Registry = Registry("scheduler", {"asha": _asha})
