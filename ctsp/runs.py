"""What the run commands share (``ctsp simulate`` and ``ctsp train``).

The device check, the progress bar, the per-epoch metrics as an xarray Dataset, atomic saves of
``metrics.nc`` and ``*.pt`` files, reading a checkpoint back with the resume check, and the
:class:`RunResult` a run returns. Run-directory rules and atomic writes themselves are in
``ctsp.rundir``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .config import loads
from .errors import ConfigError, CtspError, RunDirError
from .rundir import atomic_write


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


def load_checkpoint(path: Path, config: Any, resumable: tuple[str, ...] = ()) -> dict:
    """Read ``checkpoint.pt`` and refuse a config that differs from the saved one in a key that
    is not ``resumable`` (dotted keys, or prefixes ending in ".")."""
    try:
        ckpt = torch.load(path / "checkpoint.pt", map_location=config.device, weights_only=False)
        saved = loads(ckpt["config"], str(path / "checkpoint.pt"), type(config))
    except (OSError, RuntimeError, KeyError, EOFError) as e:
        raise RunDirError(f"cannot read checkpoint {path / 'checkpoint.pt'}: {e}") from None
    except ConfigError as e:
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is not from a `ctsp {config.COMMAND}` run ({e})"
        ) from None
    differ = [k for k in config.diff(saved) if not k.startswith(resumable)]
    if differ:
        raise RunDirError(
            f"cannot resume {path}: the config differs from the saved run in {', '.join(differ)}"
        )
    return ckpt


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (``None`` when disabled)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
