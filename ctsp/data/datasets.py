"""The dataset container and loading: :class:`Dataset`, :func:`load` and :func:`check`.

Also the embedded digits data (scikit-learn's, with a fixed stratified train/test split), the
seeded validation split and the conversion to torch tensors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ctsp.errors import DataError

from .download import _cifar_batches_for, _find_or_download, _verify_cached, _verify_file
from .formats import (
    CIFAR_ARCHIVE,
    CIFAR_BATCHES,
    IDX_FILES,
    NUM_CLASSES,
    _Arrays,
    _cifar_batch_dir,
    _extract_cifar,
    _read_cifar_dir,
    _read_idx_dir,
)
from .lookup import _check_name, cache_dir

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240607
"""Fixed seed of the digits train/test split (independent of ``load(seed=...)``)."""


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

    def hold_out(self, validation: float, seed: int) -> Dataset:
        """This dataset with ``validation`` training examples (a count, or below 1 a fraction
        of the training set: :func:`held_out`) moved to the validation set, chosen by a
        permutation seeded with ``seed`` (both sets keep their order); what :func:`load` does
        with its ``validation`` argument, for a subset too."""
        n = self.train_x.shape[0]
        validation = held_out(validation, n, self.name)
        if not validation:
            return self
        val, rest = _validation_indices(n, validation, seed)
        x, y = self.train_x, self.train_y
        return dataclasses.replace(
            self, train_x=x[rest], train_y=y[rest], val_x=x[val], val_y=y[val]
        )

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"Dataset(name={self.name!r}, train={self.train_x.shape[0]}, "
            f"val={self.val_x.shape[0]}, test={self.test_x.shape[0]}, "
            f"image_shape=({c}, {h}, {w}), classes={self.classes})"
        )


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
    validation: float = 0,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load dataset ``name`` as float32 images in [0, 1] (N, C, H, W) and int64 labels (N,).

    ``validation`` training examples (chosen by a random permutation seeded with ``seed``;
    the same for the same seed) are moved to ``val_x``/``val_y``; both splits keep the
    original order. The test split is always the dataset's own. Files are looked up as the
    :mod:`ctsp.data` docstring describes (a ``data_dir`` that does not hold them is an error)
    and downloaded into the cache when missing and ``download``; every file is verified against
    the recorded checksums before it is used (once: the cache remembers a verified file by
    size and mtime).
    Raises DataError for an unknown name, missing or corrupt data, or a bad ``validation``.
    """
    _check_name(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"validation seed must be a non-negative integer, got {seed!r}")

    if name == "digits":
        arrays = _load_digits_arrays()
    else:
        where = _find_or_download(name, data_dir, download)
        folder = _cifar_batches_for(where) if name == "cifar10" else where
        _verify_cached(name, folder, CIFAR_BATCHES if name == "cifar10" else IDX_FILES)
        arrays = _read_cifar_dir(folder) if name == "cifar10" else _read_idx_dir(folder)
    train_x, train_y, test_x, test_y = arrays

    tx, ty = _to_tensors(train_x, train_y)
    test_tx, test_ty = _to_tensors(test_x, test_y)
    data = Dataset(
        name=name,
        train_x=tx,
        train_y=ty,
        test_x=test_tx,
        test_y=test_ty,
        val_x=tx[:0],
        val_y=ty[:0],
        classes=NUM_CLASSES,
    )
    return data.hold_out(validation, int(seed))


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


def held_out(validation: float, n: int, name: str) -> int:
    """The number of the ``n`` training examples of dataset ``name`` that ``validation`` holds
    out: a whole count (``>= 1``), or a fraction of ``n`` (``0 < validation < 1``, rounded to
    the nearest count: 1/12 is 5,000 of 60,000 images and 120 of digits' 1,438); 0: none.
    Raises DataError for anything else, or for a split that leaves no example on either side."""
    number = isinstance(validation, (int, float, np.integer, np.floating))
    if isinstance(validation, bool) or not number or not validation >= 0:
        raise DataError(f"validation size must be a count >= 0 or a fraction, got {validation!r}")
    if validation >= 1 and validation != int(validation):
        raise DataError(
            f"validation size {validation} must be a whole count, or below 1 a fraction of the "
            "training set"
        )
    count = round(validation * n) if validation < 1 else int(validation)
    if validation and not 0 < count < n:
        raise DataError(
            f"validation size {validation} is too large for {name}: it must be less "
            f"than the {n} training examples" if count else
            f"validation size {validation} holds out no example of {name}'s {n} training examples"
        )  # fmt: skip
    return count


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
