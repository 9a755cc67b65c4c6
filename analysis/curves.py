"""Learning curves of a run or a sweep as PNGs (``ctsp plot``).

The input is a run's ``metrics`` (dims ``epoch``[, ``layer``]) or a sweep's Dataset
(``ctsp.open_sweep``: the swept keys and ``seed`` beside them). Each curve is a line over
``epoch``; a sweep's are the mean over ``seed`` with a band of ± 1 sd, one line per setting.

- ``errors.png``: the training, validation and test error, one panel each;
- ``exits.png``: the early-exit test error of every layer (discrete and spiking networks);
- ``phases.png``: solver steps (or "steady" sweeps) per free and clamped phase
  (continuous-time networks).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

PANELS = {
    "errors.png": ("train_error", "val_error", "test_error"),
    "exits.png": ("test_exit_error",),
    "phases.png": ("free_steps", "clamped_steps"),
}


def lines(da: xr.DataArray) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """(label, mean, sd or None) over ``epoch`` for every line of ``da``: the mean and sd over
    ``seed`` where there is one, a line per value of every other dimension."""
    mean, sd = (da.mean("seed"), da.std("seed", ddof=1)) if "seed" in da.dims else (da, None)
    other = [d for d in mean.dims if d != "epoch"]
    if not other:
        yield "", mean.values, None if sd is None else sd.values
        return
    flat_mean = mean.stack(line=other).transpose("line", "epoch")
    flat_sd = None if sd is None else sd.stack(line=other).transpose("line", "epoch")
    for k in range(flat_mean.sizes["line"]):
        key = flat_mean.line.values[k]
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{d}={_text(v)}" for d, v in zip(other, key, strict=True))
        yield label, flat_mean.values[k], None if flat_sd is None else flat_sd.values[k]


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_curves(ds: xr.Dataset, out: Path, title: str = "") -> list[Path]:
    """Write the PNGs of :data:`PANELS` that ``ds`` has variables for into ``out``; their
    paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, variables in PANELS.items():
        present = [v for v in variables if v in ds]
        if not present:
            continue
        fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.4), squeeze=False)
        for ax, v in zip(axes[0], present, strict=True):
            _panel(ax, ds[v], ds.epoch.values, v)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written


def _panel(ax, da: xr.DataArray, epochs: np.ndarray, name: str) -> None:
    from matplotlib.ticker import MaxNLocator

    percent = name.endswith("error")
    scale = 100.0 if percent else 1.0
    many = 0
    for label, mean, sd in lines(da):
        (line,) = ax.plot(epochs, scale * mean, marker="." if len(epochs) < 30 else None,
                          label=label or None)  # fmt: skip
        if sd is not None:
            ax.fill_between(epochs, scale * (mean - sd), scale * (mean + sd), alpha=0.2,
                            color=line.get_color())  # fmt: skip
        many += 1
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(name.replace("_", " ") + (" (%)" if percent else ""))
    if 1 < many <= 12:
        ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
