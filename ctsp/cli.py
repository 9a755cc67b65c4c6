"""The ``ctsp`` command line: ``simulate`` (the main job), ``train`` (discrete sigprop), ``configs``
and ``data``.

Exit codes: 0 success, 1 a run that failed (e.g. diverged), 2 bad usage, config or data.
Errors are one line, ``ctsp: error: <what is wrong>``, never a traceback. Heavy modules are
imported lazily so that ``ctsp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from . import __version__

EXAMPLES = """examples:
  ctsp simulate                                 digits, small loop network, about 10 s
  ctsp simulate fmnist-2x1500 --epochs 5        a bundled paper config
  ctsp simulate run.toml --set train.beta=1.0   a config file plus an override
  ctsp simulate --out runs/a --resume --epochs 60
  ctsp train                                    discrete sigprop, small FC net on digits, ~6 s
  ctsp train vgg8b-fmnist --out runs/vgg        a bundled paper network (Sec. IV)
  ctsp train vgg8b-fmnist --out runs/vgg --stop-after 2   the first 2 of its 100 epochs
  ctsp train fc-3x1000-fmnist --set train.rule=bp         a baseline: bp, fa, dfa, ll-bp, ll-fa
  ctsp train snn-fmnist-sp-voltage --set "model.channels=[16,16]" --set "model.hidden=[256]"
                                                spiking sigprop (Sec. VI), narrow for a CPU
  ctsp data list
"""


def _parser() -> argparse.ArgumentParser:
    from .environment import describe

    p = argparse.ArgumentParser(
        prog="ctsp",
        description="Continuous-time simulator for signal propagation (sigprop).",
        epilog=EXAMPLES + "\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ctsp {__version__}")
    _debug_argument(p, False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    commands = [_simulate_parser(sub), _train_parser(sub), _sweep_parser(sub), _plot_parser(sub)]
    commands.append(
        sub.add_parser("configs", help="list the bundled configs (simulate, then train)")
    )
    commands += _data_parsers(sub)
    for sp in commands:  # `ctsp simulate ... --debug` as well as `ctsp --debug ...`
        _debug_argument(sp, argparse.SUPPRESS)
    return p


def _simulate_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser(
        "simulate",
        help="train the continuous-time sigprop loop network (Eq. 13/14)",
        description="Train the continuous-time sigprop loop network and write a run directory "
        "(config.toml, metrics.nc, checkpoint.pt, best.pt). With no arguments: digits data, "
        "a 64-256-10 loop network, a short run.",
    )
    _run_arguments(s, "simulate")
    s.add_argument("--beta", type=float, help="nudging strength (train.beta)")
    s.add_argument(
        "--solver", help="euler, rk4, dopri5, … or steady (layer sweeps) (solver.method)"
    )
    s.add_argument(
        "--record",
        type=int,
        metavar="N",
        help="record the free and clamped relaxations of the first N test samples to "
        "trajectories.nc at the end of the run (record.trajectories; every K epochs with "
        "--set record.trajectory_epochs=K)",
    )
    return s


def _train_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser(
        "train",
        help="train a discrete network by sigprop (FC, CONV, VGG8b; Sec. III-IV)",
        description="Train a discrete network by signal propagation: the label is projected by "
        "a target generator and fed forward with the input; every layer learns from its own "
        "loss (L_pred, Eq. 9) with its own optimizer, no gradient crosses a layer. Writes a run "
        "directory (config.toml, metrics.nc with per-layer early-exit errors, checkpoint.pt, "
        "best.pt). With no arguments: digits data, a small FC network, about 6 s on 2 cores.",
    )
    _run_arguments(t, "train")
    t.add_argument("--lr", type=float, help="Adam learning rate of every layer (train.lr)")
    return t


def _sweep_parser(sub) -> argparse.ArgumentParser:
    w = sub.add_parser(
        "sweep",
        help="a study: a spec's keys swept over seeds on Ray Tune, each trial a run directory",
        description="Run (or, on the same --out, continue) the sweep of SPEC.toml on Ray Tune: "
        "every setting of its [grid] and [random] keys with each of its seeds, each trial an "
        "ordinary run directory under DIR/trials. With --summary, DIR is a sweep directory: "
        "print and write the test error at the validation-selected epoch, mean ± sd over seeds "
        "(DIR/summary.md, DIR/summary.png). Needs Ray: pip install -e '.[sweep]'.",
    )
    w.add_argument("spec", metavar="SPEC_OR_DIR", help="the sweep spec (TOML); with --summary DIR")
    w.add_argument("--out", help="the sweep's directory (a rerun continues it)")
    w.add_argument("--address", help="join the Ray cluster at this address (ray start --head)")
    w.add_argument(
        "--cpus-per-trial", type=int, default=1, metavar="N", help="CPUs (threads) per trial"
    )
    w.add_argument(
        "--cpus",
        type=int,
        metavar="N",
        help="CPUs of the local Ray (default: the usable cores; fewer leave some to other work)",
    )
    w.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="stop the trials after M minutes (a long sweep in parts: rerun to continue it)",
    )
    w.add_argument("--summary", action="store_true", help="summarise the sweep in SPEC_OR_DIR")
    return w


def _plot_parser(sub) -> argparse.ArgumentParser:
    pl = sub.add_parser(
        "plot",
        help="learning curves of a run or a sweep as PNGs",
        description="Write the learning curves of a run directory or a sweep directory as PNGs: "
        "errors.png (train, validation, test error), exits.png (early-exit test error per "
        "layer), phases.png (solver steps or sweeps per phase); a sweep's curves are the mean "
        "± sd over its seeds, one line per setting, and its summary.png is written too.",
    )
    pl.add_argument("path", metavar="RUN_OR_SWEEP", help="a run or sweep directory")
    pl.add_argument("--out", help="write the PNGs here (default: into RUN_OR_SWEEP)")
    return pl


def _data_parsers(sub) -> list[argparse.ArgumentParser]:
    d = sub.add_parser("data", help="list or check datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("list", help="each dataset: where it was found or how to get it")
    dl.add_argument("--data-dir", help="also look in this directory")
    dc = dsub.add_parser("check", help="verify a dataset's files (downloads it when absent)")
    dc.add_argument("name")
    dc.add_argument("--data-dir", help="look in this directory first")
    dc.add_argument("--no-download", action="store_true", help="do not download when absent")
    return [dl, dc]


def _debug_argument(p: argparse.ArgumentParser, default) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (also CTSP_DEBUG=1), e.g. for a bug report",
    )


def _parallel_arguments(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--oversubscribe`` (both run commands)."""
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="start N local processes for a parallel run (N = parallel.stages x "
        "parallel.replicas; under torchrun, leave it out); at most the usable cores",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow --workers beyond this machine's usable cores (each process loads torch)",
    )


