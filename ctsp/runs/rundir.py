"""Run directories and atomic writes.

A run directory holds the files of ``ctsp.runs.files.RUN_FILES``: ``config.toml`` (the
resolved, rerunnable config), ``metrics.nc``, ``checkpoint.pt`` (the last completed epoch),
``best.pt`` (the best model so far) and, when recorded, ``trajectories.nc`` and
``alignment.nc``. Every file is written to a temporary
file in the same directory and renamed into place, so an interrupted write never leaves a
half-written file behind.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RunDirError, WriteError
from .files import CHECKPOINT, RUN_FILES

RUNS_ROOT = Path("runs")


def default_path(name: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<UTC timestamp>-<name>."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{name}"


LOCK_FILE = ".lock"  # held (flock) for a run's life; holds the PID of the run


@contextmanager
def run_directory(
    out: Path | None, name: str, *, force: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Create (or reopen, with ``resume``) a run directory and hold its lock while in use.

    An existing non-empty directory is refused unless ``force`` (its run files are removed) or
    ``resume`` (it must hold a checkpoint). The directory is locked (an advisory ``flock`` on
    ``.lock``) before anything in it is checked or changed, so a second run on the same
    directory is refused with one line naming the PID of the run that holds it.
    """
    path = Path(out) if out is not None else default_path(name)
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out DIR naming the run to continue")
        if not path.is_dir():
            raise RunDirError(f"cannot resume {path}: no checkpoint.pt there")
    elif path.exists() and not path.is_dir():
        raise RunDirError(f"output path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create output directory {path}: {e.strerror}") from None
    with _locked(path):
        if resume or force:  # temporary files of writes a killed run left behind
            for stale in path.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        if resume and not (path / CHECKPOINT).is_file():
            raise RunDirError(f"cannot resume {path}: no checkpoint.pt there")
        if not resume and any(p.name != LOCK_FILE for p in path.iterdir()):
            if not force:
                raise RunDirError(
                    f"output directory {path} exists and is not empty; "
                    "use --force to overwrite or --resume to continue it"
                )
            for f in RUN_FILES:
                (path / f).unlink(missing_ok=True)
        yield path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(f"cannot lock {path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(
                f"{path} is in use by another ctsp run (PID {holder}); wait for it to end or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


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
    """``torch.save`` atomically. Serialized in memory first, then written with a plain file
    write, so that a full disk is reported as the OS error it is (torch's own writer turns
    it into an opaque "unexpected pos" message)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
