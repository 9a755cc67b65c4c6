"""Reading a finished (or partial) run back, and the two lines every report needs.

:func:`open_run` gives a :class:`Run`: the run directory's config, metrics, best model, the
recorded datasets (trajectories, loop alignment) and whether the run is complete. Figures and
benchmarks read runs only through it. :func:`machine_line` describes the machine a number was
measured on; :func:`markdown_table` writes a table.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from ..config import ROOTS, loads
from ..errors import ConfigError, RunDirError
from . import files


def _load_netcdf(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


@dataclass(frozen=True)
class Run:
    """A run directory as written by ``ctsp simulate`` or ``ctsp train`` (see :func:`open_run`).

    ``config`` is the resolved config (a ``RunConfig`` or ``DiscreteRunConfig``); ``metrics``
    the per-epoch Dataset; ``best_model`` the state dict of the best model (with its ``epoch``
    and ``test_error`` in ``best``); ``trajectories`` / ``alignment`` the recorded Datasets,
    or None when the run recorded none. Files are read when first asked for.
    """

    path: Path
    config: Any

    @cached_property
    def metrics(self) -> xr.Dataset:
        return self._netcdf(files.METRICS, required=True)

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far (0 before the first epoch ends)."""
        return self.metrics.sizes["epoch"] if (self.path / files.METRICS).is_file() else 0

    @property
    def complete(self) -> bool:
        """Every epoch of ``train.epochs`` is trained."""
        return self.epochs_done >= self.config.train.epochs

    @cached_property
    def best(self) -> dict:
        """``best.pt``: ``model`` (state dict), ``epoch``, ``test_error`` and ``error``."""
        path = self.path / files.BEST
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as e:
            raise RunDirError(f"cannot read {path}: {e}") from None

    @property
    def best_model(self) -> dict:
        return self.best["model"]

    @cached_property
    def trajectories(self) -> xr.Dataset | None:
        return self._netcdf(files.TRAJECTORIES)

    @cached_property
    def alignment(self) -> xr.Dataset | None:
        return self._netcdf(files.ALIGNMENT)

    def _netcdf(self, name: str, required: bool = False) -> xr.Dataset | None:
        path = self.path / name
        if not path.is_file():
            if required:
                raise RunDirError(f"{self.path} has no {name} (no epoch has completed)")
            return None
        try:
            return _load_netcdf(path)
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot read {path}: {e}") from None


def open_run(path: str | Path) -> Run:
    """Open the run directory ``path`` (finished or partial) for reading."""
    path = Path(path)
    config_file = path / files.CONFIG
    if not config_file.is_file():
        raise RunDirError(f"{path} is not a run directory (no {files.CONFIG})")
    text = config_file.read_text()
    errors = []
    for cls in ROOTS.values():
        try:
            return Run(path, loads(text, str(config_file), cls))
        except ConfigError as e:
            errors.append(str(e))
    raise RunDirError(f"cannot read {config_file}: {errors[0]}")


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo) and torch's vector capability, e.g.
    "AMD EPYC (AVX2)"; the machine type where the model is not known."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def machine_line() -> str:
    """The machine, as every table and benchmark states it: CPU, cores, GPU, threads, versions."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    # the OpenMP wait policy (the ctsp command sets PASSIVE: ctsp.cli.passive_openmp_wait)
    wait = "".join(
        f" {v}={os.environ[v]}" for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if v in os.environ
    )
    return (
        f"{cpu_name()}, {os.cpu_count()} cores{gpu}, {torch.get_num_threads()} torch threads"
        f"{wait}, torch {torch.__version__}, Python {platform.python_version()}"
    )


def write_report(lines: Sequence[str], out: str | Path | None = None) -> str:
    """A script's report (markdown lines) printed and, with ``out``, written there (its folder
    made); the text."""
    text = "\n".join(lines) + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: the header, the rule, one line per row (cells as str)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]
