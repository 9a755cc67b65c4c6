"""The application edge: assembles networks (``models``), learners and recorders (``analysis``)
from a configuration and runs them. ``ctsp simulate`` and ``ctsp train`` call :func:`simulate`
and :func:`train`; from Python, both accept a network, a dataset (or a subset of one) and
recorders of the caller's own instead of the ones the config describes.

This module and ``ctsp.cli`` are the only parts of ``ctsp`` that import ``models`` or
``analysis`` (the import-linter contracts in pyproject.toml keep it so).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import continuous, discrete, parallel, runs
from .config import DiscreteRunConfig, RunConfig, make_learner
from .errors import ConfigError, PerformanceWarning
from .nn import precision_warning
from .runs import Recorder, RunResult


def build_layered_network(config: RunConfig):
    """The layered network of ``config.network`` (sigprop's loop network, or EP's with
    feedback), seeded by ``config.seed`` (float32, on CPU)."""
    from models import LayeredNetwork

    torch.manual_seed(config.seed)
    n = config.network
    return LayeredNetwork(
        n.sizes, loop=n.loop, rate=n.rate, tau=n.tau, feedback=n.feedback, init_gain=n.init_gain
    )


def build_recorders(config: RunConfig | DiscreteRunConfig, data) -> list[Recorder]:
    """The recorders that ``config.record`` asks for (none by default: no cost). Each checks
    its settings against the config and the data when built, before any training."""
    rec, recorders = config.record, []
    if isinstance(config, DiscreteRunConfig):
        return tensorboard_recorder(rec)
    if rec.trajectories:
        from analysis.recording import TrajectoryRecorder

        recorders.append(TrajectoryRecorder(config, data))
    if rec.alignment_every:
        from analysis.alignment import AlignmentRecorder

        recorders.append(AlignmentRecorder(config))
    return recorders + tensorboard_recorder(rec)  # last: it reads what the others wrote


def tensorboard_recorder(rec) -> list[Recorder]:
    """``[TensorBoardRecorder]`` when ``rec.tensorboard``; a one-line error without the
    tensorboard package."""
    if not rec.tensorboard:
        return []
    try:
        from analysis.tensorboard import TensorBoardRecorder

        return [TensorBoardRecorder()]
    except ImportError:
        raise ConfigError(
            "record.tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
        ) from None


def training_backend(trainer, transport, image_shape: tuple[int, ...]):
    """The backend of ``config.parallel`` for this rank of ``transport``'s world (None: one
    process): one process, a replica, or a part of a layer pipeline (discrete networks), its
    layers split as ``parallel.split`` says or by their multiply-adds per minibatch of images
    ``image_shape`` (``DiscreteNetwork.multiply_adds``, ``ctsp.parallel.split_layers``)."""
    config = trainer.config
    return parallel.build_backend(
        config.parallel,
        transport,
        lambda: trainer.net.multiply_adds(image_shape, config.train.batch_size),
    )


def simulate(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    log=None,
    stop_after: int | None = None,
    network=None,
    data=None,
    recorders: list[Recorder] | None = None,
    workers: parallel.Workers | None = None,
) -> RunResult | None:
    """Train the continuous-time sigprop loop network of ``config`` and write its run directory.

    Args:
        config: the resolved run configuration.
        out: run directory (default runs/<UTC timestamp>-<name>).
        force: overwrite an existing non-empty run directory.
        resume: continue the run in ``out`` from its checkpoint (the config may differ from the
            saved one only in ``train.epochs``, ``device``, ``threads`` and the ``record``
            section, and in the learning-rate schedule of epochs not trained yet; more epochs
            than the saved run's train the new ones at the schedule's last rate, see
            :func:`ctsp.runs.resumed_config`).
        progress: show a progress bar within each epoch (stderr).
        log: callable receiving one summary line per epoch (default: print to stdout).
        stop_after: return after this (1-based) epoch, leaving a resumable run (the schedule
            stays planned over ``train.epochs``).
        network: the network to train (default: ``models.LayeredNetwork`` of ``config.network``).
        data: the ``ctsp.data.Dataset`` (or a subset of one; default: ``config.data``).
        recorders: hooks into the run (default: those ``config.record`` asks for).
        workers: rank 0 of a ``--workers`` run, the processes it started (default: the world
            of the environment, ``ctsp.parallel.World.from_environment``).

    With ``parallel.replicas > 1`` this is one process of a data-parallel run: rank 0 writes
    the run and returns its result, the other ranks return None.
    """
    device = runs.resolve_device(config.device)
    data = runs.load_data(config) if data is None else data
    continuous.check_sizes(config, data)
    recorders = build_recorders(config, data) if recorders is None else recorders

    def trainer(c: RunConfig):
        net = (build_layered_network(c) if network is None else network).to(device)
        return continuous.Trainer(net, c, device, data.train_x.shape[0])

    return _run(
        config, data, trainer, out, force=force, resume=resume, workers=workers,
        resumable=continuous.resumable_keys, progress=progress, log=log,
        stop_after=stop_after, recorders=recorders,
    )  # fmt: skip


def train(
    config: DiscreteRunConfig,
    out: str | Path | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    log=None,
    stop_after: int | None = None,
    network=None,
    data=None,
    recorders: list[Recorder] | None = None,
    workers: parallel.Workers | None = None,
) -> RunResult | None:
    """Train the discrete (or spiking) network of ``config`` and write its run directory.

    Arguments as :func:`simulate`; ``resume`` may change ``train.epochs``, ``device``,
    ``threads``, ``train.recalibrate_bn`` and the ``parallel`` section. ``network``: default
    the ``models`` network of ``config.model`` and ``config.signal``; ``data``: default
    ``config.data``; ``recorders``: those ``config.record`` asks for by default. In a parallel
    run (``parallel.stages > 1`` or ``parallel.replicas > 1``) rank 0 writes the run and
    returns its result; the other ranks serve their stage or replica and return None.
    """
    device = runs.resolve_device(config.device)
    slow = precision_warning(config.train.precision, str(device))
    if slow:
        warnings.warn(slow, PerformanceWarning, stacklevel=2)
    data = runs.load_data(config) if data is None else data
    recorders = build_recorders(config, data) if recorders is None else recorders
    if network is None:
        from models import build_discrete_network

        network = build_discrete_network(config, data.image_shape, data.classes)
    return _run(
        config, data, lambda c: _discrete_trainer(network.to(device), c, device), out,
        force=force, resume=resume, workers=workers,
        resumable=lambda c: discrete.RESUMABLE_KEYS, layers=lambda t: list(t.names),
        progress=progress, log=log, stop_after=stop_after, recorders=recorders,
    )  # fmt: skip


def _run(
    config, data, trainer, out, *, force, resume, workers, resumable, layers=None, **fit
) -> RunResult | None:
    """Train ``trainer(config)`` (a function of the resolved config) in this rank's part of
    the run: rank 0 (or the one process) opens the run directory and drives the epochs
    (``ctsp.runs.fit``, its other arguments ``fit``), the other ranks serve it and return
    None. ``resumable(config)``: the keys a resumed run may change; ``layers(trainer)``: the
    names of its per-layer metrics' layers (None: none)."""
    par = config.parallel
    device = runs.resolve_device(config.device)
    world = workers.world if workers is not None else parallel.World.from_environment()
    with parallel.process_group(world, par.stages * par.replicas, device, workers) as transport:
        if world.rank > 0:  # a pipeline stage or a replica: rank 0 drives it and writes the run
            with runs.cpu_threads(config.threads):
                serving = trainer(config)
                training_backend(serving, transport, data.image_shape).serve(serving, data)
            return None
        run_dir = runs.run_directory(out, config.name, force=force, resume=resume)
        with runs.cpu_threads(config.threads), run_dir as path:
            config = runs.resumed_config(path, config) if resume else config
            driver = trainer(config)
            driver.backend = training_backend(driver, transport, data.image_shape)
            metrics = runs.fit(
                driver, data, config, path, resume=resume, resumable=resumable(config),
                layers=layers(driver) if layers else None, **fit,
            )  # fmt: skip
            # (after a failure the others see rank 0's connection close, or its end)
            driver.backend.stop()
    return RunResult(path, metrics, driver.net)


def _discrete_trainer(net, config: DiscreteRunConfig, device: torch.device):
    return discrete.DiscreteTrainer(net, make_learner(net, config), config, device)
