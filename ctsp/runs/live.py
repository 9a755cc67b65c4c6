"""One run's epochs in its directory: :class:`LiveRun`, the object :func:`ctsp.runs.fit`
drives (a run being trained; ``open_run`` reads one back).

A run opens (fresh: ``config.toml`` and a checkpoint of the start; resumed: its rows, best model
and recorder states restored from ``checkpoint.pt``), trains epoch after epoch (train with a
progress bar, evaluate, select, write ``best.pt`` / ``metrics.nc``, run the recorders, write
``checkpoint.pt``, log one line, check that it learns) and closes with the line of its result.
Every failure on the way names the checkpoint kept; the checkpoint and the files are written
atomically, so an interrupted run resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import DivergenceError, LearningError, RunInterrupted, Terminated, WriteError
from . import files, health
from .checkpoint import load_checkpoint, restore
from .hooks import EpochTrainer, Recorder
from .rundir import save_netcdf, save_torch, write_text


class LiveRun:
    """The epochs of ``trainer`` on ``data`` under ``config`` in the run directory ``path``.

    ``log``: where the lines go; ``layers``: the names of a ``(epoch, layer)`` metric's layers;
    ``recorders``: hooks called after every minibatch and epoch, their states kept in the
    checkpoint by name. Model selection is on held-out data only: the lowest ``val_error``, or
    the last epoch where the data hold out no validation split (the test set never selects).
    """

    def __init__(
        self,
        trainer: EpochTrainer,
        data,
        config: Any,
        path: Path,
        *,
        log,
        layers: list[str] | None = None,
        recorders: list[Recorder] = (),
    ) -> None:
        names = [r.name for r in recorders]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"recorders need distinct, non-empty names; got {names}")
        self.trainer, self.data, self.config, self.path = trainer, data, config, path
        self.log, self.layers, self.recorders = log, layers, list(recorders)
        self.rows: list[dict] = []
        self.best = {"error": float("inf"), "epoch": -1, "test_error": float("nan")}
        self.states: dict[str, dict] = {}  # the recorders' states by name
        self.saved = 0  # epochs in checkpoint.pt
        self.select = "val_error" if data.val_x.shape[0] else None
        self.warned = False  # the health check warned once already

    # open

    def open(self, resume: bool, resumable: tuple[str, ...]) -> None:
        """Restore the run from ``checkpoint.pt`` (``resume``: config differences allowed only
        in ``resumable`` and the schedule of epochs not trained yet), or start it: write
        ``config.toml`` and a checkpoint of the start, so that an interrupted first epoch can
        be resumed (a failure leaves nothing, so a plain rerun works)."""
        if resume:
            self._restore(resumable)
            write_text(self.path / files.CONFIG, self.config.to_toml())  # atomically
            return
        try:
            write_text(self.path / files.CONFIG, self.config.to_toml())
            self.checkpoint()
        except BaseException as e:
            (self.path / files.CONFIG).unlink(missing_ok=True)
            if isinstance(e, WriteError):
                raise WriteError(f"{e}; nothing was saved in {self.path}") from None
            raise

    def _restore(self, resumable: tuple[str, ...]) -> None:
        ckpt = load_checkpoint(self.path, self.config, resumable)
        self.rows, self.best, self.states = restore(self.path, self.trainer, ckpt)
        self.saved = len(self.rows)
        plan, epochs = self.config.train.plan, self.config.train.epochs
        extra = f"epoch {epochs} trains"
        if epochs > plan + 1:
            extra = f"epochs {plan + 1}-{epochs} train"
        later = (f"; {extra} at the last rate of the {plan}-epoch learning-rate schedule the run "
                 "was planned with") if plan < epochs else ""  # fmt: skip
        self.log(f"resuming {self.path} after epoch {len(self.rows)}/{epochs}{later}")
        for r in self.recorders:
            if r.name in self.states:
                r.load_state_dict(self.states[r.name])

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt``: the model, the rows, the best epoch, the config, the
        recorders' and the trainer's states."""
        state = {"model": self.trainer.net.state_dict(), "rows": self.rows, "best": self.best}
        state.update(config=self.config.to_toml(), recorders=self.states,
                     **self.trainer.extra_state())  # fmt: skip
        save_torch(state, self.path / files.CHECKPOINT)

    def kept(self) -> str:
        what = f"epoch {self.saved}" if self.saved else "the start (no epoch trained yet)"
        return f"{self.path} keeps the checkpoint of {what}"

    # epochs

    def train(self, last: int, progress: bool) -> None:
        """Epochs up to ``last`` (1-based); a failure names the checkpoint kept."""
        try:
            for epoch in range(len(self.rows), last):
                row = self.epoch(epoch, progress)
                self.write(row)
                self.log_row(row)
                self.check_health(row)
        except WriteError as e:
            raise WriteError(f"{e}; {self.kept()}") from None
        except KeyboardInterrupt as e:
            resume = f": continue with --out {self.path} --resume"
            raise RunInterrupted(self.kept() + resume,
                                 terminated=isinstance(e, Terminated)) from None  # fmt: skip

    def epoch(self, epoch: int, progress: bool) -> dict:
        """Train epoch ``epoch`` (0-based) and evaluate: its row, with the seconds taken."""
        from .loop import progress_bar

        tc, n = self.config.train, self.data.train_x.shape[0]
        t0 = time.perf_counter()
        bar = progress_bar(-(-n // tc.batch_size), f"epoch {epoch + 1}/{tc.epochs}", progress)
        on_batch = self._after_batch if self.recorders else None
        try:
            train = self.trainer.train_metrics(self.data, epoch, bar, on_batch)
        except DivergenceError as e:
            raise DivergenceError(f"{e} (epoch {epoch + 1}); {self.kept()}") from None
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, **train, **self.trainer.eval_metrics(self.data)}
        row.update(epoch_seconds=time.perf_counter() - t0, train_seconds=train_seconds)
        return row

    def _after_batch(self, epoch: int, k: int) -> None:
        for r in self.recorders:
            r.after_batch(self.trainer, epoch, k)

    def write(self, row: dict) -> None:
        """Append the row; ``best.pt`` when it is selected; ``metrics.nc``; the recorders
        (after metrics.nc: a recorder may read the epoch's row there); ``checkpoint.pt``."""
        self.rows.append(row)
        epoch, last = row["epoch"], row["epoch"] == self.config.train.epochs
        if self.select is None or row[self.select] < self.best["error"]:
            error = row[self.select] if self.select else float("nan")
            self.best = {"error": error, "epoch": epoch, "test_error": row["test_error"]}
            save_torch({"model": self.trainer.net.state_dict(), **self.best},
                       self.path / files.BEST)  # fmt: skip
        save_netcdf(self.metrics(), self.path / files.METRICS)
        for r in self.recorders:
            r.after_epoch(self.trainer, epoch, self.path, last)
            self.states[r.name] = r.state_dict()
        self.checkpoint()
        self.saved = epoch

    def log_row(self, row: dict) -> None:
        val = f"  val {row['val_error']:.2%}" if "val_error" in row else ""
        self.log(
            f"epoch {row['epoch']:>3}/{self.config.train.epochs}  train {row['train_error']:.2%}"
            f"  test {row['test_error']:.2%}{val}  {self.trainer.summary(row)}  "
            f"{row['epoch_seconds']:.1f} s"
        )

    def check_health(self, row: dict) -> None:
        """Warn once, or stop with the checkpoint named, when the run is not learning
        (:mod:`ctsp.runs.health`, ``train.health``)."""
        if self.warned:
            return
        keys, tc = self.trainer.learning_keys, self.config.train
        try:
            self.warned = health.check(row, self.select or "test_error", self.data.classes,
                                       tc.health, keys)  # fmt: skip
        except LearningError as e:
            raise LearningError(f"{e}; {self.kept()}") from None

    # close

    def metrics(self) -> xr.Dataset:
        from .loop import metrics_dataset

        return metrics_dataset(self.rows, self.config, self.layers)

    def close(self) -> xr.Dataset:
        """Log the result's line (the final or latest test error, and the selected one); the
        metrics."""
        if self.rows:
            epochs, last = self.config.train.epochs, self.rows[-1]
            chosen = (f"; selected {self.best['test_error']:.2%} (epoch {self.best['epoch']}, "
                      "lowest val_error)") if self.select else ""  # fmt: skip
            self.log(
                f"{'final' if len(self.rows) == epochs else 'so far:'} test error "
                f"{last['test_error']:.2%} (epoch {last['epoch']}/{epochs}){chosen}; "
                f"run in {self.path}"
            )
        return self.metrics()
