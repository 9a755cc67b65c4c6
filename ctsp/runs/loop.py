"""The epoch loop both run commands share (``ctsp simulate`` and ``ctsp train``).

:func:`fit` trains an :class:`ctsp.runs.hooks.EpochTrainer` epoch by epoch into a run
directory (resume, recorders, best model, checkpoint, metrics, log line); around it: the device
check, the progress bar, the per-epoch metrics as an xarray Dataset and the :class:`RunResult` a
run returns.
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

from ..errors import (
    ConfigError,
    DivergenceError,
    LearningError,
    RunDirError,
    RunInterrupted,
    Terminated,
    WriteError,
)
from . import files, health
from .checkpoint import load_checkpoint, restore
from .hooks import EpochTrainer, Recorder
from .rundir import save_netcdf, save_torch, write_text


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
    rows: list[dict] = []
    best = {"error": float("inf"), "epoch": -1, "test_error": float("nan")}
    names = [r.name for r in recorders]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"recorders need distinct, non-empty names; got {names}")
    recorder_states: dict[str, dict] = {}
    if resume:
        rows, best, recorder_states = restore(path, trainer, load_checkpoint(path, config, resumable))
        plan, epochs = config.train.plan, config.train.epochs
        extra = f"epoch {epochs} trains" if epochs == plan + 1 else f"epochs {plan + 1}-{epochs} train"
        log(
            f"resuming {path} after epoch {len(rows)}/{epochs}"
            + (
                f"; {extra} at the last rate of the {plan}-epoch learning-rate schedule "
                "the run was planned with"
                if plan < epochs
                else ""
            )
        )
        for r in recorders:
            if r.name in recorder_states:
                r.load_state_dict(recorder_states[r.name])

    def checkpoint() -> None:
        state = {"model": trainer.net.state_dict(), "rows": rows, "best": best}
        state.update(config=config.to_toml(), recorders=recorder_states, **trainer.extra_state())
        save_torch(state, path / files.CHECKPOINT)

    if resume:  # (written atomically: a failure leaves the saved run as it was)
        write_text(path / files.CONFIG, config.to_toml())
    else:  # with a checkpoint of the start: an interrupted first epoch can be resumed
        try:
            write_text(path / files.CONFIG, config.to_toml())
            checkpoint()
        except BaseException as e:  # nothing saved: leave nothing, so a plain rerun works
            (path / files.CONFIG).unlink(missing_ok=True)
            if isinstance(e, WriteError):
                raise WriteError(f"{e}; nothing was saved in {path}") from None
            raise

    def on_batch(epoch: int, k: int) -> None:
        for r in recorders:
            r.after_batch(trainer, epoch, k)

    # model selection on held-out data only, never on the test set: without a validation split
    # the selected model is the last one
    select = "val_error" if data.val_x.shape[0] else None
    tc, n = config.train, data.train_x.shape[0]
    last = tc.epochs if stop_after is None else min(stop_after, tc.epochs)
    saved = len(rows)  # epochs in checkpoint.pt
    warned = False

    def kept() -> str:
        what = f"epoch {saved}" if saved else "the start (no epoch trained yet)"
        return f"{path} keeps the checkpoint of {what}"

    try:
        for epoch in range(len(rows), last):
            t0 = time.perf_counter()
            bar = progress_bar(-(-n // tc.batch_size), f"epoch {epoch + 1}/{tc.epochs}", progress)
            try:
                train = trainer.train_metrics(data, epoch, bar, on_batch if recorders else None)
            except DivergenceError as e:
                raise DivergenceError(f"{e} (epoch {epoch + 1}); {kept()}") from None
            finally:
                if bar is not None:
                    bar.close()
            train_seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, **train, **trainer.eval_metrics(data)}
            row.update(epoch_seconds=time.perf_counter() - t0, train_seconds=train_seconds)
            rows.append(row)
            if select is None or row[select] < best["error"]:
                error = row[select] if select else float("nan")
                best = {"error": error, "epoch": epoch + 1, "test_error": row["test_error"]}
                save_torch({"model": trainer.net.state_dict(), **best}, path / files.BEST)
            save_netcdf(metrics_dataset(rows, config, layers), path / files.METRICS)
            for r in recorders:  # (after metrics.nc: a recorder may read the epoch's row there)
                r.after_epoch(trainer, epoch + 1, path, epoch + 1 == tc.epochs)
                recorder_states[r.name] = r.state_dict()
            checkpoint()
            saved = epoch + 1
            log(
                f"epoch {epoch + 1:>3}/{tc.epochs}  train {row['train_error']:.2%}  "
                f"test {row['test_error']:.2%}"
                + (f"  val {row['val_error']:.2%}" if "val_error" in row else "")
                + f"  {trainer.summary(row)}  {row['epoch_seconds']:.1f} s"
            )
            if not warned:
                try:
                    warned = health.check(
                        row, select or "test_error", data.classes, tc.health, trainer.learning_keys
                    )
                except LearningError as e:
                    raise LearningError(f"{e}; {kept()}") from None
    except WriteError as e:
        raise WriteError(f"{e}; {kept()}") from None
    except KeyboardInterrupt as e:
        resume = f": continue with --out {path} --resume"
        raise RunInterrupted(kept() + resume, terminated=isinstance(e, Terminated)) from None
    if rows:
        chosen = (
            f"; selected {best['test_error']:.2%} (epoch {best['epoch']}, lowest val_error)"
            if select
            else ""
        )
        log(
            f"{'final' if len(rows) == tc.epochs else 'so far:'} test error "
            f"{rows[-1]['test_error']:.2%} (epoch {rows[-1]['epoch']}/{tc.epochs}){chosen}; "
            f"run in {path}"
        )
    return metrics_dataset(rows, config, layers)
