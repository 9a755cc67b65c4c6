"""Trajectory statistics and plots, from a run's ``trajectories.nc`` (``analysis.recording``).

The Dataset has one variable per population (h1, …, out) with dims ([epoch,] phase, time, sample,
neuron_<name>) and ``residual`` max_j |ds_j/dt| with dims ([epoch,] phase, time, sample); ``time``
is measured from the start of each phase (units of the neuron time constant r) and a phase is NaN
where it has no recorded point (after ``end_time``, its last one).

- :func:`open_trajectories` reads a run directory's (or a file's) trajectories into memory;
- :func:`phase_end` the state at each phase's end, :func:`convergence_time` when the residual
  falls under a tolerance for good, :func:`settling_time` when a population stays near its end
  state, :func:`population_summary` these per population;
- :func:`plot_population`, :func:`plot_residual`, :func:`plot_epochs`: matplotlib Axes (drawn on a
  new Agg-backed Figure unless ``ax`` is given); ``figures/trajectories.py`` saves them as PNGs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "convergence_time",
    "open_trajectories",
    "phase_end",
    "plot_epochs",
    "plot_population",
    "plot_residual",
    "population_names",
    "population_summary",
    "settling_time",
]

RESIDUAL_FLOOR = 1e-9  # residuals of exactly 0 (a fixed point) are drawn here on log axes


def open_trajectories(path: str | Path) -> xr.Dataset:
    """The trajectories of a run directory (its ``trajectories.nc``) or of a file, in memory."""
    path = Path(path)
    if path.is_dir():
        path = path / "trajectories.nc"
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


def population_names(ds: xr.Dataset) -> list[str]:
    """The population variables of ``ds`` (those with a neuron dimension), in network order."""
    return [
        str(k) for k, v in ds.data_vars.items() if any(str(d).startswith("neuron") for d in v.dims)
    ]


def phase_end(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Variable ``name`` at each phase's last recorded time (``end_time``): the solver's final
    state of that phase. Dims: those of ``name`` without ``time``."""
    return ds[name].sel(time=ds.end_time).drop_vars("time")


def _first_time_staying(ok: xr.DataArray, recorded: xr.DataArray) -> xr.DataArray:
    """The first recorded time from which ``ok`` holds at every later recorded point (NaN: none)."""
    axis = ok.get_axis_num("time")
    holds = (ok | ~recorded).values
    stays = np.flip(np.logical_and.accumulate(np.flip(holds, axis), axis), axis)
    start = ok.copy(data=stays) & recorded
    first = ok.time.values[start.argmax("time").values]
    return xr.DataArray(first, dims=start.isel(time=0).dims).where(start.any("time"))


def convergence_time(ds: xr.Dataset, tol: float = 1e-3) -> xr.DataArray:
    """Per sample and phase (and epoch): the first recorded time after which the residual
    max_j |ds_j/dt| stays below ``tol``; NaN when it does not by the phase's end.

    The resolution is the recording grid (``stride`` solver steps); with ``network.tau = 1``
    the residual is on the scale of ``solver.tol``.
    """
    res = ds.residual
    out = _first_time_staying(res < tol, res.notnull()).assign_coords(
        {k: v for k, v in res.coords.items() if "time" not in v.dims}
    )
    out.attrs = {"long_name": f"time until max |ds/dt| stays below {tol:g}", "units": "r"}
    return out.rename("convergence_time")


def settling_time(ds: xr.Dataset, population: str, tol: float = 1e-2) -> xr.DataArray:
    """Per sample and phase (and epoch): the first recorded time after which every neuron of
    ``population`` stays within ``tol`` of its state at the phase's end."""
    da = ds[population]
    neuron = da.dims[-1]
    dist = abs(da - phase_end(ds, population)).max(neuron)
    out = _first_time_staying(dist <= tol, da.notnull().all(neuron)).assign_coords(
        {k: v for k, v in ds.residual.coords.items() if "time" not in v.dims}
    )
    out.attrs = {"long_name": f"time until {population} stays within {tol:g} of its end state"}
    return out.rename("settling_time")


