"""Image-classification datasets for ctsp: lookup, download, verification and loading.

Datasets (``DATASET_NAMES``)
----------------------------
``digits``
    scikit-learn's bundled ``load_digits`` (1797 images, 1x8x8, values 0..16 scaled to [0, 1]).
    Needs no files. The train/test split is fixed (stratified, 20 % test, seed
    ``DIGITS_SPLIT_SEED``) and does not depend on the ``seed`` argument of :func:`load`.
``fashion-mnist``, ``mnist``, ``kmnist``
    The four standard gzip IDX files ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``
    (images 1x28x28, labels 0..9). IDX: a 4-byte big-endian magic number ``0x000008NN``
    (``0x08`` = unsigned bytes, ``NN`` = number of dimensions: 3 for images, 1 for labels),
    one big-endian uint32 per dimension, then the row-major uint8 payload.
``cifar10``
    The CIFAR-10 "python version": pickled batches ``data_batch_1`` .. ``data_batch_5`` and
    ``test_batch`` (each a dict with ``b"data"``, an (N, 3072) uint8 array in channel-major
    order, and ``b"labels"``), 3x32x32. Either extracted (a ``cifar-10-batches-py/`` folder, or
    the batches themselves) or as the ``cifar-10-python.tar.gz`` archive, which is extracted
    (only the batch folder's regular files; no path leaves the target) into the cache.

Lookup order
------------
The first directory that holds all of a dataset's files wins:

1. the ``data_dir`` argument (the CLI's ``--data-dir``): ``data_dir/<name>/``, then ``data_dir/``;
2. ``$CTSP_DATA``: ``$CTSP_DATA/<name>/``, then ``$CTSP_DATA/``;
3. the cache: ``cache_dir()/<name>``, i.e. ``${XDG_CACHE_HOME:-~/.cache}/ctsp/<name>``;
4. the system directories ``SYSTEM_DATA_ROOTS``: ``/usr/share/datasets/<name>`` (where the Debian
   package ``dataset-fashion-mnist`` installs Fashion-MNIST).

If none does and ``download`` is true, the files are downloaded from the dataset's official
location (``DOWNLOAD_URLS``; ``$CTSP_DATA_URL`` replaces the base URL, files are fetched from
``$CTSP_DATA_URL/<filename>``) into the cache. Each file goes to a temporary file beside its
target and is checked against the recorded checksums (``CHECKSUMS``); only when every file of
the dataset has arrived and verified are they moved into place with ``os.replace``, so a failed
download leaves nothing behind.

Checksums
---------
``CHECKSUMS[name][filename]`` is a tuple of accepted digests written ``"<algorithm>:<hex>"``
(a bare hex string means sha256); a file verifies when it matches any of them. Downloads are
always verified; :func:`check` verifies files found locally; :func:`load` relies on the gzip
CRC and a full parse for local files.

Every problem raises :class:`ctsp.errors.DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import http.client
import logging
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ctsp.errors import DataError

__all__ = [
    "CHECKSUMS",
    "DATASET_NAMES",
    "DOWNLOAD_URLS",
    "SYSTEM_DATA_ROOTS",
    "Dataset",
    "cache_dir",
    "check",
    "describe",
    "load",
    "locate",
    "read_idx",
]

log = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "kmnist", "cifar10")
"""Every name :func:`load` accepts."""

NUM_CLASSES = 10
"""All five datasets have ten classes, labelled 0..9."""

IDX_DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "kmnist")
IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IDX_FILES: tuple[str, ...] = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_BATCHES: tuple[str, ...] = (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)
_CIFAR_EXTRA_FILES: tuple[str, ...] = ("batches.meta", "readme.html")

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240607
"""Fixed seed of the digits train/test split (independent of ``load(seed=...)``)."""

SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
"""System-wide roots searched last, as ``<root>/<name>`` (tests monkeypatch this)."""

DOWNLOAD_URLS: dict[str, str] = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz",
}
"""Official base URLs; a file is fetched from ``f"{base}/{filename}"``."""

DOWNLOAD_URL_ENV = "CTSP_DATA_URL"
DATA_ENV = "CTSP_DATA"
DOWNLOAD_TIMEOUT_S = 60.0

APT_PACKAGES: dict[str, str] = {"fashion-mnist": "dataset-fashion-mnist"}
"""Debian packages that install a dataset under ``/usr/share/datasets/<name>``."""

CHECKSUMS: dict[str, dict[str, str | tuple[str, ...]]] = {
    # Fashion-MNIST. First: sha256 of the upstream files (Zalando's S3 bucket; the sums recorded
    # by torchvision, matching the md5s Zalando's README publishes, e.g. 8d4fb7e6... for
    # train-images). Second: sha256 of the files that the Debian package dataset-fashion-mnist
    # (0.0~git20200523.55506a9-1) installs in /usr/share/datasets/fashion-mnist, computed from
    # those files. Debian re-compressed them (gzip header without the file name, a 2020
    # timestamp), so the .gz bytes differ; the decompressed IDX data is identical (its sha256,
    # e.g. c59f468a... for train-images, is the published one of the upstream data).
    "fashion-mnist": {
        IDX_TRAIN_IMAGES: (
            "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        IDX_TRAIN_LABELS: (
            "sha256:a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "sha256:0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        IDX_TEST_IMAGES: (
            "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        IDX_TEST_LABELS: (
            "sha256:67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "sha256:8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    },
    # MNIST: sha256 of the original files (yann.lecun.com, mirrored byte for byte at
    # ossci-datasets), as recorded by torchvision's dataset definitions.
    "mnist": {
        IDX_TRAIN_IMAGES: (
            "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        IDX_TRAIN_LABELS: (
            "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        IDX_TEST_IMAGES: (
            "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        IDX_TEST_LABELS: (
            "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    # Kuzushiji-MNIST (ROIS-DS CODH): sha256 as recorded by torchvision's dataset definitions.
    "kmnist": {
        IDX_TRAIN_IMAGES: (
            "sha256:51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        ),
        IDX_TRAIN_LABELS: (
            "sha256:e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        ),
        IDX_TEST_IMAGES: (
            "sha256:edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        ),
        IDX_TEST_LABELS: (
            "sha256:20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        ),
    },
    # CIFAR-10: the archive's sha256 is the one Keras and torchvision record (its md5,
    # c58f30108f718f92721af3b95e74349a, is the one published on the CIFAR page). For the
    # extracted batch files only md5 sums are published (torchvision's CIFAR10 class), so those
    # are recorded and verified with md5.
    "cifar10": {
        CIFAR_ARCHIVE: ("sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",),
        "data_batch_1": ("md5:c99cafc152244af753f735de768cd75f",),
        "data_batch_2": ("md5:d4bba439e000b95fd0a9bffe97cbabec",),
        "data_batch_3": ("md5:54ebc095f3ab1f0389bbae665268c751",),
        "data_batch_4": ("md5:634d18415352ddfa80567beed471001a",),
        "data_batch_5": ("md5:482c414d41f54cd18b22e5b47cb7c3cb",),
        CIFAR_TEST_BATCH: ("md5:40351d587109b95175f43aff81a1287e",),
    },
}
"""Accepted digests per dataset and file name (tests monkeypatch entries)."""


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: float32 images in [0, 1] and int64 labels, as torch tensors.

    Shapes: ``train_x`` (N_train, C, H, W), ``train_y`` (N_train,); ``val_x`` (N_val, C, H, W),
    ``val_y`` (N_val,), with N_val = 0 when no validation split was asked for; ``test_x``
    (N_test, C, H, W), ``test_y`` (N_test,). Labels lie in ``0 .. classes - 1``.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    classes: int = NUM_CLASSES

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def n_features(self) -> int:
        """C * H * W, the length of a flattened image."""
        return math.prod(self.image_shape)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"Dataset(name={self.name!r}, train={self.train_x.shape[0]}, "
            f"val={self.val_x.shape[0]}, test={self.test_x.shape[0]}, "
            f"image_shape=({c}, {h}, {w}), classes={self.classes})"
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
    """One short human-readable status line per dataset, as ``(name, status)`` pairs."""
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


def check(name: str, data_dir: str | Path | None = None, download: bool = False) -> str:
    """Verify a dataset's files and return a one-line summary.

    Checks every file against the recorded checksums (where recorded), then parses everything
    and checks shapes, counts and label ranges. Returns e.g. ``"fashion-mnist: ok
    (/usr/share/datasets/fashion-mnist): train 60000, test 10000, 1x28x28, 10 classes"``.
    With ``download`` true a missing dataset is downloaded first. Raises DataError.
    """
    _check_name(name)
    if name == "digits":
        arrays = _load_digits_arrays()
        where_text = "embedded, scikit-learn"
    else:
        where = _find_or_download(name, data_dir, download)
        where_text = str(where)
        if name == "cifar10":
            batch_dir = _cifar_batch_dir(where)
            if batch_dir is None:
                _verify_file(where / CIFAR_ARCHIVE, name, CIFAR_ARCHIVE)
                batch_dir = _extract_cifar(where / CIFAR_ARCHIVE, cache_dir() / name)
            for batch in CIFAR_BATCHES:
                _verify_file(batch_dir / batch, name, batch)
            arrays = _read_cifar_dir(batch_dir)
        else:
            for filename in IDX_FILES:
                _verify_file(where / filename, name, filename)
            arrays = _read_idx_dir(where)
    train_x, train_y, test_x, test_y = arrays
    present = np.union1d(np.unique(train_y), np.unique(test_y))
    c, h, w = train_x.shape[1:]
    return (
        f"{name}: ok ({where_text}): train {train_x.shape[0]}, test {test_x.shape[0]}, "
        f"{c}x{h}x{w}, {present.size} classes"
    )


def load(
    name: str,
    *,
    data_dir: str | Path | None = None,
    validation: int = 0,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load dataset ``name`` as float32 images in [0, 1] (N, C, H, W) and int64 labels (N,).

    ``validation`` training examples (chosen by a random permutation seeded with ``seed``;
    the same for the same seed) are moved to ``val_x``/``val_y``; both splits keep the
    original order. The test split is always the dataset's own. Files are looked up as the
    module docstring describes and downloaded into the cache when missing and ``download``.
    Raises DataError for an unknown name, missing or corrupt data, or a bad ``validation``.
    """
    _check_name(name)
    if isinstance(validation, bool) or not isinstance(validation, (int, np.integer)):
        raise DataError(f"validation size must be an integer, got {validation!r}")
    if validation < 0:
        raise DataError(f"validation size must be >= 0, got {validation}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"validation seed must be a non-negative integer, got {seed!r}")

    if name == "digits":
        arrays = _load_digits_arrays()
    else:
        where = _find_or_download(name, data_dir, download)
        if name == "cifar10":
            arrays = _read_cifar_dir(_cifar_batches_for(where))
        else:
            arrays = _read_idx_dir(where)
    train_x, train_y, test_x, test_y = arrays

    n_train = train_x.shape[0]
    if validation >= n_train:
        raise DataError(
            f"validation size {validation} is too large for {name}: it must be less than "
            f"the {n_train} training examples"
        )
    val_idx, train_idx = _validation_indices(n_train, int(validation), int(seed))
    tx, ty = _to_tensors(train_x, train_y)
    if validation:
        vx, vy = tx[val_idx], ty[val_idx]
        tx, ty = tx[train_idx], ty[train_idx]
    else:
        vx, vy = tx[:0], ty[:0]
    test_tx, test_ty = _to_tensors(test_x, test_y)
    return Dataset(
        name=name,
        train_x=tx,
        train_y=ty,
        test_x=test_tx,
        test_y=test_ty,
        val_x=vx,
        val_y=vy,
        classes=NUM_CLASSES,
    )


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when its name ends in ``.gz``).

    Returns a writable uint8 array with the shape in the header, e.g. (N, 28, 28) for images
    or (N,) for labels. With ``ndim`` the magic number must be ``0x00000800 | ndim``
    (``0x00000803`` images, ``0x00000801`` labels). Raises DataError, naming the file, for a
    missing, truncated or corrupt file, a wrong magic number, or a payload whose size does not
    match the header.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is truncated or corrupt: not a valid gzip file ({_one_line(exc)}); "
            "delete it and get it again"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None

    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    dims_count = raw[3]
    if ndim is not None:
        bad = magic != (0x800 | ndim)
        kind = {1: "labels", 3: "images"}.get(ndim, f"{ndim}-d unsigned-byte")
        expected = f"0x{0x800 | ndim:08x} for an IDX {kind} file"
    else:
        bad = raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or dims_count == 0
        expected = "0x000008NN for an unsigned-byte IDX file"
    if bad:
        raise DataError(f"wrong magic number 0x{magic:08x} in {path}: expected {expected}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise DataError(f"{path} ends inside its IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{dims_count}I", raw[4:header])
    expected_bytes = math.prod(dims)
    got = len(raw) - header
    shape_text = "x".join(str(d) for d in dims)
    if got < expected_bytes:
        raise DataError(
            f"IDX payload too short in {path}: the header says {shape_text} = "
            f"{expected_bytes} bytes, the file has {got}"
        )
    if got > expected_bytes:
        raise DataError(
            f"IDX payload too long in {path}: the header says {shape_text} = "
            f"{expected_bytes} bytes, the file has {got}"
        )
    return (
        np.frombuffer(raw, dtype=np.uint8, count=expected_bytes, offset=header).reshape(dims).copy()
    )


# --------------------------------------------------------------------------------------------
# Lookup and download
# --------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")


def _candidates(name: str, data_dir: str | Path | None) -> list[Path]:
    """The directories searched for ``name``, in order (without duplicates)."""
    dirs: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        dirs += [root / name, root]
    env = os.environ.get(DATA_ENV, "")
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


def _cifar_batch_dir(directory: Path) -> Path | None:
    """The folder under ``directory`` that holds all extracted CIFAR-10 batches, if any."""
    for d in (directory / CIFAR_FOLDER, directory):
        if all((d / b).is_file() for b in CIFAR_BATCHES):
            return d
    return None


def _base_url(name: str) -> str:
    override = os.environ.get(DOWNLOAD_URL_ENV, "")
    return (override or DOWNLOAD_URLS[name]).rstrip("/")


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
    return DataError(
        f"{name} data not found; looked in {looked}{note}; to get it: {_how_to_get(name)}"
    )


def _find_or_download(name: str, data_dir: str | Path | None, download: bool) -> Path:
    where = locate(name, data_dir)
    if where is not None:
        return where
    if not download:
        raise _not_found(name, data_dir)
    return _download(name, data_dir)


def _accepted(name: str, filename: str) -> tuple[tuple[str, str], ...]:
    """The recorded digests of ``filename`` as (algorithm, lowercase hex) pairs."""
    entry = CHECKSUMS.get(name, {}).get(filename)
    if not entry:
        return ()
    items = (entry,) if isinstance(entry, str) else tuple(entry)
    pairs = []
    for item in items:
        algo, sep, digest = item.partition(":")
        if not sep:
            algo, digest = "sha256", item
        pairs.append((algo.strip().lower(), digest.strip().lower()))
    return tuple(pairs)


def _hashers(accepted: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {algo: hashlib.new(algo) for algo in {a for a, _ in accepted}}


def _mismatch_text(digests: dict[str, str], accepted: Sequence[tuple[str, str]]) -> str | None:
    """None when a digest matches an accepted one, else a description of the mismatch."""
    if any(digests[a] == want for a, want in accepted):
        return None
    algo, want = accepted[0]
    more = f" (or {len(accepted) - 1} other recorded sums)" if len(accepted) > 1 else ""
    return f"{algo} {digests[algo]} does not match the recorded {want}{more}"


def _verify_file(path: Path, name: str, filename: str) -> None:
    """Check ``path`` against the digests recorded for ``filename``; no-op if none are."""
    accepted = _accepted(name, filename)
    if not accepted:
        return
    hashers = _hashers(accepted)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                for h in hashers.values():
                    h.update(chunk)
    except FileNotFoundError:
        raise DataError(f"{name}: file missing: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None
    problem = _mismatch_text({a: h.hexdigest() for a, h in hashers.items()}, accepted)
    if problem:
        raise DataError(
            f"checksum mismatch for {path}: {problem}; the file is damaged or not the official "
            f"one: delete it and get it again ({_base_url(name)}/{filename})"
        )


def _download(name: str, data_dir: str | Path | None) -> Path:
    """Download ``name``'s files into ``cache_dir()/name`` (all verified, or none kept)."""
    dest = cache_dir() / name
    looked = ", ".join(str(d) for d in _candidates(name, data_dir))
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the download cache {dest}: {exc.strerror or _one_line(exc)}; "
            f"to get {name} otherwise: {_how_to_get(name)}"
        ) from None
    base = _base_url(name)
    fetched: list[tuple[Path, Path]] = []  # (temporary file, target)
    try:
        for filename in _required_files(name):
            target = dest / filename
            accepted = _accepted(name, filename)
            if not accepted:
                raise DataError(
                    f"no recorded checksum for {name} file {filename}; refusing to download "
                    f"it unverified; to get {name}: {_how_to_get(name)}"
                )
            if target.is_file():
                try:
                    _verify_file(target, name, filename)
                    continue  # a verified copy from an earlier download
                except DataError:
                    pass  # damaged: download it again
            url = f"{base}/{filename}"
            fetched.append((_fetch(url, dest, filename, name, accepted, looked), target))
        for tmp, target in fetched:
            os.replace(tmp, target)
        fetched = []
    except BaseException:
        for tmp, _ in fetched:
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if still empty
        raise
    if name == "cifar10":
        _extract_cifar(dest / CIFAR_ARCHIVE, dest)
    return dest


def _fetch(
    url: str,
    dest: Path,
    filename: str,
    name: str,
    accepted: Sequence[tuple[str, str]],
    looked: str,
) -> Path:
    """Download ``url`` to a temporary file in ``dest``, verify it, and return its path.

    ``looked`` (the directories searched) only goes into error messages.
    """
    log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    hashers = _hashers(accepted)
    ok = False
    try:
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
        except urllib.error.HTTPError as exc:
            exc.close()  # the error carries the open response
            reason = f"HTTP {exc.code} {exc.reason}"
            raise DataError(_download_failed(name, url, reason, looked)) from None
        except urllib.error.URLError as exc:
            raise DataError(_download_failed(name, url, _one_line(exc.reason), looked)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DataError(_download_failed(name, url, _one_line(exc), looked)) from None
        problem = _mismatch_text({a: h.hexdigest() for a, h in hashers.items()}, accepted)
        if problem:
            raise DataError(
                f"checksum mismatch for {filename} downloaded from {url}: {problem}; "
                f"the download was discarded; to get {name} otherwise: {_how_to_get(name)}"
            )
        ok = True
        return tmp
    finally:
        if not ok:
            tmp.unlink(missing_ok=True)


def _download_failed(name: str, url: str, reason: str, looked: str) -> str:
    return (
        f"{name} data not found (looked in {looked}) and the download of {url} failed "
        f"({reason}); to get it otherwise: {_how_to_get(name)}"
    )


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(train_x uint8 or float (N, C, H, W), train_y int64 (N,), test_x, test_y)."""


def _read_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from two IDX files."""
    x = read_idx(images, ndim=3)
    y = read_idx(labels, ndim=1)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"image/label count mismatch: {images} has {x.shape[0]} images but {labels} "
            f"has {y.shape[0]} labels"
        )
    _check_labels(y, labels)
    return x[:, None, :, :], y.astype(np.int64)


def _check_labels(y: np.ndarray, source: Path) -> None:
    if y.size and int(y.max()) >= NUM_CLASSES:
        raise DataError(f"label {int(y.max())} in {source} is outside 0..{NUM_CLASSES - 1}")


def _read_idx_dir(directory: Path) -> _Arrays:
    train_x, train_y = _read_idx_pair(directory / IDX_TRAIN_IMAGES, directory / IDX_TRAIN_LABELS)
    test_x, test_y = _read_idx_pair(directory / IDX_TEST_IMAGES, directory / IDX_TEST_LABELS)
    if train_x.shape[0] == 0:
        raise DataError(f"{directory / IDX_TRAIN_IMAGES} holds no images")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"image size mismatch: {directory / IDX_TRAIN_IMAGES} has "
            f"{'x'.join(map(str, train_x.shape[2:]))} images but {directory / IDX_TEST_IMAGES} "
            f"has {'x'.join(map(str, test_x.shape[2:]))}"
        )
    return train_x, train_y, test_x, test_y


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 batches: only the numpy globals an array needs are allowed."""

    _reconstruct = np.empty(0).__reduce__()[0]
    _allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one CIFAR-10 batch file."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch file missing: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"corrupt CIFAR-10 batch {path}: cannot unpickle it ({_one_line(exc)})"
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"corrupt CIFAR-10 batch {path}: expected a dict with data and labels")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"corrupt CIFAR-10 batch {path}: data is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"corrupt CIFAR-10 batch {path}: rows have {data.shape[1]} values, expected 3072"
        )
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"corrupt CIFAR-10 batch {path}: labels are not integers") from None
    if y.shape[0] != data.shape[0]:
        raise DataError(
            f"corrupt CIFAR-10 batch {path}: {data.shape[0]} images but {y.shape[0]} labels"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise DataError(f"corrupt CIFAR-10 batch {path}: labels outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar_dir(batch_dir: Path) -> _Arrays:
    parts = [_read_cifar_batch(batch_dir / b) for b in CIFAR_TRAIN_BATCHES]
    test_x, test_y = _read_cifar_batch(batch_dir / CIFAR_TEST_BATCH)
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    return train_x, train_y, test_x, test_y


def _cifar_batches_for(where: Path) -> Path:
    """The extracted batch folder for a located CIFAR-10 directory (extracting if needed)."""
    batch_dir = _cifar_batch_dir(where)
    if batch_dir is not None:
        return batch_dir
    cached = _cifar_batch_dir(cache_dir() / "cifar10")
    if cached is not None:
        return cached
    archive = where / CIFAR_ARCHIVE
    _verify_file(archive, "cifar10", CIFAR_ARCHIVE)
    return _extract_cifar(archive, cache_dir() / "cifar10")


def _extract_cifar(archive: Path, dest_root: Path) -> Path:
    """Extract the batch files of ``archive`` into ``dest_root/cifar-10-batches-py``.

    Only regular files directly inside ``cifar-10-batches-py/`` are written (links, devices
    and anything else are skipped); a member whose path is absolute or climbs with ``..`` makes
    the whole archive refused. Files go to a temporary folder that replaces the target.
    """
    target = dest_root / CIFAR_FOLDER
    wanted = {f"{CIFAR_FOLDER}/{f}" for f in (*CIFAR_BATCHES, *_CIFAR_EXTRA_FILES)}
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=dest_root))
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {dest_root}: {_one_line(exc)}") from None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                member_path = PurePosixPath(member.name)
                if member_path.is_absolute() or ".." in member_path.parts or "\\" in member.name:
                    raise DataError(
                        f"unsafe path {member.name!r} in {archive}; refusing to extract"
                    )
                if not member.isfile() or member_path.as_posix() not in wanted:
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, open(tmp / member_path.name, "wb") as out:
                    shutil.copyfileobj(source, out)
        missing = [b for b in CIFAR_BATCHES if not (tmp / b).is_file()]
        if missing:
            raise DataError(f"{archive} lacks {CIFAR_FOLDER}/{', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{archive} is truncated or corrupt: {_one_line(exc)}") from None
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {dest_root}: {_one_line(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_digits_arrays() -> _Arrays:
    """scikit-learn's digits as float (N, 1, 8, 8) in [0, 1] with the fixed train/test split."""
    from sklearn.datasets import load_digits

    try:
        digits = load_digits()
    except OSError as exc:
        raise DataError(f"cannot read scikit-learn's embedded digits data: {exc}") from None
    x = (np.asarray(digits.images, dtype=np.float32) / np.float32(16.0))[:, None, :, :]
    y = np.asarray(digits.target, dtype=np.int64)
    train_idx, test_idx = _digits_split(y)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _digits_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: sorted (train indices, test indices), 20 % of each class test."""
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_parts = []
    for c in range(NUM_CLASSES):
        members = np.flatnonzero(y == c)
        n_test = int(round(members.size * DIGITS_TEST_FRACTION))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.setdiff1d(np.arange(y.size), test_idx)
    return train_idx, test_idx


def _validation_indices(n: int, validation: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (validation indices, remaining training indices) from a permutation seeded by seed."""
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:validation])
    train_idx = np.sort(perm[validation:])
    return torch.from_numpy(val_idx), torch.from_numpy(train_idx)


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, C, H, W) in [0, 1] (uint8 is divided by 255) and int64 (N,) tensors."""
    if x.dtype == np.uint8:
        xf = x.astype(np.float32)
        xf /= np.float32(255.0)
    else:
        xf = np.ascontiguousarray(x, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(xf)), torch.from_numpy(
        np.ascontiguousarray(y, dtype=np.int64)
    )
