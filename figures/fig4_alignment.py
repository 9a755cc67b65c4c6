"""Paper Fig. 4: the loop weights come into alignment (below 90 degrees) during training.

Trains the Fig. 4 network on Fashion-MNIST — two hidden populations and one loop-back projection,
784-H-H-10, so the loop h1 -> h2 -> out -> h1 has three weight matrices (the paper's W1, W2, W3)
— once with a learned and once with a fixed (random, never updated) loop-back, recording the
loop angles (``analysis.alignment``) every ``--every`` minibatches, and draws
``figures/fig4_alignment.png``:

- top row, one panel per angle (W2W3∠W1, W3W1∠W2, W1W2∠W3): learned vs fixed loop-back;
- bottom row: all three angles of each run ("Layers"), and the test error.

Points are per-epoch mean ± one standard deviation over the angles recorded during that epoch
(every ``--every`` minibatches; pooled over seeds when several ``--seeds`` are given); epoch 0 is
the initial (random) network. Thin lines are the raw records.

    python figures/fig4_alignment.py                      # train both variants, then draw
    python figures/fig4_alignment.py --hidden 500 --epochs 15   # smaller and shorter
    python figures/fig4_alignment.py --runs runs/fig4/learned-h1500-s0 runs/fig4/fixed-h1500-s0

Defaults: the paper's size (hidden populations of 1500) and 60 epochs, angles every 50
minibatches, seed 0, the two runs in parallel with one thread each (``--jobs``). The rest of the
configuration is the bundled ``fmnist-2x1500`` with its tuned settings pinned here (so that a
later retuning of the bundled config does not change the figure): the "steady" solver (tol 1e-3,
at most 10 sweeps per phase), beta 1.0 with a positive sign, CHL rates 0.13 / 0.033 / 0.0033,
loop-back rate 0.01 (for the learned variant), all rates x0.25 at 25, 50 and 75 % of the epochs,
batch 20. The fixed-loop-back run is then the bundled config's own 60-epoch run with the angles
recorded. Runs go to ``runs/fig4/<loop>-h<H>-s<seed>``; an existing complete run is reused, an
interrupted one resumed. Runtime on the 2-core development machine: see figures/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.alignment import loop_angles, loop_weights  # noqa: E402
from ctsp import config as cfg  # noqa: E402
from ctsp.errors import CtspError  # noqa: E402
from ctsp.runs import files, machine_line, open_run, selected_epoch  # noqa: E402

VARIANTS = ("learned", "fixed")
BASE_CONFIG = "fmnist-2x1500"
DEFAULT_PNG = Path(__file__).resolve().parent / "fig4_alignment.png"
COLORS = {"learned": "tab:blue", "fixed": "tab:orange"}
ANGLE_COLORS = ("tab:green", "tab:purple", "tab:red")


def run_config(loop: str, hidden: int, epochs: int, every: int, seed: int) -> cfg.RunConfig:
    """The Fig. 4 run: bundled fmnist-2x1500 with the sizes, loop mode and recording set."""
    overrides = [
        f"name=fig4-{loop}-h{hidden}",
        f"seed={seed}",
        f"network.sizes=[784, {hidden}, {hidden}, 10]",
        f"network.loop={loop}",
        f"train.epochs={epochs}",
        f"record.alignment_every={every}",
        "solver.method=steady",
        "solver.tol=1e-3",
        "solver.max_sweeps=10",
        "train.beta=1.0",
        "train.beta_sign=positive",
        "train.lr=[0.13, 0.033, 0.0033]",
        "train.loop_lr=0.01",
        "train.decay=0.25",
        "train.decay_at=[0.25, 0.5, 0.75]",
    ]
    base = cfg.load(BASE_CONFIG)
    return cfg.with_overrides(base, [cfg.parse_override(o) for o in overrides])


def train_one(config: cfg.RunConfig, out: Path, threads: int) -> str:
    """Train (or resume, or reuse) one run; returns its directory. Runs in a worker process."""
    import torch

    from ctsp.app import simulate

    if threads:  # one thread per run when runs share the cores (torch and numba's CHL kernel)
        import numba

        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    tag = out.name

    def log(line: str) -> None:
        print(f"[{tag}] {line}", flush=True)

    resume = (out / files.CHECKPOINT).is_file()
    if resume:
        log("resuming (or reusing) the run already there")
    t0 = time.perf_counter()
    # without a checkpoint, whatever an interrupted start left there is overwritten
    simulate(config, out, resume=resume, force=not resume, progress=False, log=log)
    log(f"wall time {time.perf_counter() - t0:.0f} s")
    return str(out)


def train(args: argparse.Namespace) -> list[Path]:
    jobs = []
    for seed in args.seeds:
        for loop in VARIANTS:
            config = run_config(loop, args.hidden, args.epochs, args.every, seed)
            jobs.append((config, args.out_dir / f"{loop}-h{args.hidden}-s{seed}"))
    threads = 1 if args.jobs > 1 else 0
    if args.jobs <= 1:
        return [Path(train_one(c, o, threads)) for c, o in jobs]
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):  # read by the spawned workers
        os.environ[var] = "1"
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_one, c, o, threads) for c, o in jobs]
        return [Path(f.result()) for f in futures]


def read_run(path: Path) -> dict:
    """A run's alignment record, its initial angles, test errors and loop mode."""
    from ctsp.app import build_layered_network

    try:
        run = open_run(path)
        ds, test_error, chosen = run.alignment, run.metrics.test_error, selected_epoch(run.metrics)
    except CtspError as e:
        sys.exit(f"fig4_alignment: {e}")
    if ds is None:
        sys.exit(
            f"fig4_alignment: no {files.ALIGNMENT} in {path} (run with record.alignment_every > 0)"
        )
    if ds.sizes["step"] == 0:
        sys.exit(f"fig4_alignment: {path}/{files.ALIGNMENT} holds no records yet")
    # the initial angles: the network is seeded by config.seed, exactly as the run started
    initial = loop_angles(loop_weights(build_layered_network(run.config))[1])
    return {
        "path": path, "config": run.config, "ds": ds, "initial": initial, "test": test_error,
        "selected": chosen,
    }  # fmt: skip


