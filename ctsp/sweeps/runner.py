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

With a ``[search]`` (``ctsp.sweeps.search``), a search algorithm proposes the trials as it goes
(each recorded as ``DIR/trials/<name>.json`` when it starts) and a scheduler may stop trials
early (``DIR/trials/<name>.stopped``, its one line): a rerun keeps stopped trials as they are.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import xarray as xr

from ..errors import ConfigError, CtspError, RunDirError, WorkerError
from .search import METRIC, SCHEDULERS, searcher
from .spec import SweepSpec, Trial

SPEC_FILE = "sweep.json"  # the spec a sweep directory was made for
TRIALS = "trials"
FAILED = ".failed"  # suffix of a failed trial's one-line record
STOPPED = ".stopped"  # suffix of the record of a trial the scheduler stopped early
PROPOSED = ".json"  # suffix of a searched trial's record: its params, seed and number


def _reporter(path: Path):
    """The ``log`` of a trial's run: report each epoch of ``metrics.nc`` Tune has not seen,
    with :data:`METRIC` the lowest validation error up to that epoch."""
    from ray import tune

    seen, best = 0, float("inf")

    def report(_line: str = "") -> None:
        nonlocal seen, best
        metrics = path / "metrics.nc"
        if not metrics.is_file():
            return
        with xr.open_dataset(metrics, engine="scipy") as ds:
            scalars = [v for v in ds.data_vars if ds[v].dims == ("epoch",)]
            rows = ds[scalars].isel(epoch=slice(seen, None)).load()
        for k in range(rows.sizes["epoch"]):
            values = {v: float(rows[v][k]) for v in scalars}
            if "val_error" in values:
                values[METRIC] = best = min(best, values["val_error"])
            tune.report({"epoch": int(rows.epoch[k]), **values})
        seen += rows.sizes["epoch"]

    return report


def trial_of(spec: SweepSpec, params: dict) -> Trial:
    """The trial of Tune's config ``params``: ``{"name": …}`` for a trial the spec lists, the
    swept keys' values for one a search proposed."""
    if "name" in params:
        return {t.name: t for t in spec.trials()}[params["name"]]
    return Trial({k: params[k] for k in spec.random}, spec.base().seed, params["sample"])


def _record(path: Path, trial: Trial) -> None:
    """Record a searched trial (``<name>.json``) the first time it starts."""
    record = path.with_name(trial.name + PROPOSED)
    if not record.is_file():
        record.write_text(json.dumps(asdict(trial)))


def run_trial(params: dict, spec: SweepSpec, root: str, cpus: int) -> None:
    """Tune's trainable: the trial of ``params`` (:func:`trial_of`) into
    ``root/trials/<name>``; a finished or stopped trial reports its epochs again."""
    from .. import app

    trial = trial_of(spec, params)
    path = Path(root) / TRIALS / trial.name
    failed = path.with_name(trial.name + FAILED)
    failed.unlink(missing_ok=True)
    if spec.searched:
        _record(path, trial)
    report = _reporter(path)
    try:
        config = spec.config_of(trial, threads=cpus)
        stopped = path.with_name(trial.name + STOPPED).is_file()
        if stopped or _finished(path, config.train.epochs):
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


def trials(spec: SweepSpec, out: Path) -> list[Trial]:
    """The sweep's trials: the spec's, or those a search has started so far (in the order it
    proposed them)."""
    if not spec.searched:
        return spec.trials()
    records = [json.loads(p.read_text()) for p in (Path(out) / TRIALS).glob("*" + PROPOSED)]
    return sorted((Trial(**r) for r in records), key=lambda t: t.sample)


def status(spec: SweepSpec, out: Path) -> dict[str, str]:
    """Each trial's name -> "finished", "failed", "stopped" (early, by the scheduler) or
    "pending" (not run, or interrupted)."""
    states = {trial.name: state for trial, state in _states(spec, out)}
    for k in range(len(states), spec.samples if spec.searched else 0):
        states[f"proposal {k + 1} of {spec.samples}"] = "pending"  # not proposed yet
    return states


