"""Baseline tables (paper Tables I/II, III/IV, VI): train every rule, measure time and memory.

``--table 1`` (Tables I and II): VGG8b trained by BP, LL-BP, LL-FA and SP; test error, time per
sample and peak memory per batch in total (I) and per layer (II), and the per-layer memory
comparison of SP with the others at the same batch.
``--table 3`` (Tables III and IV): sigprop on VGG8b with dense targets (``signal.into`` =
"hidden", shaped like h_1; "input", shaped like x) and sparse ones ("sparse", shaped like
conv1's weights): error, time, memory, in total and per layer.
``--table 6`` (Table VI): FC 3x1000 with dropout and CONV trained by BP, FA, DFA and SP: test error,
with time and memory per network.

Each run trains with ``ctsp.app.train`` into ``--runs``/table<N>/<run>; a run that exists
is resumed from its checkpoint (or left as it is when it has the epochs), so an interrupted
script continues where it stopped when started again with the same arguments. ``--epochs``
and ``--subset`` / ``--test-subset`` (seeded subsets of the training and test sets, passed to
``ctsp.app.train`` as the run's dataset; the run's ``name`` says which, e.g.
``vgg8b-fmnist-train2000-test2000``) shorten the runs on a CPU; the table states them, the
machine and the command. The efficiency columns come from ``analysis.efficiency.measure`` (the
first ``--batch`` training examples, the same batch for every run; medians over ``--repeats``
steps after ``--warmup``).

    python figures/table_baselines.py --table 1 --epochs 3 --subset 2000 --test-subset 2000
    python figures/table_baselines.py --table 3 --epochs 3 --subset 2000 --test-subset 2000
    python figures/table_baselines.py --table 6 --epochs 10 --subset 10000
    python figures/table_baselines.py --table 1 --data digits --epochs 1 --repeats 1  # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from analysis.efficiency import COUNTED, TOTAL, markdown, measure
from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import train
from ctsp.errors import CtspError, RunDirError
from ctsp.runs import files, machine_line, markdown_table, open_run, selected_epoch

# (label, overrides); a table lists (network label, bundled config, overrides) and its variants
BP, FA, DFA = ("BP", ["train.rule=bp"]), ("FA", ["train.rule=fa"]), ("DFA", ["train.rule=dfa"])
LL_BP, LL_FA = ("LL-BP", ["train.rule=ll-bp"]), ("LL-FA", ["train.rule=ll-fa"])
SP = ("SP", ["train.rule=sigprop"])

TABLES = {
    "1": {
        "title": "Tables I/II analogue: VGG8b trained by BP, LL-BP, LL-FA and SP",
        "nets": [("VGG8b", "vgg8b-fmnist", [])],
        "variants": [BP, LL_BP, LL_FA, SP],
        "paper": "Paper, Table I (VGG8b, CIFAR-10, 400 epochs): test error BP 5.99 %, LL-BP "
        "5.58 %, LL-FA 9.02 %, SP 8.34 %; time per sample BP 12.29, LL-BP 8.11, LL-FA 8.50, SP "
        "5.91 (paper units); max memory per batch BP 22.00, LL-BP 8.85, LL-FA 13.03, SP 6.19 "
        "MiB; Table II: SP uses less memory than LL and BP in every layer. Fashion-MNIST "
        "reference (Noekland & Eidnes 2019, VGG8b): BP 4.53 %, predsim (LL-BP) 4.65 %.",
    },
    "3": {
        "title": "Tables III/IV analogue: sigprop on VGG8b with dense and sparse targets",
        "nets": [("VGG8b", "vgg8b-fmnist", [])],
        "variants": [
            ("SP dense (into hidden)", ["train.rule=sigprop", "signal.into=hidden"]),
            ("SP dense (into input)", ["train.rule=sigprop", "signal.into=input"]),
            ("SP sparse", ["train.rule=sigprop", "signal.into=sparse"]),
        ],
        "paper": "Paper, Table III (VGG8b(2x), CIFAR-10): sparse vs dense targets, time 9.56 vs "
        "14.48, memory 10.74 vs 14.04 MiB, test error 7.71 vs 7.60 %.",
    },
    "6": {
        "title": "Table VI analogue: FC 3x1000 with dropout and CONV trained by BP, FA, DFA, SP",
        "nets": [
            ("FC 3x1000 dropout", "fc-3x1000-fmnist", []),
            ("CONV", "conv-cifar10", []),
        ],
        "variants": [BP, FA, DFA, SP],
        "paper": "Paper, Table VI (CIFAR-10; the paper has no Fashion-MNIST column), test "
        "error %: FC 3x1000 dropout BP 42.20, FA 46.90, DFA 42.90, SP 42.62; CONV BP 22.50, FA "
        "27.10, DFA 26.90, SP 24.75.",
    },
}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


# --- data subsets ------------------------------------------------------------------------------


@functools.cache
def full_dataset(name: str, data_dir: str) -> datasets.Dataset:
    """The whole dataset ``name`` (no validation split), loaded once."""
    return datasets.load(name, data_dir=data_dir or None)


def subset(data: datasets.Dataset, train_n: int, test_n: int) -> datasets.Dataset:
    """``data`` cut to ``train_n`` training and ``test_n`` test examples (0 = all), in their
    order, chosen by one generator seeded with 0 (a permutation of the training set, then one
    of the test set, each drawn only when it cuts)."""
    rng = np.random.default_rng(0)

    def keep(n: int, total: int):
        if not 0 < n < total:
            return slice(None)
        return torch.from_numpy(np.sort(rng.permutation(total)[:n]))

    train_idx = keep(train_n, data.train_x.shape[0])
    test_idx = keep(test_n, data.test_x.shape[0])
    return dataclasses.replace(
        data,
        train_x=data.train_x[train_idx],
        train_y=data.train_y[train_idx],
        test_x=data.test_x[test_idx],
        test_y=data.test_y[test_idx],
    )


def subset_tag(args) -> str:
    return f"train{args.subset or 'all'}-test{args.test_subset or 'all'}"


def measured_data(args, config: cfg.DiscreteRunConfig) -> datasets.Dataset:
    """The dataset the efficiency is measured on: the (subset of the) training and test sets."""
    data = full_dataset(config.data.name, config.data.dir)
    return subset(data, args.subset, args.test_subset) if args.subset or args.test_subset else data


def run_data(args, config: cfg.DiscreteRunConfig) -> datasets.Dataset | None:
    """The dataset a run trains on: the subsets with the config's validation split, or None
    (``config.data``, as ``ctsp.app.train`` loads it) without subsets."""
    if not (args.subset or args.test_subset):
        return None
    return measured_data(args, config).hold_out(config.data.validation, config.seed)


# --- runs --------------------------------------------------------------------------------------


def run_config(args, bundled: str, overrides: list[str]) -> cfg.DiscreteRunConfig:
    items = [f"data.name={args.data}", *overrides, *args.set]
    if args.epochs:
        items.append(f"train.epochs={args.epochs}")
    if args.device:
        items.append(f"device={args.device}")
    config = cfg.with_overrides(
        cfg.load(bundled, cfg.DiscreteRunConfig), [cfg.parse_override(s) for s in items]
    )
    if args.subset or args.test_subset:  # in config.toml, and a resume with others is refused
        config = cfg.with_overrides(config, [(["name"], f"{config.name}-{subset_tag(args)}")])
    return config


def train_run(
    config: cfg.DiscreteRunConfig, path: Path, data: datasets.Dataset | None = None
) -> xr.Dataset:
    """Train (or resume, or leave) the run in ``path`` on ``data`` (default ``config.data``);
    its metrics."""
    resume = (path / files.CHECKPOINT).is_file()
    done = open_run(path).epochs_done if resume else 0
    if done < config.train.epochs:
        print(f"{path}: training epochs {done + 1}..{config.train.epochs}", flush=True)
        try:
            train(
                config, path, resume=resume, force=not resume, progress=False, log=print, data=data
            )
        except RunDirError as e:
            raise RunDirError(
                f"{e} (keep the run's settings, or name new runs with --name)"
            ) from None
    return open_run(path).metrics


def error_cells(m: xr.Dataset | None) -> list[str]:
    """selected test error (epoch: the lowest validation error, else the last), final test
    error, final train error, train s/epoch."""
    if m is None:
        return ["—"] * 4
    chosen = selected_epoch(m)
    return [
        f"{float(m.test_error[chosen]):.2%} ({chosen + 1})",
        f"{float(m.test_error[-1]):.2%}",
        f"{float(m.train_error[-1]):.2%}",
        f"{float(m.train_seconds.mean()):.0f}",
    ]


def memory_comparison(rows: list[dict], mine: str, others: list[str]) -> list[str]:
    """Per-layer peak memory of run ``mine`` against each of ``others`` (same batch)."""
    by = {(r["run"], r["layer"]): r for r in rows}
    layers = [r["layer"] for r in rows if r["run"] == mine and r["layer"] != TOTAL]
    lines = []
    for other in others:
        shared = [layer for layer in layers if (other, layer) in by]
        mem = {
            layer: (by[(mine, layer)]["memory_mib"], by[(other, layer)]["memory_mib"])
            for layer in shared
        }
        less = [layer for layer in shared if mem[layer][0] < mem[layer][1]]
        more = [layer for layer in shared if layer not in less]
        total_mine, total_other = by[(mine, TOTAL)]["memory_mib"], by[(other, TOTAL)]["memory_mib"]
        lines.append(
            f"- {mine} vs {other}: {mine} needs less peak memory in {len(less)} of {len(shared)} "
            f"layers" + (f" (not in: {', '.join(more)})" if more else "") + f"; whole step "
            f"{total_mine:.2f} vs {total_other:.2f} MiB "
            f"({'less' if total_mine < total_other else 'not less'})."
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", choices=sorted(TABLES), required=True)
    ap.add_argument("--data", default="fashion-mnist", help="dataset (data.name)")
    ap.add_argument("--epochs", type=int, help="train.epochs (default: the bundled config's)")
    ap.add_argument("--subset", type=int, default=0, help="training examples (0 = all)")
    ap.add_argument("--test-subset", type=int, default=0, help="test examples (0 = all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, cpu)")
    ap.add_argument("--batch", type=int, default=0, help="efficiency batch (0 = train batch)")
    ap.add_argument("--repeats", type=int, default=3, help="efficiency: measured steps")
    ap.add_argument("--warmup", type=int, default=1, help="efficiency: warm-up steps")
    ap.add_argument("--no-train", action="store_true", help="efficiency only")
    ap.add_argument("--no-measure", action="store_true", help="errors only")
    ap.add_argument("--runs", type=Path, default=Path("runs/table_baselines"))
    ap.add_argument("--name", help="suffix of the run names (for variants of the settings)")
    ap.add_argument("--out", type=Path, help="markdown file (default RUNS/table<N>.md)")
    args = ap.parse_args(argv)
    spec = TABLES[args.table]
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    out = args.out or args.runs / f"table{args.table}.md"
    t0 = time.time()
    try:
        text = make_table(args, spec, command)
    except CtspError as e:
        raise SystemExit(f"table_baselines: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out} in {(time.time() - t0) / 60:.1f} min")


def make_table(args, spec: dict, command: str) -> str:
    lines = [
        f"# {spec['title']}",
        "",
        f"Machine: {machine_line()}",
        f"Command: `python figures/table_baselines.py {command}`",
        "",
    ]
    body, settings = [], []
    for net_label, bundled, net_overrides in spec["nets"]:
        results, rows = [], []
        for label, overrides in spec["variants"]:
            config = run_config(args, bundled, [*net_overrides, *overrides])
            name = slug(f"{bundled}-{label}") + (f"-{args.name}" if args.name else "")
            metrics = None
            if not args.no_train:
                path = args.runs / f"table{args.table}" / name
                metrics = train_run(config, path, run_data(args, config))
            if not args.no_measure:
                rows += measure(
                    config,
                    [config.train.rule],
                    data=measured_data(args, config),
                    batch_size=args.batch or None,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    run=label,
                )
            results.append((label, config, metrics))
        settings.append(describe(net_label, results[0][1], args))
        body += table_rows(net_label, results, rows)
        if rows:
            body += [
                "",
                f"Time and memory per layer ({net_label}):",
                "",
                markdown(rows, counted=False),
            ]
            if args.table == "1":
                body += ["Per-layer peak memory, SP against the others (same batch):", ""]
                body += memory_comparison(rows, "SP", ["BP", "LL-BP", "LL-FA"]) + [""]
    lines += settings + ["", *body, "", spec["paper"], ""]
    if not args.no_measure:
        lines += [COUNTED, ""]
    return "\n".join(lines)


def describe(net_label: str, config: cfg.DiscreteRunConfig, args) -> str:
    """One line of settings: data, subsets, epochs, batch, lr."""
    t = config.train
    data = config.data.name
    sizes = []
    if args.subset:
        sizes.append(f"training on a seeded subset of {args.subset} examples")
    if args.test_subset:
        sizes.append(f"test error on a seeded subset of {args.test_subset} test examples")
    reduced = ", ".join(sizes) or "full training and test sets"
    return (
        f"- {net_label}: {data}, {reduced}; {t.epochs} epochs (lr {t.lr:g}, x{t.decay:g} at "
        f"{', '.join(f'{f:.0%}' for f in t.decay_at)} of the epochs), batch {t.batch_size}, "
        f"dropout {config.model.dropout:g}"
        + (" (targets too)" if config.signal.target_dropout else " (input path only)")
        + f", crop {config.data.crop}, seed {config.seed}, device {config.device}"
        + (
            f", batch-norm statistics recomputed from {t.recalibrate_bn} training minibatches "
            "before evaluating."
            if t.recalibrate_bn
            else "."
        )
    )


def table_rows(net_label: str, results, rows: list[dict]) -> list[str]:
    totals = {r["run"]: r for r in rows if r["layer"] == TOTAL}
    header = [
        "run",
        "epochs",
        "selected test error (epoch)",
        "final test error",
        "final train error",
        "train s/epoch",
        "time per sample (µs)",
        "peak memory per batch (MiB)",
        "persistent (MiB)",
    ]
    cells = []
    for label, config, metrics in results:
        epochs = "—" if metrics is None else f"{metrics.sizes['epoch']}/{config.train.epochs}"
        t = totals.get(label)
        eff = (
            [f"{t['time_us']:.1f}", f"{t['memory_mib']:.2f}", f"{t['persistent_mib']:.1f}"]
            if t
            else ["—"] * 3
        )
        cells.append([label, epochs, *error_cells(metrics), *eff])
    return ["", f"{net_label}:", "", *markdown_table(header, cells)]


if __name__ == "__main__":
    main()