def epoch_stats(runs: list[dict]) -> dict:
    """Per-epoch mean and sd of each angle, pooled over the runs; epoch 0 is the initial net."""
    labels = [str(v) for v in runs[0]["ds"].label.values]
    epochs = sorted(set().union(*[set(r["ds"].epoch.values.tolist()) for r in runs]))
    mean = np.empty((len(epochs) + 1, len(labels)))
    sd = np.zeros_like(mean)
    mean[0] = np.mean([r["initial"] for r in runs], axis=0)
    sd[0] = np.std([r["initial"] for r in runs], axis=0)
    for i, e in enumerate(epochs, start=1):
        values = np.concatenate([r["ds"].angle.values[r["ds"].epoch.values == e] for r in runs])
        mean[i], sd[i] = values.mean(axis=0), values.std(axis=0)
    last = np.concatenate([r["ds"].angle.values[-1:] for r in runs])
    return {
        "labels": labels,
        "epoch": np.array([0, *epochs]),
        "mean": mean,
        "sd": sd,
        "last": last.mean(axis=0),
        "n_records": int(sum((r["ds"].epoch.values == epochs[-1]).sum() for r in runs)),
        "test_error": float(np.mean([float(r["test"][-1]) for r in runs])),
        # at the epoch of the lowest validation error (the last without a validation split)
        "selected_test_error": float(np.mean([float(r["test"][r["selected"]]) for r in runs])),
        "selected_epoch": [r["selected"] + 1 for r in runs],
    }


