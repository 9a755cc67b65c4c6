"""The epoch loop both run commands share (``ctsp simulate`` and ``ctsp train``).

:func:`fit` trains an :class:`ctsp.runs.hooks.EpochTrainer` epoch by epoch into a run
directory through a :class:`ctsp.runs.live.LiveRun` (open or resume, epochs, close); around
it: the device check, the progress bar, the per-epoch metrics as an xarray Dataset, model
selection and the :class:`RunResult` a run returns.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, RunDirError
from .hooks import EpochTrainer, Recorder
from .live import LiveRun


@dataclass(frozen=True)
class RunResult:
    """What a run returns: the run directory, the metrics and the trained network."""

    path: Path
    metrics: xr.Dataset
    network: torch.nn.Module

    @property
    def final_test_error(self) -> float:
        return float(self.metrics.test_error[-1])

    @property
    def selected_test_error(self) -> float:
        """The test error of the model in ``best.pt`` (:func:`selected_epoch`)."""
        return float(self.metrics.test_error[selected_epoch(self.metrics)])


def selected_epoch(metrics: xr.Dataset) -> int:
    """The index along ``epoch`` of a run's selected model (:func:`selection`)."""
    return int(selection(metrics))


def selection(metrics: xr.Dataset) -> xr.DataArray:
    """The index along ``epoch`` of the selected model, for every run of ``metrics`` at once
    (a run's metrics, or a sweep's with more dimensions): the lowest validation error (the
    first of equals), or the last epoch a run trained where it held out no validation data.
    Never the test error."""
    if "val_error" in metrics:
        return metrics.val_error.fillna(np.inf).argmin("epoch")
    return metrics.test_error.notnull().cumsum("epoch").argmax("epoch")


def load_data(config: Any):
    """The dataset of ``config.data`` (name, directory, validation split seeded by ``seed``)."""
    from .. import data

    return data.load(
        config.data.name,
        data_dir=config.data.dir or None,
        validation=config.data.validation,
        seed=config.seed,
    )


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    return torch.device(name)


UNITS = {
    "seconds": "s",
    "steps": "solver steps per minibatch",
    "passes": "matrix products per minibatch",
    "error": "fraction",
    "saturated": "fraction",
}


def metrics_dataset(rows: list[dict], config: Any, layers: list[str] | None = None) -> xr.Dataset:
    """Per-epoch metrics as an xarray Dataset with dimension ``epoch`` (errors as fractions).

    A row value that is a list (one number per layer, e.g. early-exit errors) becomes a
    variable with dims (epoch, layer); ``layers`` names the layers (coordinate ``layer``).
    """
    epochs = [r["epoch"] for r in rows]
    names = [k for k in rows[0] if k != "epoch"] if rows else []
    variables = {}
    for k in names:
        values = np.array([r[k] for r in rows], dtype=float)
        variables[k] = (("epoch", "layer") if values.ndim == 2 else "epoch", values)
    coords: dict[str, Any] = {"epoch": np.array(epochs, dtype=np.int64)}
    if layers is not None and any(v[0] != "epoch" for v in variables.values()):
        coords["layer"] = np.array(layers, dtype=object)
    ds = xr.Dataset(variables, coords=coords)
    for k in names:
        ds[k].attrs["units"] = next((u for s, u in UNITS.items() if s in k), "")
    ds.attrs["config"] = json.dumps(config.to_dict())
    ds.attrs["title"] = f"ctsp {config.COMMAND}: {config.name}"
    return ds


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (``None`` when disabled)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def fit(
    trainer: EpochTrainer,
    data,
    config: Any,
    path: Path,
    *,
    resume: bool,
    resumable: tuple[str, ...],
    progress: bool,
    log=None,
    layers: list[str] | None = None,
    stop_after: int | None = None,
    recorders: list[Recorder] = (),
) -> xr.Dataset:
    """Train ``config.train.epochs`` epochs into the run directory ``path``; the metrics.

    Per epoch: train (progress bar over the minibatches), evaluate, append the row (with
    ``epoch_seconds`` and ``train_seconds``), save ``best.pt`` when the validation error
    improves (the model of every epoch where the data hold out no validation split: the
    test set never selects), write
    ``metrics.nc`` and ``checkpoint.pt`` atomically, log one line, check that the run is
    learning (:mod:`ctsp.runs.health`, ``train.health``). ``checkpoint.pt`` is first
    written before the first epoch, so every run directory can be resumed. With ``resume`` the run
    continues from ``checkpoint.pt`` (config differences allowed only in ``resumable`` and in
    the schedule of epochs not trained yet). ``stop_after``: return after this (1-based) epoch,
    leaving a run that ``resume`` continues (a chunk of a long run). ``recorders``: hooks
    (:class:`ctsp.runs.hooks.Recorder`) called after every minibatch and epoch, their states
    kept in the checkpoint by name.
    """
    log = log or (lambda line: print(line, flush=True))
    run = LiveRun(trainer, data, config, path, log=log, layers=layers, recorders=recorders)
    run.open(resume, resumable)
    epochs = config.train.epochs
    run.train(epochs if stop_after is None else min(stop_after, epochs), progress)
    return run.close()
