"""File formats of the stored datasets: gzip IDX files and CIFAR-10's pickled batches.

IDX (``fashion-mnist``, ``mnist``, ``kmnist``): a 4-byte big-endian magic number ``0x000008NN``
(``0x08`` = unsigned bytes, ``NN`` = number of dimensions: 3 for images, 1 for labels), one
big-endian uint32 per dimension, then the row-major uint8 payload; see :func:`read_idx`.

CIFAR-10, the "python version": pickled batches ``data_batch_1`` .. ``data_batch_5`` and
``test_batch`` (each a dict with ``b"data"``, an (N, 3072) uint8 array in channel-major order,
and ``b"labels"``), unpickled with only the numpy globals an array needs. The
``cifar-10-python.tar.gz`` archive is extracted safely: only the batch folder's regular files,
and no path leaves the target.

The readers know nothing about where files are looked up (:mod:`ctsp.data.lookup`). Every
problem raises :class:`ctsp.errors.DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ctsp.errors import DataError

NUM_CLASSES = 10
"""All five datasets have ten classes, labelled 0..9."""

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

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(train_x uint8 or float (N, C, H, W), train_y int64 (N,), test_x, test_y)."""


def _one_line(exc: object) -> str:
    """``exc`` as one line of text for an error message (its type name when empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when its name ends in ``.gz``).

    Returns a writable uint8 array with the shape in the header, e.g. (N, 28, 28) for images
    or (N,) for labels. With ``ndim`` the magic number must be ``0x00000800 | ndim``
    (``0x00000803`` images, ``0x00000801`` labels). Raises DataError, naming the file, for a
    missing, truncated or corrupt file, a wrong magic number, or a payload whose size does not
    match the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    header = _check_idx_header(raw, path, ndim)
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    expected_bytes = math.prod(dims)
    got = len(raw) - header
    if got != expected_bytes:
        raise DataError(
            f"IDX payload too {'short' if got < expected_bytes else 'long'} in {path}: the "
            f"header says {'x'.join(str(d) for d in dims)} = {expected_bytes} bytes, the file "
            f"has {got}"
        )
    return (
        np.frombuffer(raw, dtype=np.uint8, count=expected_bytes, offset=header).reshape(dims).copy()
    )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz`` (one-line DataErrors)."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is truncated or corrupt: not a valid gzip file ({_one_line(exc)}); "
            "delete it and get it again"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None


def _check_idx_header(raw: bytes, path: Path, ndim: int | None) -> int:
    """Check an IDX file's magic number (``0x00000800 | ndim`` when ``ndim`` is given) and
    that its header is whole; the header's length in bytes."""
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if ndim is not None:
        bad = magic != (0x800 | ndim)
        kind = {1: "labels", 3: "images"}.get(ndim, f"{ndim}-d unsigned-byte")
        expected = f"0x{0x800 | ndim:08x} for an IDX {kind} file"
    else:
        bad = raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0
        expected = "0x000008NN for an unsigned-byte IDX file"
    if bad:
        raise DataError(f"wrong magic number 0x{magic:08x} in {path}: expected {expected}")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{path} ends inside its IDX header ({len(raw)} of {header} bytes)")
    return header


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


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


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
    batch = _unpickle_batch(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"corrupt CIFAR-10 batch {path}: expected a dict with data and labels")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"corrupt CIFAR-10 batch {path}: data is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"corrupt CIFAR-10 batch {path}: rows have {data.shape[1]} values, expected 3072"
        )
    return data.reshape(-1, 3, 32, 32), _cifar_labels(labels, data.shape[0], path)


def _unpickle_batch(path: Path):
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch file missing: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"corrupt CIFAR-10 batch {path}: cannot unpickle it ({_one_line(exc)})"
        ) from None


def _cifar_labels(labels, n: int, path: Path) -> np.ndarray:
    """A batch's labels as int64 (n,), each a class."""
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"corrupt CIFAR-10 batch {path}: labels are not integers") from None
    if y.shape[0] != n:
        raise DataError(f"corrupt CIFAR-10 batch {path}: {n} images but {y.shape[0]} labels")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise DataError(f"corrupt CIFAR-10 batch {path}: labels outside 0..{NUM_CLASSES - 1}")
    return y


def _read_cifar_dir(batch_dir: Path) -> _Arrays:
    parts = [_read_cifar_batch(batch_dir / b) for b in CIFAR_TRAIN_BATCHES]
    test_x, test_y = _read_cifar_batch(batch_dir / CIFAR_TEST_BATCH)
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    return train_x, train_y, test_x, test_y


def _cifar_batch_dir(directory: Path) -> Path | None:
    """The folder under ``directory`` that holds all extracted CIFAR-10 batches, if any."""
    for d in (directory / CIFAR_FOLDER, directory):
        if all((d / b).is_file() for b in CIFAR_BATCHES):
            return d
    return None


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
            _extract_members(tar, archive, tmp, wanted)
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


def _extract_members(tar: tarfile.TarFile, archive: Path, tmp: Path, wanted: set[str]) -> None:
    """Copy the regular files of ``tar`` named in ``wanted`` into ``tmp``; refuse the archive
    if a member's path is absolute or climbs with ``..``."""
    for member in tar:
        member_path = PurePosixPath(member.name)
        if member_path.is_absolute() or ".." in member_path.parts or "\\" in member.name:
            raise DataError(f"unsafe path {member.name!r} in {archive}; refusing to extract")
        if not member.isfile() or member_path.as_posix() not in wanted:
            continue
        source = tar.extractfile(member)
        if source is None:
            continue
        with source, open(tmp / member_path.name, "wb") as out:
            shutil.copyfileobj(source, out)