def group(paths: list[Path]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for p in paths:
        r = read_run(p)
        runs.setdefault(r["config"].network.loop, []).append(r)
    missing = [v for v in runs if v not in VARIANTS]
    if missing:
        sys.exit(f"fig4_alignment: runs without a loop-back cannot be drawn: {missing}")
    return {v: runs[v] for v in VARIANTS if v in runs}


def draw(runs: dict[str, list[dict]], png: Path) -> dict[str, dict]:
    stats = {v: epoch_stats(rs) for v, rs in runs.items()}
    first = next(iter(runs.values()))[0]
    labels = stats[next(iter(stats))]["labels"]
    sizes = "-".join(map(str, first["config"].network.sizes))
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)

    def errorbar(ax, s, j, color, label):
        ax.errorbar(
            s["epoch"], s["mean"][:, j], yerr=s["sd"][:, j], color=color, marker="o", ms=3,
            capsize=2, lw=1.2, label=label,
        )  # fmt: skip

    for j, name in enumerate(labels):
        ax = axes[0, j]
        for v, s in stats.items():
            for r in runs[v]:
                ds = r["ds"]
                ax.plot(ds.epoch_progress, ds.angle[:, j], color=COLORS[v], lw=0.4, alpha=0.35)
            errorbar(ax, s, j, COLORS[v], f"{v} loop-back")
        ax.set_title(f"{name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("angle (degrees)")
    for j, v in enumerate(stats):
        ax = axes[1, j]
        for k, name in enumerate(labels):
            errorbar(ax, stats[v], k, ANGLE_COLORS[k], name)
        ax.set_title(f"Layers: {v} loop-back")
        ax.set_xlabel("epoch")
        ax.set_ylabel("angle (degrees)")
        ax.legend(fontsize=8)
    ax = axes[1, 2]
    for v, rs in runs.items():
        for r in rs:
            t = r["test"]
            ax.plot(t.epoch, 100 * t.values, color=COLORS[v], marker="o", ms=3, label=v)
    ax.set_title("test error")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    for ax in axes.flat[:5]:
        ax.axhline(90, color="0.5", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    n_seeds = max(len(rs) for rs in runs.values())
    every = int(first["ds"].attrs["alignment_every"])
    dataset = {"fashion-mnist": "Fashion-MNIST"}.get(
        first["config"].data.name, first["config"].data.name
    )
    fig.suptitle(
        f"Fig. 4: loop alignment on {dataset} ({sizes}, loop h1 -> h2 -> out -> h1; "
        "W1 = h1->h2, W2 = h2->out, W3 = out->h1 loop-back)\n"
        f"points: mean ± 1 sd over the angles recorded every {every} minibatches during epoch e"
        + (f", pooled over {n_seeds} seeds" if n_seeds > 1 else " (one seed)")
        + "; epoch 0: initial weights; thin lines: every record; dashed: 90°",
        fontsize=9,
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    return stats


def report(stats: dict[str, dict]) -> str:
    lines = []
    for v, s in stats.items():
        last_epoch = int(s["epoch"][-1])
        parts = [
            f"{name} {s['mean'][-1, j]:.1f} ± {s['sd'][-1, j]:.1f} (last {s['last'][j]:.1f})"
            for j, name in enumerate(s["labels"])
        ]
        lines.append(
            f"{v:>7} loop-back, epoch {last_epoch}: " + "; ".join(parts)
            + f"; test error {100 * s['test_error']:.2f} %"
        )  # fmt: skip
        below = all(s["mean"][-1] < 90) and all(s["last"] < 90)
        lines.append(f"{'':>7} all three angles below 90 degrees: {'yes' if below else 'NO'}")
    return "\n".join(lines)


def markdown(stats: dict[str, dict], epochs: list[int], command: str) -> str:
    """The angles at ``epochs`` (mean ± sd over the epoch's records) and the test errors, as a
    markdown table with the machine and the command."""
    first = next(iter(stats.values()))
    shown = [e for e in epochs if e in first["epoch"]]
    head = " / ".join(map(str, shown))
    lines = [
        f"Machine: {machine_line()}. Command: `{command}`.",
        "",
        "| angle (degrees) | initial | "
        + " | ".join(f"{v} loop-back, epoch {head}" for v in stats)
        + " |",
        "|---|---|" + "---|" * len(stats),
    ]
    for j, name in enumerate(first["labels"]):
        cells = [f"{first['mean'][0, j]:.1f}"]
        for s in stats.values():
            rows = [int(np.flatnonzero(s["epoch"] == e)[0]) for e in shown]
            cells.append(" / ".join(f"{s['mean'][i, j]:.1f} ± {s['sd'][i, j]:.1f}" for i in rows))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    errors = [
        f"{100 * s['test_error']:.2f} % (selected {100 * s['selected_test_error']:.2f} %, epoch "
        + ", ".join(map(str, s["selected_epoch"]))
        + ")"
        for s in stats.values()
    ]
    lines.append(f"| test error (epoch {int(first['epoch'][-1])}) | | " + " | ".join(errors) + " |")
    return "\n".join(lines) + "\n"


def summary_json(stats: dict[str, dict]) -> dict:
    return {
        v: {
            "labels": s["labels"],
            "epoch": s["epoch"].tolist(),
            "mean": np.round(s["mean"], 3).tolist(),
            "sd": np.round(s["sd"], 3).tolist(),
            "last": np.round(s["last"], 3).tolist(),
            "final_test_error": s["test_error"],
            "selected_test_error": s["selected_test_error"],
            "selected_epoch": s["selected_epoch"],
        }
        for v, s in stats.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, nargs="+", help="draw these run directories, no training")
    p.add_argument("--hidden", type=int, default=1500, help="neurons per hidden population (1500)")
    p.add_argument("--epochs", type=int, default=60, help="epochs per run (60)")
    p.add_argument("--every", type=int, default=50, help="angles every N minibatches (50)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (0)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, 1 thread each (2)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/fig4"), help="runs/fig4")
    p.add_argument("--png", type=Path, default=DEFAULT_PNG, help="figures/fig4_alignment.png")
    p.add_argument("--table", type=Path, help="also write the markdown table to this file")
    p.add_argument(
        "--table-epochs", type=int, nargs="+", default=[1, 5, 15, 30, 60], help="its epochs"
    )
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    paths = args.runs if args.runs else train(args)
    stats = draw(group(paths), args.png)
    print(report(stats))
    summary = args.out_dir / "fig4_summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(summary_json(stats), indent=1, ensure_ascii=False) + "\n")
    if args.table is not None:
        command = "python figures/fig4_alignment.py " + " ".join(argv or sys.argv[1:])
        args.table.write_text(markdown(stats, args.table_epochs, command.strip()))
        print(f"wrote {args.table}")
    print(f"wrote {args.png} and {summary} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
