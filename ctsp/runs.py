"""What the run commands share (``ctsp simulate`` and ``ctsp train``).

The epoch loop (:func:`fit`: resume, best model, checkpoint, metrics, log line) over a
:class:`EpochTrainer`, the device check, the progress bar, the per-epoch metrics as an xarray
Dataset, atomic saves of ``metrics.nc`` and ``*.pt`` files, reading a checkpoint back with the
resume check, and the :class:`RunResult` a run returns. Run-directory rules and atomic writes
themselves are in ``ctsp.rundir``.
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

from .config import loads
from .errors import ConfigError, CtspError, DivergenceError, RunDirError
from .rundir import atomic_write, write_text


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
    def best_test_error(self) -> float:
        return float(self.metrics.test_error.min())


def load_data(config: Any):
    """The dataset of ``config.data`` (name, directory, validation split seeded by ``seed``)."""
    from . import data

    return data.load(
        config.data.name,
        data_dir=config.data.dir or None,
        validation=config.data.validation,
        seed=config.seed,
    )


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtspError(f"device {name!r} requested but CUDA is not available on this machine")
    return torch.device(name)


UNITS = {"seconds": "s", "steps": "solver steps per minibatch", "error": "fraction"}


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


def save_netcdf(ds: xr.Dataset, path: Path) -> None:
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))


def save_torch(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# learning-rate schedule keys: a resumed run may change them where the epochs already trained
# keep their learning rates (e.g. a decay added at a milestone the run has not reached)
SCHEDULE_KEYS = ("train.decay", "train.schedule", "train.t_max")


def load_checkpoint(path: Path, config: Any, resumable: tuple[str, ...] = ()) -> dict:
    """Read ``checkpoint.pt`` and refuse a config that differs from the saved one in a key that
    is not ``resumable`` (dotted keys, or prefixes ending in ".") or in the learning-rate
    schedule of the epochs already trained (so that a resumed run repeats an uninterrupted
    run of the new config exactly)."""
    try:
        ckpt = torch.load(path / "checkpoint.pt", map_location=config.device, weights_only=False)
        saved = loads(ckpt["config"], str(path / "checkpoint.pt"), type(config))
    except (OSError, RuntimeError, KeyError, EOFError) as e:
        raise RunDirError(f"cannot read checkpoint {path / 'checkpoint.pt'}: {e}") from None
    except ConfigError as e:
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is not from a `ctsp {config.COMMAND}` run ({e})"
        ) from None
    differ = [k for k in config.diff(saved) if not k.startswith(resumable + SCHEDULE_KEYS)]
    if differ:
        raise RunDirError(
            f"cannot resume {path}: the config differs from the saved run in {', '.join(differ)}"
        )
    done = len(ckpt["rows"])
    moved = [e + 1 for e in range(done) if config.train.lr_factor(e) != saved.train.lr_factor(e)]
    if moved:
        raise RunDirError(
            f"cannot resume {path}: the new learning-rate schedule differs in epoch {moved[0]}, "
            f"which the run has trained already ({done} epochs; the schedule follows train.epochs: "
            "to train a long run in parts, keep train.epochs and use --stop-after)"
        )
    return ckpt


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (``None`` when disabled)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


class EpochTrainer(Protocol):
    """What :func:`fit` needs from a command's trainer (``ctsp.simulate.Trainer``,
    ``ctsp.discrete.DiscreteTrainer``)."""

    net: torch.nn.Module

    def train_metrics(self, data, epoch: int, bar) -> dict:
        """Train one epoch; its row entries (at least ``train_error``)."""
        ...

    def eval_metrics(self, data) -> dict:
        """Row entries from the test (and validation) set: ``test_error`` (and ``val_error``)."""
        ...

    def extra_state(self) -> dict:
        """Checkpoint entries beyond the model (optimizers, persistent states, recorders)."""
        ...

    def load_extra_state(self, ckpt: dict) -> None: ...

    def after_epoch(self, epoch: int, path: Path, last: bool) -> None: ...

    def summary(self, row: dict) -> str:
        """The end of the epoch's log line."""
        ...


def fit(
    trainer: EpochTrainer,
    data,
    config: Any,
    path: Path,
    *,
    resume: bool,
    resumable: tuple[str, ...],
    progress: bool,
    log,
    layers: list[str] | None = None,
    stop_after: int | None = None,
) -> xr.Dataset:
    """Train ``config.train.epochs`` epochs into the run directory ``path``; the metrics.

    Per epoch: train (progress bar over the minibatches), evaluate, append the row (with
    ``epoch_seconds`` and ``train_seconds``), save ``best.pt`` when the selection error
    (validation if there is a validation set, else test, as the paper) improves, write
    ``metrics.nc`` and ``checkpoint.pt`` atomically, log one line. With ``resume`` the run
    continues from ``checkpoint.pt`` (config differences allowed only in ``resumable`` and in
    the schedule of epochs not trained yet). ``stop_after``: return after this (1-based) epoch,
    leaving a run that ``resume`` continues (a chunk of a long run).
    """
    rows: list[dict] = []
    best = {"error": float("inf"), "epoch": -1, "test_error": float("nan")}
    if resume:
        ckpt = load_checkpoint(path, config, resumable)
        trainer.net.load_state_dict(ckpt["model"])
        trainer.load_extra_state(ckpt)
        rows, best = ckpt["rows"], ckpt["best"]
    write_text(path / "config.toml", config.to_toml())
    select = "val_error" if data.val_x.shape[0] else "test_error"
    tc, n = config.train, data.train_x.shape[0]
    last = tc.epochs if stop_after is None else min(stop_after, tc.epochs)
    for epoch in range(len(rows), last):
        t0 = time.perf_counter()
        bar = progress_bar(-(-n // tc.batch_size), f"epoch {epoch + 1}/{tc.epochs}", progress)
        try:
            train = trainer.train_metrics(data, epoch, bar)
        except DivergenceError as e:
            raise DivergenceError(
                f"{e} at epoch {epoch + 1}; the last good checkpoint is kept in {path}"
            ) from None
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, **train, **trainer.eval_metrics(data)}
        row.update(epoch_seconds=time.perf_counter() - t0, train_seconds=train_seconds)
        rows.append(row)
        if row[select] < best["error"]:
            best = {"error": row[select], "epoch": epoch + 1, "test_error": row["test_error"]}
            save_torch({"model": trainer.net.state_dict(), **best}, path / "best.pt")
        trainer.after_epoch(epoch + 1, path, epoch + 1 == tc.epochs)
        save_netcdf(metrics_dataset(rows, config, layers), path / "metrics.nc")
        state = {"model": trainer.net.state_dict(), "rows": rows, "best": best}
        state.update(config=config.to_toml(), **trainer.extra_state())
        save_torch(state, path / "checkpoint.pt")
        log(
            f"epoch {epoch + 1:>3}/{tc.epochs}  train {row['train_error']:.2%}  "
            f"test {row['test_error']:.2%}"
            + (f"  val {row['val_error']:.2%}" if "val_error" in row else "")
            + f"  {trainer.summary(row)}  {row['epoch_seconds']:.1f} s"
        )
    if rows:
        log(
            f"{'final' if len(rows) == tc.epochs else 'so far:'} test error "
            f"{rows[-1]['test_error']:.2%} (epoch {rows[-1]['epoch']}/{tc.epochs}); best "
            f"{best['test_error']:.2%} (epoch {best['epoch']}, by {select}); run in {path}"
        )
    return metrics_dataset(rows, config, layers)