def population_summary(ds: xr.Dataset, tol: float = 1e-2) -> xr.Dataset:
    """Per population, phase and sample (and epoch), a Dataset with dimension ``population``:

    - ``mean_state``: the population's mean state at the phase's end;
    - ``active``: the fraction of its neurons with a state above 0 at the end;
    - ``movement``: mean_j |s_j(end) - s_j(start)| over the phase (for the clamped phase: how far
      nudging the output moved this population from its free fixed point);
    - ``settling_time``: see :func:`settling_time` (with ``tol``).
    """
    rows = []
    for name in population_names(ds):
        da = ds[name]
        neuron = da.dims[-1]
        end, start = phase_end(ds, name), da.isel(time=0, drop=True)
        rows.append(
            xr.Dataset(
                {
                    "mean_state": end.mean(neuron),
                    "active": (end > 0).mean(neuron),
                    "movement": abs(end - start).mean(neuron),
                    "settling_time": settling_time(ds, name, tol),
                }
            )
        )
    out = xr.concat(rows, dim="population", coords="minimal", compat="override", join="outer")
    return out.assign_coords(population=population_names(ds))


# plotting -----------------------------------------------------------------------------------


def _axes(ax, figsize=(7, 3.5)):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.subplots()


def _one_epoch(ds: xr.Dataset, epoch: int | None) -> xr.Dataset:
    if "epoch" not in ds.dims:
        return ds
    return ds.isel(epoch=-1) if epoch is None else ds.sel(epoch=epoch)


def _phases(da: xr.DataArray, ds: xr.Dataset):
    """(phase, times on one timeline, values) per phase; the clamped phase follows the free one."""
    offset = 0.0
    for phase in ds.phase.values:
        part = da.sel(phase=phase)
        part = part.isel(time=np.flatnonzero(ds.residual.sel(phase=phase).notnull().any("sample")))
        yield str(phase), part.time.values + offset, part
        offset += float(ds.end_time.sel(phase=phase))


