"""What both run commands share: the epoch loop, hooks, the run directory, checkpoints and
reading runs back.

- :func:`fit`: train an epoch trainer into a run directory (resume, recorders, best model,
  metrics.nc, atomic checkpoints, log line, ``stop_after``) through a :class:`LiveRun`;
- :class:`Recorder` (hooks after every minibatch and epoch, state kept by name) and the
  :class:`EpochTrainer` protocol;
- run-directory rules (:func:`run_directory`: refuse non-empty, ``--force``, ``--resume``, a
  lock held for the run's life), atomic
  writes, file names (``ctsp.runs.files``), :func:`load_checkpoint` with the resume check;
- :func:`open_run` (a finished or partial run's config, metrics, best model and recordings),
  :func:`machine_line`, :func:`markdown_table` and :func:`write_report` for reports;
- :func:`cpu_threads`: torch's and numba's thread pools together for a run (``threads``).
"""

from . import files
from .checkpoint import SCHEDULE_KEYS, load_checkpoint, resumed_config
from .hooks import EpochTrainer, Recorder
from .live import LiveRun
from .loop import (
    RunResult,
    fit,
    load_data,
    metrics_dataset,
    progress_bar,
    resolve_device,
    selected_epoch,
    selection,
)
from .results import Run, machine_line, markdown_table, open_run, write_report
from .rundir import atomic_write, run_directory, save_netcdf, save_torch, write_text
from .threads import cpu_threads

__all__ = [
    "LiveRun",
    "SCHEDULE_KEYS",
    "EpochTrainer",
    "Recorder",
    "Run",
    "RunResult",
    "atomic_write",
    "cpu_threads",
    "files",
    "fit",
    "load_checkpoint",
    "resumed_config",
    "load_data",
    "machine_line",
    "markdown_table",
    "metrics_dataset",
    "open_run",
    "progress_bar",
    "resolve_device",
    "run_directory",
    "selected_epoch",
    "selection",
    "save_netcdf",
    "save_torch",
    "write_report",
    "write_text",
]
