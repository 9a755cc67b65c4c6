"""Trajectories of the free and clamped relaxations, recorded during a run as xarray.

``ctsp simulate --record N`` (``record.trajectories = N``) runs, after the last epoch and every
``record.trajectory_epochs`` epochs, the free phase from zeros and then the clamped phase
(beta = ``train.beta``, targets = the labels) on the first N test samples, with the state kept
every ``record.stride`` solver steps, and writes all recorded epochs to ``trajectories.nc``.
A run that records nothing never imports this module (``ctsp.app.build_recorders``).

The Dataset (see :func:`record`):

- one variable per population (``h1``, ``h2``, …, ``out``; ``record.populations``), dims
  (phase, time, sample, neuron_<name>), and ``residual`` max_j |ds_j/dt|, dims
  (phase, time, sample); with several recorded epochs every variable has a leading ``epoch``
  dimension (with one, ``epoch`` is a scalar coordinate);
- ``time`` is measured from the start of each phase, in units of the neuron time constant r; the
  two phases share this axis and the shorter one (and a phase that stopped early at steady state)
  is padded with NaN after its end; ``end_time`` (phase) gives each phase's last recorded time,
  where its state equals the solver's final state. (When the phases' step grids differ, a
  duration not being a whole number of steps, the axis is their union and each phase is NaN
  where it has no point.)
- coords ``phase`` ("free", "clamped"), ``sample`` (test-set index), ``label``, ``epoch``;
- attrs: the solver and its settings, beta, stride, units, and the resolved config as JSON.

A run with ``solver.method = "steady"`` finds its fixed points by layer sweeps, without a time
axis; its recordings integrate Eq. 13 with projected Euler (``solver.step``, the phase durations)
instead, so they show the dynamics whose fixed point the sweeps jump to (attrs ``solver``:
"euler", ``training_solver``: "steady"). The Euler phase ends within its duration, not
necessarily at the fixed point.

With ``solver.tol > 0`` a recorded phase checks for the steady state every ``stride`` steps (not
every ``check_every``), so it may stop a few steps from where the training's phases stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ctsp.config import RunConfig
from ctsp.continuous import (
    SOLVERS,
    RelaxSpec,
    Trainer,
    population_names,
    relaxation_dataset,
    step_count,
)
from ctsp.errors import ConfigError, RunDirError
from ctsp.runs import Recorder, files, save_netcdf

FILENAME = files.TRAJECTORIES
PHASES = ("free", "clamped")


def resolve_populations(config: RunConfig) -> tuple[str, ...]:
    """``record.populations`` as names in network order; ConfigError naming the valid ones."""
    valid = population_names(config.network.sizes)
    wanted = config.record.populations
    for name in wanted:
        if name != "all" and name not in valid:
            raise ConfigError(
                f"unknown population {name!r} in record.populations; "
                f"valid: {', '.join(valid)} or all"
            )
    return valid if "all" in wanted else tuple(n for n in valid if n in wanted)


def check_record(config: RunConfig, n_test: int, dataset: str = "") -> None:
    """Refuse a recording spec that cannot be met, before any training (one-line ConfigError)."""
    rec, s = config.record, config.solver
    if rec.trajectories > n_test:
        raise ConfigError(
            f"record.trajectories={rec.trajectories} is larger than the test set"
            f"{' of ' + dataset if dataset else ''} ({n_test} samples)"
        )
    resolve_populations(config)
    for phase, duration in zip(PHASES, (s.free_duration, s.clamped_duration), strict=True):
        steps = step_count(duration, s.step)
        if rec.stride > steps:
            raise ConfigError(
                f"record.stride={rec.stride} gives an empty time grid in the {phase} phase: "
                f"it has {steps} solver steps (solver.{phase}_duration={duration}, "
                f"solver.step={s.step}); use record.stride <= {steps}"
            )


@torch.no_grad()
def record(
    trainer: Trainer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples=None,
    populations: tuple[str, ...] | None = None,
    stride: int = 1,
    epoch: int | None = None,
) -> xr.Dataset:
    """Free phase from zeros, then clamped phase (beta = ``train.beta``, targets ``y``), on ``x``.

    Returns the Dataset described in the module docstring, the state kept every ``stride`` solver
    steps (and at each phase's end). ``samples``: sample ids (default 0 … B-1); ``populations``:
    names to keep (default all); ``epoch``: a scalar coordinate.
    """
    net, config = trainer.net, trainer.config
    pops = dict(zip(net.population_names, net.populations, strict=True))
    if populations is not None:
        pops = {name: pops[name] for name in populations}
    x, y = x.to(trainer.device), y.to(trainer.device)
    current = net.input_current(x)
    recorded = {"record_every": stride, "method": recording_method(config)}
    free_spec, clamped_spec = (spec.but(**recorded) for spec in RelaxSpec.phases(config.solver))
    free = trainer.relax_phase(current, net.zero_state(x.shape[0]), 0.0, None, free_spec)
    target = torch.nn.functional.one_hot(y, net.sizes[-1]).to(x.dtype)
    clamped = trainer.relax_phase(current, free.state, config.train.beta, target, clamped_spec)
    kw = {"samples": samples, "labels": y, "time_unit": config.network.tau}
    parts = [
        relaxation_dataset(relaxation, pops, phase=phase, **kw)
        for phase, relaxation in zip(PHASES, (free, clamped), strict=True)
    ]
    ds = xr.concat(
        parts, dim="phase", data_vars="all", coords="different", compat="equals", join="outer"
    )
    ds = ds.transpose("phase", "time", "sample", ...)
    if epoch is not None:
        ds = ds.assign_coords(epoch=np.int32(epoch))
        ds.epoch.attrs["long_name"] = "completed training epochs"
    ds.attrs = attributes(config, stride)
    return ds


def recording_method(config: RunConfig) -> str:
    """The ODE method that records: the run's own, or "euler" when the run uses "steady" (which
    finds the fixed points without a time axis)."""
    return config.solver.method if SOLVERS[config.solver.method].ode else "euler"


def attributes(config: RunConfig, stride: int) -> dict:
    s = config.solver
    return {
        "title": f"ctsp trajectories: {config.name}",
        "time_axis": "time since the start of each phase, in units of the neuron time constant r "
        "(network.tau); the shorter phase is padded with NaN after its end_time",
        "phases": "free: beta = 0 from zeros; clamped: beta = train.beta towards the one-hot "
        "label, from the free phase's final state",
        "solver": recording_method(config),
        "training_solver": s.method,
        "solver_step": s.step,
        "solver_tol": s.tol,
        "solver_check_every": s.check_every,
        "solver_rtol": s.rtol,
        "solver_atol": s.atol,
        "free_duration": s.free_duration,
        "clamped_duration": s.clamped_duration,
        "beta": config.train.beta,
        "tau": config.network.tau,
        "rate": config.network.rate,
        "stride": stride,
        "config": json.dumps(config.to_dict()),
    }


def combine(recordings: list[xr.Dataset]) -> xr.Dataset:
    """One recording as it is; several stacked along a new leading dimension ``epoch``, with the
    attrs of the last one. Time axes (and samples, if a resumed run changed ``record.*``) are
    joined: NaN where an epoch has no value; ``label`` stays a coordinate of ``sample``."""
    if len(recordings) == 1:
        return recordings[0]
    labels = {}
    for r in recordings:
        labels.update(zip(r.sample.values.tolist(), r.label.values.tolist(), strict=True))
    ds = xr.concat(
        [r.drop_vars("label") for r in recordings],
        dim="epoch",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="override",
    )
    label = np.array([labels[k] for k in ds.sample.values.tolist()], dtype=np.int32)
    ds = ds.assign_coords(label=("sample", label, recordings[-1].label.attrs))
    ds.attrs = dict(recordings[-1].attrs)
    return ds.transpose("epoch", "phase", "time", "sample", ...)


def split(ds: xr.Dataset) -> list[xr.Dataset]:
    """The recordings of a Dataset, one per epoch (the inverse of :func:`combine`)."""
    if "epoch" not in ds.dims:
        return [ds]
    return [ds.isel(epoch=k) for k in range(ds.sizes["epoch"])]


def load(path: str | Path) -> xr.Dataset:
    """Read a trajectories file fully into memory and close it."""
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


class TrajectoryRecorder(Recorder):
    """Records the relaxations of the first ``record.trajectories`` test samples after the chosen
    epochs and rewrites ``trajectories.nc`` (atomically) with every epoch recorded so far.

    The spec is checked when the recorder is built, before training (:func:`check_record`).
    ``state_dict`` lists the epochs recorded; on resume the recorder re-reads those epochs from the
    run's ``trajectories.nc`` (epochs recorded after the checkpoint are dropped and recorded again).
    """

    name = "trajectories"

    def __init__(self, config: RunConfig, data) -> None:
        check_record(config, data.test_x.shape[0], data.name)
        rec = config.record
        self.n, self.every, self.stride = rec.trajectories, rec.trajectory_epochs, rec.stride
        self.populations = resolve_populations(config)
        self.x, self.y = data.test_x[: self.n], data.test_y[: self.n]
        self.recordings: list[xr.Dataset] = []
        self.resumed: list[int] | None = None  # epochs to re-read from the file on resume

    def due(self, epoch: int, last: bool) -> bool:
        return last or (self.every > 0 and epoch % self.every == 0)

    def after_epoch(self, trainer: Trainer, epoch: int, path: Path, last: bool) -> None:
        if not self.due(epoch, last):
            return
        file = Path(path) / FILENAME
        if self.resumed is not None:
            self.recordings = self.reread(file, self.resumed)
            self.resumed = None
        ds = record(
            trainer,
            self.x,
            self.y,
            populations=self.populations,
            stride=self.stride,
            epoch=epoch,
        )
        self.recordings = [r for r in self.recordings if int(r.epoch) != epoch] + [ds]
        save_netcdf(combine(self.recordings), file)

    @staticmethod
    def reread(file: Path, epochs: list[int]) -> list[xr.Dataset]:
        """The recordings of ``epochs`` kept in ``file`` (none if it is gone)."""
        if not file.is_file():
            return []
        try:
            ds = load(file)
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot read {file} to continue its recording: {e}") from None
        return [r for r in split(ds) if int(r.epoch) in epochs]

    def state_dict(self) -> dict:
        if self.resumed is not None:  # not re-read yet
            return {"epochs": list(self.resumed)}
        return {"epochs": [int(r.epoch) for r in self.recordings]}

    def load_state_dict(self, state: dict) -> None:
        self.resumed = list(state["epochs"])