def _mark_nudge(ax, ds: xr.Dataset) -> None:
    if "clamped" not in ds.phase.values:
        return
    t0 = float(ds.end_time.sel(phase="free"))
    t1 = t0 + float(ds.end_time.sel(phase="clamped"))
    ax.axvspan(t0, t1, color="tab:orange", alpha=0.08, lw=0)
    ax.axvline(t0, color="tab:orange", ls="--", lw=1)
    beta = ds.attrs.get("beta")
    label = f"nudge on (beta = {beta:g})" if beta is not None else "nudge on"
    ax.text(t0, 1.0, f" {label}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)


def _describe(ds: xr.Dataset, sample) -> str:
    parts = []
    if sample is not None:
        parts.append(f"sample {int(sample)}")
        if "label" in ds.coords:
            parts.append(f"label {int(ds.label.sel(sample=sample))}")
    if "epoch" in ds.coords:
        parts.append(f"epoch {int(ds.epoch)}")
    return ", ".join(parts)


def plot_population(
    ds: xr.Dataset,
    population: str,
    *,
    sample: int | None = None,
    epoch: int | None = None,
    neurons: int = 12,
    ax=None,
):
    """The states of one population for one sample: the free relaxation, then (shaded) the
    clamped phase on the same timeline. Draws the ``neurons`` neurons that move most and the
    population mean (black). ``sample``: a sample id (default the first); ``epoch``: default the
    last recorded. Returns the Axes."""
    import matplotlib

    ds = _one_epoch(ds, epoch)
    sample = int(ds.sample[0]) if sample is None else sample
    da = ds[population].sel(sample=sample)
    neuron = da.dims[-1]
    span = (da.max(["phase", "time"]) - da.min(["phase", "time"])).fillna(0).values
    top = np.sort(np.argsort(-span, kind="stable")[: min(neurons, span.size)])
    ax = _axes(ax)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(top)))
    for phase, t, part in _phases(da, ds):
        for color, j in zip(colors, top, strict=True):
            ax.plot(t, part.isel({neuron: j}).values, color=color, lw=1)
        label = "population mean" if phase == "free" else None
        ax.plot(t, part.mean(neuron).values, color="k", lw=2, label=label)
    _mark_nudge(ax, ds)
    ax.set_xlabel("time (r, neuron time constants)")
    ax.set_ylabel("state s")
    ax.set_title(
        f"{population}: {len(top)} of {da.sizes[neuron]} neurons, {_describe(ds, sample)}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_residual(
    ds: xr.Dataset,
    *,
    sample: int | None = None,
    epoch: int | None = None,
    tol: float | None = None,
    ax=None,
):
    """The residual max_j |ds_j/dt| on a log axis over the free then the clamped phase: every
    sample (thin) and their median (black), or one ``sample``; ``tol`` as a dotted line."""
    ds = _one_epoch(ds, epoch)
    res = ds.residual if sample is None else ds.residual.sel(sample=[sample])
    ax = _axes(ax)
    for phase, t, part in _phases(res, ds):
        values = np.maximum(part.values, RESIDUAL_FLOOR)
        ax.plot(t, values, color="tab:blue", lw=0.8, alpha=0.4 if sample is None else 1)
        if sample is None:
            label = "median over samples" if phase == "free" else None
            ax.plot(t, np.median(values, axis=1), color="k", lw=2, label=label)
    if tol is not None:
        ax.axhline(tol, color="tab:red", ls=":", lw=1, label=f"tol {tol:g}")
    _mark_nudge(ax, ds)
    ax.set_yscale("log")
    ax.set_xlabel("time (r, neuron time constants)")
    ax.set_ylabel("residual max |ds/dt|")
    n = res.sizes["sample"]
    ax.set_title(
        f"residual, {_describe(ds, sample) if sample is not None else f'{n} samples'}"
        + (f", epoch {int(ds.epoch)}" if sample is None and "epoch" in ds.coords else ""),
        fontsize=9,
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    return ax


def plot_epochs(ds: xr.Dataset, *, tol: float = 1e-3, axes=None):
    """How relaxation changes with training: (left) the median residual over samples against
    time, one line per recorded epoch; (right) the median convergence time (residual below
    ``tol`` for good) of each phase against the epoch, NaN (not converged) left out. Returns the
    two Axes."""
    import matplotlib

    if axes is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 3.8), layout="constrained")
        axes = fig.subplots(1, 2)
    if "epoch" not in ds.dims:
        ds = ds.expand_dims("epoch")
    left, right = axes
    epochs = ds.epoch.values
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(epochs)))
    for color, e in zip(colors, epochs, strict=True):
        one = ds.sel(epoch=e)
        for phase, t, part in _phases(one.residual, one):
            median = np.median(np.maximum(part.values, RESIDUAL_FLOOR), axis=1)
            left.plot(
                t, median, color=color, lw=1.2, label=f"epoch {e}" if phase == "free" else None
            )
    left.axhline(tol, color="tab:red", ls=":", lw=1)
    _mark_nudge(left, ds.isel(epoch=-1))
    left.set_yscale("log")
    left.set_xlabel("time (r)")
    left.set_ylabel("median residual max |ds/dt|")
    left.legend(fontsize=7, ncol=2)
    conv = convergence_time(ds, tol)
    for phase, marker in zip(ds.phase.values, "os", strict=False):
        with warnings.catch_warnings():  # an epoch where no sample converged: NaN, not drawn
            warnings.simplefilter("ignore", RuntimeWarning)
            c = conv.sel(phase=phase).transpose("epoch", "sample").values
            q = np.nanquantile(c, [0.25, 0.5, 0.75], axis=1)
        right.plot(epochs, q[1], marker=marker, label=f"{phase} phase")
        right.fill_between(epochs, q[0], q[2], alpha=0.2, lw=0)
    right.set_xticks(epochs)
    right.set_xlabel("epoch")
    right.set_ylabel(f"convergence time (r), residual < {tol:g}")
    right.set_title("median and quartiles over samples (missing: not converged)", fontsize=9)
    right.legend(fontsize=8)
    return axes
