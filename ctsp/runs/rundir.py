"""Run directories and atomic writes.

A run directory holds the files of ``ctsp.runs.files.RUN_FILES``: ``config.toml`` (the
resolved, rerunnable config), ``metrics.nc``, ``checkpoint.pt`` (the last completed epoch),
``best.pt`` (the best model so far) and, when recorded, ``trajectories.nc`` and
``alignment.nc``. Every file is written to a temporary
file in the same directory and renamed into place, so an interrupted write never leaves a
half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RunDirError, WriteError
from .files import CHECKPOINT, RUN_FILES

RUNS_ROOT = Path("runs")


def default_path(name: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<UTC timestamp>-<name>."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{name}"


def prepare(out: Path | None, name: str, *, force: bool = False, resume: bool = False) -> Path:
    """Create (or reopen, with ``resume``) a run directory.

    An existing non-empty directory is refused unless ``force`` (its run files are removed) or
    ``resume`` (it must hold a checkpoint).
    """
    path = Path(out) if out is not None else default_path(name)
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out DIR naming the run to continue")
        if not (path / CHECKPOINT).is_file():
            raise RunDirError(f"cannot resume {path}: no checkpoint.pt there")
        return path
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise RunDirError(
                f"output directory {path} exists and is not empty; "
                "use --force to overwrite or --resume to continue it"
            )
        for f in RUN_FILES:
            (path / f).unlink(missing_ok=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create output directory {path}: {e.strerror}") from None
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; an OS error
    (unwritable directory, full disk) is raised as :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_netcdf(ds, path: Path) -> None:
    """Write an xarray Dataset as netCDF (scipy engine), atomically."""
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))


def save_torch(obj, path: Path) -> None:
    """``torch.save`` atomically."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))