def _states(spec: SweepSpec, out: Path) -> list[tuple[Trial, str]]:
    """The trials started or listed so far, each with its state (:func:`status`)."""
    states = []
    for trial in trials(spec, out):
        path = out / TRIALS / trial.name
        ended = [s for s in (FAILED, STOPPED) if path.with_name(trial.name + s).is_file()]
        if ended:
            states.append((trial, ended[0].lstrip(".")))
            continue
        try:
            epochs = spec.config_of(trial).train.epochs
        except ConfigError:
            states.append((trial, "pending"))
            continue
        states.append((trial, "finished" if _finished(path, epochs) else "pending"))
    return states


def prepare(spec: SweepSpec, out: Path) -> None:
    """Make ``out`` the sweep's directory, or check that it is this spec's (a rerun)."""
    text = json.dumps(asdict(spec), indent=1)  # in the spec's order: it orders the trials
    saved = out / SPEC_FILE
    if saved.is_file():
        if load_saved_spec(out) != spec:  # (keys added to specs since take their defaults)
            raise RunDirError(
                f"{out} holds another sweep ({SPEC_FILE} differs): choose another --out, or "
                "rerun it with the spec it was made with"
            )
        saved.write_text(text)
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
    cpus: int | None = None,
    cpus_per_trial: int = 1,
    minutes: float | None = None,
    verbose: int = 1,
) -> dict[str, str]:
    """Run (or continue) the sweep of ``spec`` in ``out``; each trial's state (:func:`status`).
    ``address``: a Ray cluster's (``ray start --head``), else a local Ray on ``cpus`` of this
    machine's cores (default: all usable). ``minutes``: stop the trials after this long (a long
    sweep in parts: the same call continues it). Raises KeyboardInterrupt when Ctrl-C stopped
    it before every trial ended."""
    import ray
    from ray import tune

    out = Path(out).resolve()
    if cpus_per_trial < 1:
        raise ConfigError(f"--cpus-per-trial must be at least 1 (got {cpus_per_trial})")
    cpus = _local_cpus(cpus, address, cpus_per_trial)
    if minutes is not None and not minutes > 0:
        raise ConfigError(f"--minutes must be positive (got {minutes})")
    started = time.monotonic()
    if address:  # refused at once where nothing answers: Ray would retry for minutes
        _check_reachable(address)
    prepare(spec, out)
    _start_ray(address, cpus)
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_trial)
        budget = None if minutes is None else 60 * minutes
        tune_config, param_space = _tune_config(spec, out, slots, budget)
        if tune_config is not None:
            trainable = tune.with_resources(
                tune.with_parameters(run_trial, spec=spec, root=str(out), cpus=cpus_per_trial),
                {"cpu": cpus_per_trial},
            )
            _fit(tune.Tuner(
                trainable, param_space=param_space, tune_config=tune_config,
                run_config=tune.RunConfig(
                    storage_path=str(out / ".tune"), name="sweep", verbose=verbose,
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            ))  # fmt: skip
    finally:
        ray.shutdown()
    states = status(spec, out)
    budget_spent = minutes is not None and time.monotonic() - started >= 60 * minutes
    if "pending" in states.values() and not budget_spent:
        raise KeyboardInterrupt
    return states


def _fit(tuner) -> None:
    """``tuner.fit()``, where a trial that failed (one line in ``<name>.failed``) ends without
    reporting the searched metric: Tune's check that every trial reports it is off for the
    call (a searcher is told such a trial was pruned; a rerun tells it that it failed)."""
    strict = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    before = os.environ.get(strict)
    os.environ[strict] = "1"
    try:
        tuner.fit()
    finally:
        if before is None:
            del os.environ[strict]
        else:
            os.environ[strict] = before


def _tune_config(spec: SweepSpec, out: Path, slots: int, budget: float | None):
    """Tune's config and param space for what is left of the sweep (``None``: nothing is),
    ``slots`` trials at once, stopping after ``budget`` seconds."""
    from ray import tune

    kwargs: dict = {"time_budget_s": budget}
    if spec.search:
        kwargs.update(metric=METRIC, mode="min")
    if "scheduler" in spec.search:
        epochs = [spec.base().train.epochs, *spec.grid.get("train.epochs", [])]
        on_stop = functools.partial(_stopped, spec, out)
        kwargs["scheduler"] = SCHEDULERS[spec.search["scheduler"]](spec, max(epochs), on_stop)
    if not spec.searched:
        names = [t.name for t in spec.trials()]
        return tune.TuneConfig(**kwargs), {"name": tune.grid_search(names)}
    ended, again = _so_far(spec, out)
    if len(ended) >= spec.samples:
        return None, {}
    proposals = searcher(spec, ended, again, slots)
    return tune.TuneConfig(search_alg=proposals, num_samples=spec.samples - len(ended),
                           **kwargs), {}  # fmt: skip


def _so_far(spec: SweepSpec, out: Path) -> tuple[dict, dict]:
    """A search's trials that ended, proposal number -> (params, lowest validation error or
    None where it failed), and those to propose again (interrupted), number -> params."""
    ended, again = {}, {}
    for trial, state in _states(spec, out):
        if state == "pending":
            again[trial.sample] = trial.params
            continue
        metrics = out / TRIALS / trial.name / "metrics.nc"
        value = None
        if state != "failed" and metrics.is_file():
            with xr.open_dataset(metrics, engine="scipy") as ds:
                value = float(ds.val_error.min())
        ended[trial.sample] = (trial.params, value)
    return ended, again


def _stopped(spec: SweepSpec, out: Path, params: dict, result: dict) -> None:
    """Record that the scheduler stopped the trial of ``params`` after ``result``'s epoch."""
    trial = trial_of(spec, params)
    (out / TRIALS / (trial.name + STOPPED)).write_text(
        f"stopped by {spec.search['scheduler']} after epoch {result['epoch']} (lowest "
        f"validation error {result[METRIC]:.2%})\n"
    )


def _ended(spec: SweepSpec, out: Path, suffix: str, verb: str) -> list[str]:
    records = [(t.name, Path(out) / TRIALS / (t.name + suffix)) for t in trials(spec, out)]
    return [f"trial {n} {verb}: {r.read_text().strip()}" for n, r in records if r.is_file()]


def failures(spec: SweepSpec, out: Path) -> list[str]:
    """One line per failed trial, ``trial NAME failed: MESSAGE``, in the sweep's order."""
    return _ended(spec, out, FAILED, "failed")


def stops(spec: SweepSpec, out: Path) -> list[str]:
    """One line per trial the scheduler stopped early, ``trial NAME: stopped by …``."""
    return _ended(spec, out, STOPPED, "ended early")


def _local_cpus(cpus: int | None, address: str | None, per_trial: int) -> int | None:
    """The local Ray's CPUs (``None`` with an address: the cluster's own), checked."""
    from ..runs.threads import usable_cores

    if address:
        if cpus is not None:
            raise ConfigError("--cpus sizes a local Ray: a cluster (--address) has its own CPUs")
        return None
    cores = usable_cores()
    cpus = cores if cpus is None else cpus
    if not per_trial <= cpus <= cores:
        raise ConfigError(
            f"--cpus must lie between --cpus-per-trial ({per_trial}) and this machine's usable "
            f"cores ({cores}) (got {cpus})"
        )
    return cpus


def _start_ray(address: str | None, cpus: int | None) -> None:
    """A local Ray on this machine's cores, or the cluster at ``address`` (one-line errors)."""
    import ray

    try:
        ray.init(
            address=address or "local", num_cpus=cpus,  # "local": a new Ray, never a running one
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
    """The spec a sweep directory was made for (keys that specs gained since it was made take
    their defaults)."""
    saved = Path(out) / SPEC_FILE
    if not saved.is_file():
        raise RunDirError(f"{out} is not a sweep directory (no {SPEC_FILE})")
    try:
        return SweepSpec(**json.loads(saved.read_text()))
    except (TypeError, ValueError) as e:
        raise RunDirError(f"{saved} is not a sweep spec this ctsp can read ({e})") from None
