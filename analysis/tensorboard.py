"""TensorBoard event files of a run (``record.tensorboard = true``, ``--tensorboard``).

:class:`TensorBoardRecorder` writes, after every epoch, into ``RUN/tensorboard``:

- every per-epoch scalar of ``metrics.nc`` under its name (errors, losses, learning rates,
  steps, sweeps and matrix passes per phase, seconds), per-layer ones as ``NAME/LAYER``
  (early-exit errors, layer losses);
- the loop alignment angles recorded during the epoch (``alignment.nc``, when
  ``record.alignment_every`` is set), their mean as ``angle/LABEL`` (e.g. ``angle/W3W1∠W2``);
- a histogram of every parameter of the network, under its name.

The step is the epoch. The scalars are read from the files the run has just written, so the
event file shows exactly what ``metrics.nc`` holds. ``tensorboard --logdir DIR`` shows a run, or
with a sweep's directory all its trials side by side. Needs the ``tensorboard`` package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import xarray as xr

from ctsp.runs import Recorder, files

LOGDIR = "tensorboard"


class TensorBoardRecorder(Recorder):
    """Per-epoch scalars, loop angles and weight histograms to ``RUN/tensorboard``."""

    name = "tensorboard"

    def __init__(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # (refused early when not installed)

        self._writer_class = SummaryWriter
        self.epochs = 0  # epochs written (the state: a resumed run goes on from there)
        self._writer = None

    def after_epoch(self, trainer, epoch: int, path: Path, last: bool) -> None:
        logdir = Path(path) / LOGDIR
        if self._writer is None:
            if self.epochs == 0 and logdir.exists():  # an earlier run's, overwritten (--force)
                shutil.rmtree(logdir)
            self._writer = self._writer_class(str(logdir))
        self._scalars(Path(path), epoch)
        for name, p in trainer.net.named_parameters():
            self._writer.add_histogram(name, p.detach().float().cpu(), epoch)
        self._writer.flush()
        self.epochs = epoch
        if last:
            self._writer.close()
            self._writer = None

    def _scalars(self, path: Path, epoch: int) -> None:
        w = self._writer
        row = xr.load_dataset(path / files.METRICS, engine="scipy").sel(epoch=epoch)
        for v, da in row.data_vars.items():
            if da.dims == ():
                w.add_scalar(v, float(da), epoch)
            elif da.dims == ("layer",):
                for layer, value in zip(da.layer.values, da.values, strict=True):
                    w.add_scalar(f"{v}/{layer}", float(value), epoch)
        if (path / files.ALIGNMENT).is_file():
            angles = xr.load_dataset(path / files.ALIGNMENT, engine="scipy").angle
            now = angles.where(angles.epoch == epoch, drop=True)
            if now.sizes["step"] == 0:
                return
            for label, mean in zip(now.label.values, now.mean("step").values, strict=True):
                w.add_scalar(f"angle/{label}", float(mean), epoch)

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = int(state["epochs"])
