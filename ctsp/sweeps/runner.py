"""Running a sweep on Ray Tune: every trial an ordinary ctsp run directory under ``DIR/trials``.

:func:`sweep` starts Ray (locally on this machine's cores, or joins the cluster at
``address``) and hands Tune one trial per name (:meth:`SweepSpec.trials`), ``cpus_per_trial``
CPUs each. A trial (:func:`run_trial`, in a Ray worker) runs ``ctsp.app.simulate`` or
``ctsp.app.train`` into ``DIR/trials/<name>`` with ``threads = cpus_per_trial`` and reports
every epoch's metrics to Tune as they are written to ``metrics.nc``. Running the same sweep
again on the same DIR keeps finished trials (their metrics are reported again, nothing is
trained), resumes interrupted ones from their checkpoints and runs the rest, so a sweep stopped
by Ctrl-C, a killed driver or a lost node ends, when rerun, as an uninterrupted one. A trial
that fails (a bad value, a diverging setting) leaves ``DIR/trials/<name>.failed`` with its one
line; the others go on, and the driver prints one line per failed trial at the end.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import xarray as xr

from ..errors import ConfigError, CtspError, RunDirError, WorkerError
from .spec import SweepSpec

SPEC_FILE = "sweep.json"  # the spec a sweep directory was made for
TRIALS = "trials"
FAILED = ".failed"  # suffix of a failed trial's one-line record


def _reporter(path: Path):
    """The ``log`` of a trial's run: report each epoch of ``metrics.nc`` Tune has not seen."""
    from ray import tune

    seen = 0

    def report(_line: str = "") -> None:
        nonlocal seen
        metrics = path / "metrics.nc"
        if not metrics.is_file():
            return
        with xr.open_dataset(metrics, engine="scipy") as ds:
            scalars = [v for v in ds.data_vars if ds[v].dims == ("epoch",)]
            rows = ds[scalars].isel(epoch=slice(seen, None)).load()
        for k in range(rows.sizes["epoch"]):
            row = rows.isel(epoch=k)
            tune.report({"epoch": int(row.epoch), **{v: float(row[v]) for v in scalars}})
        seen += rows.sizes["epoch"]

    return report


def run_trial(params: dict, spec: SweepSpec, root: str, cpus: int) -> None:
    """Tune's trainable: the trial named ``params["name"]`` into ``root/trials/<name>``."""
    from .. import app

    trial = {t.name: t for t in spec.trials()}[params["name"]]
    path = Path(root) / TRIALS / trial.name
    failed = path.with_name(trial.name + FAILED)
    failed.unlink(missing_ok=True)
    report = _reporter(path)
    try:
        config = spec.config_of(trial, threads=cpus)
        if _finished(path, config.train.epochs):
            report()
            return
        resume = (path / "checkpoint.pt").is_file()
        run = app.simulate if spec.command == "simulate" else app.train
        run(config, path, resume=resume, force=path.exists() and not resume, progress=False,
            log=report)  # fmt: skip
    except CtspError as e:
        failed.write_text(f"{e}\n")
    except Exception as e:  # a bug: one line too, the others go on
        failed.write_text(f"{type(e).__name__}: {e} (unexpected: report it)\n")


def _finished(path: Path, epochs: int) -> bool:
    metrics = path / "metrics.nc"
    if not metrics.is_file():
        return False
    with xr.open_dataset(metrics, engine="scipy") as ds:
        return ds.sizes.get("epoch", 0) >= epochs


def status(spec: SweepSpec, out: Path) -> dict[str, str]:
    """Each trial's name -> "finished", "failed" or "pending" (not run, or interrupted)."""
    states = {}
    for trial in spec.trials():
        path = out / TRIALS / trial.name
        if path.with_name(trial.name + FAILED).is_file():
            states[trial.name] = "failed"
            continue
        try:
            epochs = spec.config_of(trial).train.epochs
        except ConfigError:
            states[trial.name] = "pending"
            continue
        states[trial.name] = "finished" if _finished(path, epochs) else "pending"
    return states


