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
    out: Path | str | None, name: str, *, force: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Create (or reopen, with ``resume``) a run directory and hold its lock while in use.

    An existing non-empty directory is refused unless ``force`` (its run files are removed) or
    ``resume`` (it must hold a checkpoint); so is an empty ``out`` (it would be the current
    directory, among the user's files). The directory is locked (an advisory ``flock`` on
    ``.lock``) before anything in it is checked or changed, so a second run on the same
    directory is refused with one line naming the PID of the run that holds it. A directory
    this call created is removed again when the block fails with nothing saved in it.
    """
    out = out_path(out)
    path = out if out is not None else default_path(name)
    try:
        created = _make(path, out, resume)
    except OSError as e:
        raise RunDirError(f"cannot use {path} as the run directory: {e.strerror or e}") from None
    try:
        with _locked(path):
            _clear(path, force=force, resume=resume)
            yield path
    except BaseException:
        _remove_empty(path, created)
        raise


def out_path(out: Path | str | None) -> Path | None:
    """``out`` as a Path (None stays None); an empty ``out`` is refused: it would be the
    current directory, and the run's files would go among the user's."""
    if out is not None and str(out) == "":
        raise RunDirError("--out (out=) names no directory: give the run directory's path")
    return None if out is None else Path(out)


def _make(path: Path, out: Path | str | None, resume: bool) -> list[Path]:
    """Check ``path`` for its use and create it with its parents; the directories this created,
    ``path`` first (OS errors raised)."""
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out DIR naming the run to continue")
        if not path.is_dir():
            raise RunDirError(f"cannot resume {path}: no checkpoint.pt there")
    elif path.exists() and not path.is_dir():
        raise RunDirError(f"output path {path} exists and is not a directory")
    created = [d for d in (path, *path.parents) if not d.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(path: Path, created: list[Path]) -> None:
    """Remove the directories of ``created`` (``path`` first) while they are empty."""
    for d in created:
        if any(d.iterdir()):
            return
        d.rmdir()


def _clear(path: Path, *, force: bool, resume: bool) -> None:
    """In a locked run directory: remove what a killed run left (``force``, ``resume``), check
    that a resume has a checkpoint, refuse a run directory in use unless ``force``."""
    if resume or force:  # temporary files of writes a killed run left behind
        for stale in path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    if resume and not (path / CHECKPOINT).is_file():
        raise RunDirError(f"cannot resume {path}: no checkpoint.pt there")
    if not resume and any(p.name != LOCK_FILE for p in path.iterdir()):
        if not force:
            raise RunDirError(
                f"output directory {path} exists and is not empty; overwrite it with --force "
                "(force=True) or continue it with --resume (resume=True)"
            )
        for f in RUN_FILES:
            (path / f).unlink(missing_ok=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``path/.lock`` (flock, with this process's PID in it) for the block, then remove
    it. A lock file that cannot be written (a full disk) is removed at once."""
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            lock.unlink(missing_ok=True)
            raise WriteError(f"cannot write {lock}: {e.strerror}; nothing was saved") from None
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
