"""Reading a sweep back: one xarray Dataset, and the summary over seeds.

:func:`open_sweep` stacks the trials' ``metrics.nc`` with the variant, the swept grid keys and
``seed`` as dimensions beside ``epoch`` (a ``[random]`` spec adds a dimension ``sample``, its
keys as coordinates along it; so does a search, along its proposals' numbers; a list value,
such as a layer's learning rates, is its text); a trial not run or failed is NaN, and so are
the epochs after a trial the scheduler stopped.
:func:`summary` selects, for every setting and seed, the epoch with the lowest validation error
(the final epoch where the runs hold out no validation data; never the test error) and gives the
test error there as mean ± sd over the seeds: a markdown table, and a figure of the test error
against each swept key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import RunDirError
from ..runs import selection
from .runner import TRIALS, failures, load_saved_spec, status, stops, trials
from .spec import VARIANT, SweepSpec, Trial, _text


def _trial_dataset(spec: SweepSpec, trial: Trial, metrics: Path) -> xr.Dataset:
    ds = xr.load_dataset(metrics, engine="scipy")
    ds.attrs = {}
    ds = ds.expand_dims(seed=[trial.seed])
    if trial.sample is not None:
        ds = ds.expand_dims(sample=[trial.sample])
        ds = ds.assign_coords({k: ("sample", [_coordinate(trial.params[k])]) for k in spec.random})
    for key in reversed(spec.dimensions()):  # (each new dimension goes first)
        ds = ds.expand_dims({key: [_coordinate(trial.params[key])]})
    return ds


def _coordinate(value):
    """A swept value as a coordinate: a list (a layer's learning rates) as its text, as in the
    trial's name (``[0.13,0.033,0.0033]``)."""
    return _text(value) if isinstance(value, list | tuple) else value


def open_sweep(path: str | Path) -> xr.Dataset:
    """The sweep in ``path`` as one Dataset: dims ([variant], grid keys…, [sample], seed, epoch[,
    layer])."""
    path = Path(path)
    spec = load_saved_spec(path)
    parts = [
        _trial_dataset(spec, t, path / TRIALS / t.name / "metrics.nc")
        for t in trials(spec, path)
        if (path / TRIALS / t.name / "metrics.nc").is_file()
    ]
    if not parts:
        raise RunDirError(f"{path}: no trial has finished an epoch yet")
    ds = xr.merge(parts, combine_attrs="drop", join="outer", compat="no_conflicts")
    for key in spec.dimensions():  # in the spec's order (the merge sorts them)
        values = list(spec.variants) if key == VARIANT else spec.grid[key]
        present = set(ds[key].values.tolist())
        ds = ds.reindex({key: [c for c in map(_coordinate, values) if c in present]})
    base = spec.config or f"the default `ctsp {spec.command}` config"
    ds.attrs.update(command=spec.command, config=base, swept=", ".join(spec.swept()))
    return ds


def selected(ds: xr.Dataset) -> tuple[xr.DataArray, str]:
    """The test error at the selected epoch of every trial (``ctsp.runs.selection``), and what
    selected it."""
    how = "lowest validation error" if "val_error" in ds else "final epoch (no validation split)"
    return ds.test_error.isel(epoch=selection(ds)), how


def settings(path: str | Path) -> tuple[xr.Dataset, str]:
    """Per setting (dimension ``setting``, the swept keys as coordinates): the test error at the
    selected epoch as ``mean``, ``sd`` (over seeds, ddof 1) and ``n`` (seeds that ran), the
    validation error that selected it as ``val_mean`` (where the runs hold out data); and what
    selected the epoch."""
    ds = open_sweep(path)
    test, how = selected(ds)
    stats = xr.Dataset(
        {"mean": test.mean("seed"), "sd": test.std("seed", ddof=1), "n": test.count("seed")}
    )
    if "val_error" in ds:
        stats["val_mean"] = ds.val_error.isel(epoch=selection(ds)).mean("seed")
    dims = list(stats["mean"].dims)
    flat = stats.stack(setting=dims) if dims else stats.expand_dims(setting=[0])
    flat = flat.reset_index("setting") if dims else flat
    flat.attrs.update(ds.attrs)
    return flat, how


def summary(path: str | Path) -> list[str]:
    """The summary as markdown lines: per setting, the test error at the selected epoch,
    mean ± sd over the seeds."""
    from ..runs import markdown_table

    flat, how = settings(path)
    spec = load_saved_spec(Path(path))
    keys = spec.swept()
    rows = []
    val = "val_mean" in flat
    for k in range(flat.sizes["setting"]):
        s = flat.isel(setting=k)
        sd = f"{float(s.sd):.2%}" if int(s.n) > 1 else "-"
        selecting = [f"{float(s.val_mean):.2%}"] if val else []
        rows.append([*(_cell(s[key].values) for key in keys), *selecting,
                     f"{float(s['mean']):.2%}", sd, int(s.n)])  # fmt: skip
    header = [*keys, *(["validation error (mean)"] if val else []), "test error (mean)", "sd",
              "seeds"]  # fmt: skip
    failed, stopped = failures(spec, Path(path)), stops(spec, Path(path))
    pending = [name for name, state in status(spec, Path(path)).items() if state == "pending"]
    return [
        f"Sweep {Path(path)}: {flat.attrs['config']} with {flat.attrs['swept'] or 'no key'} "
        f"swept; the test error at the epoch of the {how}, over seeds",
        "",
        *markdown_table(header, rows),
        *_listed(failed, "failed"),
        *_listed(stopped, "stopped early"),
        *_listed(pending, "not finished (their epochs so far are in the table; rerun the sweep)"),
    ]


def _listed(lines: list[str], what: str) -> list[str]:
    return ["", f"{len(lines)} trial(s) {what}:", *(f"- {line}" for line in lines)] if lines else []


def _cell(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot(path: str | Path, out: Path) -> Path:
    """A PNG of the test error at the selected epoch (mean ± sd over seeds) against each swept
    key, a point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat, how = settings(path)
    keys = load_saved_spec(Path(path)).swept()
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2),
                             squeeze=False)  # fmt: skip
    for ax, key in zip(axes[0], keys or ["setting"], strict=True):
        x = flat[key].values
        ax.errorbar(x, 100 * flat["mean"].values, 100 * flat.sd.fillna(0).values, fmt="o",
                    capsize=3)  # fmt: skip
        ax.set_xlabel(key)
        if np.issubdtype(np.asarray(x).dtype, np.number) and (np.asarray(x) > 0).all():
            if np.asarray(x).max() / np.asarray(x).min() > 20:
                ax.set_xscale("log")
        ax.set_ylabel("test error (%)")
    fig.suptitle(f"at the epoch of the {how}; mean ± sd over seeds", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
