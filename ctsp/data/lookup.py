"""Where a dataset's files are: the dataset names, the lookup order and the download cache.

:func:`locate` searches the directories in the order the :mod:`ctsp.data` docstring gives;
:func:`describe` and the not-found messages tell a user how to get missing data: the official
download locations (``DOWNLOAD_URLS``, or ``$CTSP_DATA_URL``), the Debian packages
(``APT_PACKAGES``), ``--data-dir`` and ``$CTSP_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctsp.environment import read
from ctsp.errors import DataError

from .formats import CIFAR_ARCHIVE, CIFAR_BATCHES, CIFAR_FOLDER, IDX_FILES, _cifar_batch_dir

DATASET_NAMES: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "kmnist", "cifar10")
"""Every name :func:`load` accepts."""

SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
"""System-wide roots searched last, as ``<root>/<name>`` (tests monkeypatch it here)."""

DOWNLOAD_URLS: dict[str, str] = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz",
}
"""Official base URLs; a file is fetched from ``f"{base}/{filename}"``."""

DOWNLOAD_URL_ENV = "CTSP_DATA_URL"
DATA_ENV = "CTSP_DATA"

APT_PACKAGES: dict[str, str] = {"fashion-mnist": "dataset-fashion-mnist"}
"""Debian packages that install a dataset under ``/usr/share/datasets/<name>``."""


def cache_dir() -> Path:
    """The ctsp download cache: ``$XDG_CACHE_HOME/ctsp``, or ``~/.cache/ctsp`` (read each call)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "ctsp"


def locate(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first directory in the lookup order that holds ``name``'s files, or None.

    For ``digits`` (embedded, no files) this is always None. For ``cifar10`` the directory may
    hold the extracted batches or only the archive.
    """
    _check_name(name)
    if name == "digits":
        return None
    for directory in _candidates(name, data_dir):
        if _holds_dataset(name, directory):
            return directory
    return None


def describe(data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """One short human-readable status line per dataset, as ``(name, status)`` pairs; a
    ``data_dir`` that is not a directory is refused (it is the only place looked in)."""
    if given(data_dir) and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    rows: list[tuple[str, str]] = []
    for name in DATASET_NAMES:
        if name == "digits":
            rows.append((name, "embedded (scikit-learn), no files needed"))
            continue
        where = locate(name, data_dir)
        if where is not None:
            status = f"found in {where}"
            if name == "cifar10" and _cifar_batch_dir(where) is None:
                status += f" ({CIFAR_ARCHIVE}, extracted into the cache on first use)"
        elif given(data_dir):
            looked = ", ".join(str(d) for d in _candidates(name, data_dir))
            status = f"not in --data-dir {data_dir}; looked in {looked}"
        else:
            looked = ", ".join(str(d) for d in _candidates(name, data_dir))
            status = (
                f"not found; looked in {looked}; get it with `ctsp data check {name}` "
                f"(downloads from {_base_url(name)}/) or --data-dir"
            )
            if name in APT_PACKAGES:
                status += f" or `apt-get install {APT_PACKAGES[name]}`"
        rows.append((name, status))
    return rows


def given(data_dir: str | Path | None) -> bool:
    """Whether the user named a data directory (the only place then looked in)."""
    return data_dir is not None and str(data_dir) != ""


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")


def _candidates(name: str, data_dir: str | Path | None) -> list[Path]:
    """The directories searched for ``name``, in order (without duplicates): only
    ``data_dir/<name>`` and ``data_dir`` when a ``data_dir`` is given (never a fall-back to the
    other places), else ``$CTSP_DATA``, the cache and the system roots."""
    if given(data_dir):
        root = Path(data_dir).expanduser()
        return [root / name, root]
    dirs: list[Path] = []
    env = read(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        dirs += [root / name, root]
    dirs.append(cache_dir() / name)
    dirs += [Path(root) / name for root in SYSTEM_DATA_ROOTS]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _required_files(name: str) -> tuple[str, ...]:
    return (CIFAR_ARCHIVE,) if name == "cifar10" else IDX_FILES


def _holds_dataset(name: str, directory: Path) -> bool:
    if name == "cifar10":
        return _cifar_batch_dir(directory) is not None or (directory / CIFAR_ARCHIVE).is_file()
    return all((directory / f).is_file() for f in IDX_FILES)


def _base_url(name: str) -> str:
    return (read(DOWNLOAD_URL_ENV) or DOWNLOAD_URLS[name]).rstrip("/")


def _how_to_get(name: str) -> str:
    """The ways to get ``name``'s data, as one clause for error messages."""
    if name == "cifar10":
        files = f"{CIFAR_ARCHIVE} (or its extracted {CIFAR_FOLDER}/ folder)"
    else:
        files = "the four files " + ", ".join(IDX_FILES)
    ways = []
    if name in APT_PACKAGES:
        package = APT_PACKAGES[name]
        ways.append(f"install the Debian package {package} (apt-get install {package})")
    ways.append(f"download {files} from {_base_url(name)}/ into {cache_dir() / name}")
    ways.append(f"pass --data-dir DIR or set ${DATA_ENV}=DIR for a directory that holds them")
    return "; ".join(ways)


def _not_found(name: str, data_dir: str | Path | None) -> DataError:
    """The error for data not found in the lookup order (or not in the ``data_dir`` the user
    named, which is never left for the other places)."""
    candidates = _candidates(name, data_dir)
    partial = []  # directories that hold some of the files but not all
    for d in candidates:
        if name == "cifar10":
            folders, wanted = (d / CIFAR_FOLDER, d), CIFAR_BATCHES
        else:
            folders, wanted = (d,), IDX_FILES
        for folder in folders:
            missing = [f for f in wanted if not (folder / f).is_file()]
            if 0 < len(missing) < len(wanted):
                partial.append(f"{folder} lacks {', '.join(missing)}")
    looked = ", ".join(str(d) for d in candidates)
    note = f" ({'; '.join(partial)})" if partial else ""
    if given(data_dir):
        what = (
            f"{CIFAR_ARCHIVE} (or its extracted {CIFAR_FOLDER}/ folder)"
            if name == "cifar10"
            else "the four files " + ", ".join(IDX_FILES)
        )
        return DataError(
            f"--data-dir {data_dir} does not hold the {name} data; looked in {looked}{note}; "
            f"it needs {what} (without --data-dir the usual places are searched)"
        )
    return DataError(
        f"{name} data not found; looked in {looked}{note}; to get it: {_how_to_get(name)}"
    )
