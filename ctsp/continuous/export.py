"""A relaxation's recorded trajectory as an xarray Dataset (saved as netCDF by the recorders).

:func:`relaxation_dataset` turns a :class:`~ctsp.continuous.solvers.Relaxation` recorded with
``RelaxSpec.record_every`` into one variable per population (time, sample, neuron), the
per-sample residual, and the phase's end time, steps, evaluations and status, time in units of
the neuron time constant r.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .solvers import Relaxation

TIME_UNITS = "r"  # the neuron time constant


def relaxation_dataset(
    relaxation: Relaxation,
    populations: dict[str, slice] | None = None,
    *,
    phase: str | None = None,
    samples=None,
    labels=None,
    time_unit: float = 1.0,
) -> xr.Dataset:
    """The trajectory ``relaxation`` recorded, as an :class:`xarray.Dataset` (it needs a spec's
    ``record_every``).

    Args:
        populations: name -> column slice of the flat state (e.g. ``dict(zip(
            net.population_names, net.populations))``): one variable per population, dims
            (time, sample, neuron_<name>). None: one variable ``state`` with dims
            (time, sample, neuron).
        phase: a scalar coordinate ``phase`` (e.g. "free", "clamped"), for combining phases.
        samples: sample ids, (B,) (default 0 … B-1); labels: a coordinate ``label`` (B,).
        time_unit: the neuron time constant r in the solver's time units: ``time`` is the
            solver's time / r and the residual |ds/dt| * r, both in units of r.

    Besides the states: ``residual`` (time, sample), max_j |ds_j/dt| (see
    :class:`Relaxation`); scalars ``end_time`` (the last recorded time: the phase's end),
    ``steps``, ``nfe`` and ``converged`` from the stats.
    """
    if relaxation.trajectory is None:
        raise ValueError("no trajectory was recorded: relax with a spec's record_every = k")
    time = relaxation.times.detach().cpu().numpy().astype(np.float64) / time_unit
    variables = _states(relaxation.trajectory.detach().cpu().numpy(), populations)
    variables.update(_summary(relaxation, time, time_unit))
    return xr.Dataset(variables, coords=_coords(relaxation, time, samples, labels, phase))


def _states(traj: np.ndarray, populations: dict[str, slice] | None) -> dict:
    """The state variables: one per population (or ``state``), dimensionless rates' states."""
    if populations is None:
        variables = {"state": (("time", "sample", "neuron"), traj, {"long_name": "state s"})}
    else:
        variables = {
            name: (
                ("time", "sample", f"neuron_{name}"),
                traj[:, :, cols],
                {"long_name": f"state s of {name}"},
            )  # fmt: skip
            for name, cols in populations.items()
        }
    for _, _, attrs in variables.values():
        attrs["units"] = "1"  # dimensionless: the rate is rho(s)
    return variables


def _summary(relaxation: Relaxation, time: np.ndarray, time_unit: float) -> dict:
    """The residual over time, and the phase's end time, steps, evaluations and convergence."""
    stats = relaxation.stats
    residual = relaxation.residuals.detach().cpu().numpy() * np.float32(time_unit)
    return {
        "residual": (("time", "sample"), residual,
                     {"long_name": "residual max_j |ds_j/dt|", "units": "1/r"}),
        "end_time": ((), time[-1], {"long_name": "end of the phase", "units": TIME_UNITS}),
        "steps": ((), np.int32(stats.steps), {"long_name": "solver steps"}),
        "nfe": ((), np.int32(stats.nfe), {"long_name": "field evaluations"}),
        "converged": ((), np.bool_(stats.converged), {"long_name": "converged"}),
    }  # fmt: skip


def _coords(relaxation: Relaxation, time: np.ndarray, samples, labels, phase) -> dict:
    since = {
        "long_name": "time since phase start",
        "units": TIME_UNITS,
        "description": "in units of the neuron time constant r",
    }
    batch = relaxation.trajectory.shape[1]
    sample = np.arange(batch) if samples is None else np.asarray(samples)
    coords = {
        "time": ("time", time, since),
        "sample": ("sample", sample.astype(np.int32), {"long_name": "sample id"}),
    }
    if labels is not None:
        label = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
        coords["label"] = ("sample", label.astype(np.int32), {"long_name": "class label"})
    if phase is not None:
        coords["phase"] = phase
    return coords