def _run_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """The arguments ``simulate`` and ``train`` share."""
    _parallel_arguments(p)
    p.add_argument(
        "config",
        nargs="?",
        help=f"TOML config file or bundled config name (see `ctsp configs`, {command} configs)",
    )
    p.add_argument("--dataset", help="dataset name (data.name)")
    p.add_argument("--data-dir", help="directory holding the dataset files (data.dir)")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--batch-size", type=int, help="minibatch size (train.batch_size)")
    p.add_argument("--seed", type=int, help="random seed (seed)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (device)")
    p.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads of torch and numba (threads)"
    )
    p.add_argument("--name", help="run name (name)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set "
        + ("solver.tol=1e-3" if command == "simulate" else "model.dropout=0.1")
        + " (repeatable)",
    )
    p.add_argument("--out", help="run directory (default runs/<UTC time>-<name>)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty run directory")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (with more --epochs than it had: the new epochs train at "
        "the last rate of the learning-rate schedule it was planned with)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="EPOCH",
        help="stop after this epoch, leaving a run that --resume continues (a long run in "
        "parts; the learning-rate schedule stays that of train.epochs)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        help="write TensorBoard event files to RUN/tensorboard (record.tensorboard)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    p.add_argument(
        "--help-config",
        action="store_true",
        help="list every config key: type, default, valid values, meaning; then exit",
    )


FLAG_KEYS = {
    "dataset": "data.name",
    "data_dir": "data.dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "beta": "train.beta",
    "solver": "solver.method",
    "lr": "train.lr",
    "seed": "seed",
    "device": "device",
    "threads": "threads",
    "name": "name",
    "record": "record.trajectories",
    "tensorboard": "record.tensorboard",
}


def resolve_config(args: argparse.Namespace):
    """The run config: file (or the saved one on --resume, or the defaults) + flags + --set.

    ``ctsp simulate`` resolves a :class:`ctsp.config.RunConfig`, ``ctsp train`` a
    :class:`ctsp.config.DiscreteRunConfig`.
    """
    from . import config as cfg
    from .errors import ConfigError, RunDirError

    cls = cfg.DiscreteRunConfig if args.command == "train" else cfg.RunConfig
    if args.config:
        base = cfg.load(args.config, cls)
    elif args.resume and args.out is not None and (args.out / "config.toml").is_file():
        try:
            base = cfg.load(args.out / "config.toml", cls)
        except ConfigError as e:
            raise RunDirError(
                f"cannot resume {args.out} with `ctsp {args.command}`: its config.toml is not a "
                f"`ctsp {args.command}` config ({e})"
            ) from None
    else:
        base = cls()
    overrides = [cfg.parse_override(item) for item in args.set]
    for attr, key in FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append((key.split("."), value))
    return cfg.with_overrides(base, overrides)


def _run(args: argparse.Namespace) -> int:
    """``ctsp simulate`` or ``ctsp train``: resolve the config, then print it or run it."""
    from .errors import ConfigError, WorkerError
    from .runs.rundir import out_path

    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be at least 1 (got {args.stop_after})")
    args.out = out_path(args.out)
    config = resolve_config(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    if args.help_config:
        print(help_config(type(config)), end="")
        return 0
    from .app import simulate, train

    run = simulate if args.command == "simulate" else train
    checkpoint = Path(args.out) / "checkpoint.pt" if args.out else None
    workers = _start_workers(args, config, checkpoint)
    extra = {"workers": workers} if workers is not None else {}
    ended = False
    try:
        run(
            config,
            args.out,
            force=args.force,
            resume=args.resume,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            **extra,
        )
        ended = True
    except WorkerError as e:
        hint = " (continue it with --resume)" if checkpoint and checkpoint.exists() else ""
        raise WorkerError(f"{e}; the run stops{hint}") from None
    finally:
        # a failed rank 0 does not wait for its workers (they wait for it): kill them
        failed = workers.end(grace=60.0 if ended else 0.0) if workers is not None else None
    if failed:
        raise WorkerError(failed)
    return 0


def _start_workers(args: argparse.Namespace, config, checkpoint: Path | None):
    """``--workers N``: ranks 1 … N-1 as copies of this command (``ctsp.parallel.launch``),
    watched; None in a process that a launcher started (it has a rank already: it watches its
    rank 0) and without ``--workers``. Refused before anything starts: N other than the run's
    processes, or more than the usable cores (unless ``--oversubscribe``)."""
    from .parallel import BACKENDS, World, backend_name, launch, watch_parent

    n = args.workers
    if "RANK" in os.environ:
        watch_parent(World.from_environment(), checkpoint)  # (nothing under another launcher)
        return None
    if n is None or n == 1:
        return None
    _check_workers(n, config, args.oversubscribe)
    workers = launch(args.argv, n, checkpoint, BACKENDS[backend_name(config.parallel)].group)
    workers.watch()
    return workers


def _check_workers(n: int, config, oversubscribe: bool) -> None:
    from .errors import ConfigError
    from .runs.threads import usable_cores

    size = config.parallel.stages * config.parallel.replicas
    if n < 1 or n != size:
        raise ConfigError(
            f"--workers {n}, but the run needs {size} process(es) (parallel.stages "
            f"{config.parallel.stages} x parallel.replicas {config.parallel.replicas}): use "
            f"--workers {size}"
        )
    cores = usable_cores()
    if n > cores and not oversubscribe:
        raise ConfigError(
            f"--workers {n} would start {n} processes, each loading torch, on this machine's "
            f"{cores} usable cores: use at most {cores} (--oversubscribe if more is meant)"
        )


def help_config(cls) -> str:
    """Every key of the config class ``cls`` as text: key, type, default, valid values, meaning."""
    from .config import describe

    lines = [f"# ctsp {cls.COMMAND}: config keys (TOML tables, or --set section.key=value)"]
    for key, kind, default, valid, meaning in describe(cls):
        lines.append(f"{key} ({kind}, default {default})")
        lines.append(f"    {meaning}")
        if valid:
            lines.append(f"    valid: {valid}")
    return "\n".join(lines) + "\n"


def _configs() -> int:
    """Each bundled config: dataset, network, epochs and the run time estimated for it by
    benchmarks/config_times.py (on the machine it names)."""
    import json

    from .config import ROOTS, bundled_names, load

    times_file = Path(__file__).parent / "configs" / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    estimated = times.get("configs", {})
    print(
        "est. time: benchmarks/config_times.py on "
        + (times.get("machine", "?") if times else "(not measured: no ctsp/configs/times.json)")
    )
    for cls in ROOTS.values():
        names = bundled_names(cls)
        rows = [("name", "dataset", "network", "epochs", "est. time")]
        for name in names:
            c = load(name, cls)
            seconds = estimated.get(name, {}).get("run_seconds")
            rows.append(
                (name, c.data.name, c.network_summary(), str(c.train.epochs), _duration(seconds))
            )
        widths = [max(len(r[k]) for r in rows) for k in range(4)]
        print(f"\n# ctsp {cls.COMMAND}")
        for r in rows:
            print("  ".join(f"{v:<{w}}" for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    _sweep_specs()
    return 0


def _sweep_specs() -> None:
    """The bundled sweep specs: command, swept keys, seeds and trials."""
    from .sweeps import bundled_specs, load_spec

    print("\n# ctsp sweep")
    for name in bundled_specs():
        spec = load_spec(name)
        keys = ", ".join(spec.swept()) or "-"
        n = f"{spec.samples} trials proposed by {spec.search['algorithm']}" if spec.searched else (
            f"{len(spec.trials())} trials")  # fmt: skip
        print(f"{name}  {spec.command}  {keys}  {spec.seeds} seeds  {n}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _data(args: argparse.Namespace) -> int:
    from . import data

    if args.data_command == "list":
        rows = data.describe(args.data_dir)
        width = max(len(n) for n, _ in rows)
        for name, status in rows:
            print(f"{name:<{width}}  {status}")
        return 0
    print(data.check(args.name, args.data_dir, download=not args.no_download))
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr: ``ctsp: warning: <message>``."""
    from .errors import CtspWarning

    where = "" if issubclass(category, CtspWarning) else f" ({filename}:{lineno})"
    print(f"ctsp: warning: {message}{where}", file=sys.stderr if file is None else file)


def _terminate(signum, frame) -> None:
    from .errors import Terminated

    raise Terminated


# OpenMP wait policies chosen by the user (OpenMP's, GNU libgomp's and Intel's variables)
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def passive_openmp_wait(environ=os.environ) -> bool:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless
    the user chose a wait policy or torch (whose OpenMP runtime reads it once, when loaded) is
    already imported; returns whether it was set. Child processes inherit it.

    Why: torch's element-wise ops and matrix products synchronise their threads at the end of
    every op. With a busy process on one of the cores, spinning threads held the run off that
    core and a 2-thread continuous-time minibatch became about 4x slower; with sleeping threads
    about 1.8x, and no slower on a quiet machine (benchmarks/step.py --busy,
    docs/performance.md).
    """
    if "torch" in sys.modules or any(v in environ for v in WAIT_POLICY_VARIABLES):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def quiet_torch_warnings(environ=os.environ) -> bool:
    """Keep torch's C++ warnings (``TORCH_CPP_LOG_LEVEL=ERROR``) off standard error unless the
    user chose a level or torch is already imported; returns whether it was set. Child
    processes inherit it. Why: when a process of a parallel run ends, the others' TCP store
    calls print a warning with a 30-line C++ stack dump before ctsp's one line says which rank
    ended."""
    if "torch" in sys.modules or "TORCH_CPP_LOG_LEVEL" in environ:
        return False
    environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    return True


def main(argv: list[str] | None = None) -> int:
    passive_openmp_wait()
    quiet_torch_warnings()
    from .environment import check as check_environment
    from .environment import read
    from .errors import CtspError, RunInterrupted, Terminated

    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_environment()
        debug = args.debug or read("CTSP_DEBUG")
    except CtspError as e:
        print(f"ctsp: error: {e}", file=sys.stderr)
        return e.exit_code
    previous = signal.signal(signal.SIGTERM, _terminate)
    show_warning, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        code = _command(parser, args)
        sys.stdout.flush()
        return code
    except CtspError as e:
        if debug:
            raise
        print(f"ctsp: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        if debug:
            raise
        kept = f": {e}" if isinstance(e, RunInterrupted) else ""
        print(f"ctsp: interrupted{kept}", file=sys.stderr)
        terminated = e.terminated if isinstance(e, RunInterrupted) else isinstance(e, Terminated)
        return 143 if terminated else 130
    except BrokenPipeError:  # e.g. `ctsp configs | head`: the reader has gone
        sys.stdout = None  # nothing more can be written; keep the interpreter from trying
        return 0
    except Exception as e:  # a bug or an unforeseen failure: one line, the traceback on request
        if debug:
            raise
        what = "out of memory" if isinstance(e, MemoryError) else f"{type(e).__name__}: {e}"
        print(
            f"ctsp: error: {what} (unexpected: rerun with --debug or CTSP_DEBUG=1 for the "
            "traceback, and report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = show_warning


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _sweep(args: argparse.Namespace) -> int:
    """``ctsp sweep SPEC --out DIR`` or ``ctsp sweep DIR --summary``."""
    from . import sweeps
    from .errors import ConfigError, RunDirError, RunInterrupted

    if args.summary:
        lines = sweeps.summary(args.spec)
        text = "\n".join(lines) + "\n"
        print(text, end="")
        sweeps.plot(args.spec, Path(args.spec) / "summary.png")
        (Path(args.spec) / "summary.md").write_text(text)
        return 0
    if not args.out:
        raise RunDirError("ctsp sweep SPEC needs --out DIR (the sweep's directory)")
    spec = sweeps.load_spec(args.spec)
    needed = ["ray", *(["optuna"] if spec.search.get("algorithm") == "optuna" else [])]
    missing = [name for name in needed if not _importable(name)]
    if missing:
        raise ConfigError(
            f"ctsp sweep {args.spec} needs {' and '.join(missing)}: pip install -e '.[sweep]' "
            "(or pip install 'ray[tune]' optuna)"
        )
    try:
        states = sweeps.sweep(
            spec, args.out, address=args.address, cpus=args.cpus,
            cpus_per_trial=args.cpus_per_trial, minutes=args.minutes,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"the sweep in {args.out} stopped before every trial ended; run the same command "
            "again to continue it",
            terminated=False,
        ) from None
    for line in sweeps.failures(spec, Path(args.out)):
        print(f"ctsp: warning: {line}", file=sys.stderr)
    n = {s: list(states.values()).count(s) for s in ("finished", "failed", "stopped", "pending")}
    done = f"sweep in {args.out}: {n['finished']} trials finished, {n['failed']} failed"
    done += f", {n['stopped']} stopped early" if n["stopped"] else ""
    if n["pending"]:
        print(f"{done}, {n['pending']} to go: the {args.minutes:g} minutes are spent; run the "
              "same command again to continue it")  # fmt: skip
    else:
        print(f"{done}; `ctsp sweep {args.out} --summary` summarises it")
    return 0


def _plot(args: argparse.Namespace) -> int:
    """``ctsp plot RUN_OR_SWEEP``: the learning curves (``analysis.curves``)."""
    from analysis.curves import plot_curves

    from . import sweeps
    from .runs import open_run

    path = Path(args.path)
    out = Path(args.out) if args.out else path
    if (path / sweeps.SPEC_FILE).is_file():
        ds = sweeps.open_sweep(path)
        written = plot_curves(
            ds, out, f"sweep {path.name}: {ds.attrs['swept']}, mean ± sd over seeds"
        )
        written.append(sweeps.plot(path, out / "summary.png"))
    else:
        run = open_run(path)
        written = plot_curves(run.metrics, out, f"run {path.name} ({run.config.name})")
    for p in written:
        print(p)
    return 0


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command in ("simulate", "train"):
        return _run(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "plot":
        return _plot(args)
    if args.command == "data":
        return _data(args)
    if args.command == "configs":
        return _configs()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