def prepare(spec: SweepSpec, out: Path) -> None:
    """Make ``out`` the sweep's directory, or check that it is this spec's (a rerun)."""
    text = json.dumps(asdict(spec), indent=1, sort_keys=True)
    saved = out / SPEC_FILE
    if saved.is_file():
        if saved.read_text() != text:
            raise RunDirError(
                f"{out} holds another sweep ({SPEC_FILE} differs): choose another --out, or "
                "rerun it with the spec it was made with"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"output directory {out} exists, is not empty and holds no sweep")
    (out / TRIALS).mkdir(parents=True, exist_ok=True)
    saved.write_text(text)


def sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    address: str | None = None,
    cpus_per_trial: int = 1,
    minutes: float | None = None,
    verbose: int = 1,
) -> dict[str, str]:
    """Run (or continue) the sweep of ``spec`` in ``out``; each trial's state (:func:`status`).
    ``address``: a Ray cluster's (``ray start --head``), else a local Ray on this machine's
    cores. ``minutes``: stop the trials after this long (a long sweep in parts: the same call
    continues it). Raises KeyboardInterrupt when Ctrl-C stopped it before every trial ended."""
    import ray
    from ray import tune

    out = Path(out).resolve()
    if cpus_per_trial < 1:
        raise ConfigError(f"--cpus-per-trial must be at least 1 (got {cpus_per_trial})")
    if minutes is not None and not minutes > 0:
        raise ConfigError(f"--minutes must be positive (got {minutes})")
    started = time.monotonic()
    if address:  # refused at once where nothing answers: Ray would retry for minutes
        _check_reachable(address)
    prepare(spec, out)
    names = [t.name for t in spec.trials()]
    _start_ray(address)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, spec=spec, root=str(out), cpus=cpus_per_trial),
            {"cpu": cpus_per_trial},
        )
        tune.Tuner(
            trainable,
            param_space={"name": tune.grid_search(names)},
            tune_config=tune.TuneConfig(time_budget_s=None if minutes is None else 60 * minutes),
            run_config=tune.RunConfig(
                storage_path=str(out / ".tune"), name="sweep", verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        ).fit()  # fmt: skip
    finally:
        ray.shutdown()
    states = status(spec, out)
    budget_spent = minutes is not None and time.monotonic() - started >= 60 * minutes
    if "pending" in states.values() and not budget_spent:
        raise KeyboardInterrupt
    return states


def failures(spec: SweepSpec, out: Path) -> list[str]:
    """One line per failed trial, ``trial NAME failed: MESSAGE``, in the sweep's order."""
    records = [(t.name, Path(out) / TRIALS / (t.name + FAILED)) for t in spec.trials()]
    return [f"trial {n} failed: {r.read_text().strip()}" for n, r in records if r.is_file()]


def _start_ray(address: str | None) -> None:
    """A local Ray on this machine's cores, or the cluster at ``address`` (one-line errors)."""
    import ray

    try:
        ray.init(
            address=address, num_cpus=None if address else os.cpu_count(),
            include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
        )  # fmt: skip
    except (ConnectionError, ray.exceptions.RayError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkerError(f"cannot start or join {where}: {first}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``host:port`` at which no TCP connection opens within ``timeout`` seconds."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        raise ConfigError(f"--address {address!r}: expected HOST:PORT of a Ray head")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise WorkerError(
            f"cannot join the Ray cluster at {address}: nothing answers there "
            f"({e.strerror or e}); start one with `ray start --head`"
        ) from None


def load_saved_spec(out: Path) -> SweepSpec:
    """The spec a sweep directory was made for."""
    saved = Path(out) / SPEC_FILE
    if not saved.is_file():
        raise RunDirError(f"{out} is not a sweep directory (no {SPEC_FILE})")
    return SweepSpec(**json.loads(saved.read_text()))
