"""Tests of ctsp.data: IDX/CIFAR readers, lookup order, downloads, checksums and errors.

Everything runs offline: small IDX and CIFAR-10 files are generated in tmp_path, downloads go
to a local HTTP server on 127.0.0.1, and the cache and system roots are redirected to tmp_path.
The real Fashion-MNIST tests read /usr/share/datasets/fashion-mnist (the Debian package
dataset-fashion-mnist, which CI installs); they are not skipped when it is missing.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from ctsp import data
from ctsp.errors import CtspError, DataError

DEFAULT_SYSTEM_ROOTS = data.SYSTEM_DATA_ROOTS
RECORDED_SUMS = {name: dict(sums) for name, sums in data.CHECKSUMS.items()}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLOSED_PORT_URL = "http://127.0.0.1:9"  # nothing listens there: a download fails at once


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, *, magic: int | None = None, dims=None) -> bytes:
    """The IDX encoding of a uint8 array (header from the array unless overridden)."""
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    magic = 0x800 | len(dims) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, **kwargs) -> Path:
    """Write ``array`` as a gzip IDX file (header + payload) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array, **kwargs), mtime=0))
    return path


def make_images(n: int, h: int = 4, w: int = 5, start: int = 0) -> np.ndarray:
    """n distinct uint8 images (N, H, W); image i starts with the value start + i."""
    rng = np.random.default_rng(n * 1000 + start)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    images[:, 0, 0] = (start + np.arange(n)) % 256
    return images


def make_idx_dataset(directory: Path, n_train: int = 12, n_test: int = 5, start: int = 0):
    """The four IDX gz files of a small MNIST-like dataset; returns the arrays written."""
    train_x, test_x = make_images(n_train, start=start), make_images(n_test, start=start + 100)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    test_y = ((np.arange(n_test) + 3) % 10).astype(np.uint8)
    write_idx(directory / data.IDX_TRAIN_IMAGES, train_x)
    write_idx(directory / data.IDX_TRAIN_LABELS, train_y)
    write_idx(directory / data.IDX_TEST_IMAGES, test_x)
    write_idx(directory / data.IDX_TEST_LABELS, test_y)
    return train_x, train_y, test_x, test_y


def digest(path: Path, algo: str = "sha256") -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def record_sums(monkeypatch, name: str, directory: Path, files, algo: str = "sha256") -> None:
    """Make ``CHECKSUMS[name]`` the sums of the given files in ``directory``."""
    sums = {f: (f"{algo}:{digest(directory / f, algo)}",) for f in files}
    monkeypatch.setitem(data.download.CHECKSUMS, name, sums)


def cifar_batch(n: int, start: int) -> dict:
    rng = np.random.default_rng(start)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    pixels[:, 0] = start + np.arange(n)
    return {
        b"batch_label": b"generated",
        b"labels": [int(v) for v in (start // 10 * 3 + np.arange(n)) % 10],
        b"data": pixels,
        b"filenames": [f"img{start + i}.png".encode() for i in range(n)],
    }


def make_cifar_batches(folder: Path, n: int = 3, n_test: int = 4) -> dict[str, dict]:
    """The six pickled CIFAR-10 batches (protocol 2, like the real ones) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {b: cifar_batch(n, 10 * i) for i, b in enumerate(data.CIFAR_TRAIN_BATCHES)}
    batches[data.CIFAR_TEST_BATCH] = cifar_batch(n_test, 200)
    for b, content in batches.items():
        (folder / b).write_bytes(pickle.dumps(content, protocol=2))
    return batches


def make_cifar_archive(path: Path, work: Path) -> dict[str, dict]:
    """A cifar-10-python.tar.gz at ``path`` holding generated batches."""
    batches = make_cifar_batches(work / data.CIFAR_FOLDER)
    (work / data.CIFAR_FOLDER / "batches.meta").write_bytes(pickle.dumps({}, protocol=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(work / data.CIFAR_FOLDER, arcname=data.CIFAR_FOLDER)
    return batches


def cifar_expected(batches: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    parts = [batches[b] for b in data.CIFAR_TRAIN_BATCHES]
    x = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([p[b"labels"] for p in parts])
    return x, y


def cifar_sums(monkeypatch, archive: Path | None, batch_dir: Path | None) -> None:
    sums: dict[str, tuple[str, ...]] = {}
    if archive is not None:
        sums[data.CIFAR_ARCHIVE] = (f"sha256:{digest(archive)}",)
    if batch_dir is not None:
        for b in data.CIFAR_BATCHES:
            sums[b] = (f"md5:{digest(batch_dir / b, 'md5')}",)
    monkeypatch.setitem(data.download.CHECKSUMS, "cifar10", sums)


@contextmanager
def data_error(match: str) -> Iterator[pytest.ExceptionInfo[DataError]]:
    """pytest.raises(DataError, match=...) that also checks the message is one line."""
    with pytest.raises(DataError, match=match) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, CtspError) and info.value.exit_code == 2


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Path:
    """Cache, home and system roots in tmp_path; no $CTSP_DATA; downloads fail unless set up."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("CTSP_DATA", raising=False)
    monkeypatch.setenv("CTSP_DATA_URL", CLOSED_PORT_URL)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    monkeypatch.setattr(data.lookup, "SYSTEM_DATA_ROOTS", (tmp_path / "system",))
    # the generated MNIST/KMNIST/CIFAR files have no recorded sums unless a test records them
    for name in ("mnist", "kmnist", "cifar10"):
        monkeypatch.setitem(data.download.CHECKSUMS, name, {})
    return tmp_path


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# The real Fashion-MNIST files (Debian package dataset-fashion-mnist)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion() -> data.Dataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CTSP_DATA", raising=False)
        mp.setenv("CTSP_DATA_URL", CLOSED_PORT_URL)
        mp.setenv("XDG_CACHE_HOME", "/nonexistent-ctsp-test-cache")
        mp.setattr(data.lookup, "SYSTEM_DATA_ROOTS", DEFAULT_SYSTEM_ROOTS)
        return data.load("fashion-mnist", download=False)


def test_default_system_root_is_usr_share_datasets():
    assert DEFAULT_SYSTEM_ROOTS == (Path("/usr/share/datasets"),)


def test_real_fashion_mnist_loads(fashion):
    assert fashion.name == "fashion-mnist"
    assert fashion.train_x.shape == (60000, 1, 28, 28)
    assert fashion.test_x.shape == (10000, 1, 28, 28)
    assert fashion.image_shape == (1, 28, 28) and fashion.n_features == 784
    assert fashion.train_x.dtype == torch.float32 and fashion.test_x.dtype == torch.float32
    assert fashion.train_y.dtype == torch.int64 and fashion.test_y.dtype == torch.int64
    assert fashion.train_y.shape == (60000,) and fashion.test_y.shape == (10000,)
    for x in (fashion.train_x, fashion.test_x):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(fashion.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(fashion.test_y), torch.full((10,), 1000))
    assert fashion.val_x.shape == (0, 1, 28, 28) and fashion.val_y.shape == (0,)
    assert fashion.classes == 10


def test_real_fashion_mnist_checksums_and_check(monkeypatch):
    monkeypatch.setattr(data.lookup, "SYSTEM_DATA_ROOTS", DEFAULT_SYSTEM_ROOTS)
    for filename in data.IDX_FILES:
        recorded = data.CHECKSUMS["fashion-mnist"][filename]
        assert f"sha256:{digest(FASHION_DIR / filename)}" in recorded
    assert data.locate("fashion-mnist") == FASHION_DIR
    assert data.check("fashion-mnist") == (
        f"fashion-mnist: ok ({FASHION_DIR}): train 60000, test 10000, 1x28x28, 10 classes"
    )
    assert ("fashion-mnist", f"found in {FASHION_DIR}") in data.describe()


def test_real_fashion_mnist_idx_headers():
    labels = data.read_idx(FASHION_DIR / data.IDX_TEST_LABELS, ndim=1)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 1000))


# --------------------------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------------------------


def test_read_idx_roundtrip(tmp_path):
    images = make_images(7, 3, 6)
    labels = np.arange(7, dtype=np.uint8)
    got_images = data.read_idx(write_idx(tmp_path / "i.gz", images))
    got_labels = data.read_idx(write_idx(tmp_path / "l.gz", labels), ndim=1)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 3, 6)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    assert got_images.flags.writeable
    plain = tmp_path / "plain-idx3-ubyte"
    plain.write_bytes(idx_bytes(images))
    assert np.array_equal(data.read_idx(plain, ndim=3), images)


def test_load_generated_idx_dataset(tmp_path):
    train_x, train_y, test_x, test_y = make_idx_dataset(tmp_path / "d" / "kmnist")
    ds = data.load("kmnist", data_dir=tmp_path / "d", download=False)
    assert ds.train_x.shape == (12, 1, 4, 5) and ds.test_x.shape == (5, 1, 4, 5)
    assert ds.image_shape == (1, 4, 5) and ds.n_features == 20
    assert torch.equal(ds.train_x, torch.from_numpy(train_x[:, None] / np.float32(255)))
    assert torch.equal(ds.train_y, torch.from_numpy(train_y.astype(np.int64)))
    assert torch.equal(ds.test_x, torch.from_numpy(test_x[:, None] / np.float32(255)))
    assert torch.equal(ds.test_y, torch.from_numpy(test_y.astype(np.int64)))
    assert "train=12" in repr(ds)


def test_missing_files_message_names_places_and_remedies(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit"
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("CTSP_DATA", str(tmp_path / "env"))
    with data_error(r"fashion-mnist data not found; looked in ") as info:
        data.load("fashion-mnist", download=False)
    message = str(info.value)
    with data_error(r"--data-dir .* does not hold the fashion-mnist data; looked in ") as info:
        data.load("fashion-mnist", data_dir=explicit, download=False)
    assert f"{explicit / 'fashion-mnist'}, {explicit};" in str(info.value)
    for place in (
        tmp_path / "env",
        tmp_path / "xdg-cache" / "ctsp" / "fashion-mnist",
        tmp_path / "system" / "fashion-mnist",
    ):
        assert str(place) in message
    assert "dataset-fashion-mnist" in message
    assert "--data-dir" in message and "$CTSP_DATA" in message
    assert CLOSED_PORT_URL in message  # the (overridden) download location
    with data_error(r"mnist data not found; .*--data-dir") as info:
        data.check("mnist")
    assert "dataset-fashion-mnist" not in str(info.value)


def test_partial_directory_is_reported(tmp_path):
    make_idx_dataset(tmp_path / "d")
    (tmp_path / "d" / data.IDX_TEST_LABELS).unlink()
    with data_error(rf"{re.escape(str(tmp_path / 'd'))} lacks t10k-labels-idx1-ubyte\.gz"):
        data.load("mnist", data_dir=tmp_path / "d", download=False)


def test_truncated_gz(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", make_images(50, 10, 10))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with data_error(rf"{re.escape(str(path))} is truncated or corrupt"):
        data.read_idx(path)


def test_corrupt_gz_random_bytes(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with data_error(rf"{re.escape(str(path))} is truncated or corrupt: not a valid gzip file"):
        data.read_idx(path)


def test_corrupt_gz_body(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", make_images(50, 10, 10))
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(40)
    path.write_bytes(bytes(raw))
    with data_error(rf"{re.escape(str(path))} is truncated or corrupt"):
        data.read_idx(path)


def test_wrong_magic_number(tmp_path):
    make_idx_dataset(tmp_path)
    images = tmp_path / data.IDX_TRAIN_IMAGES
    write_idx(images, np.zeros(12, np.uint8))  # a labels file where the images belong
    with data_error(
        rf"wrong magic number 0x00000801 in {re.escape(str(images))}: expected 0x00000803"
    ):
        data.load("mnist", data_dir=tmp_path, download=False)
    other = write_idx(tmp_path / "x.gz", np.zeros(3, np.uint8), magic=0x00000D01)
    with data_error(r"wrong magic number 0x00000d01 .*expected 0x00000801"):
        data.read_idx(other, ndim=1)
    with data_error(r"wrong magic number 0x00000d01 .*unsigned-byte"):
        data.read_idx(other)


def test_payload_too_short_and_too_long(tmp_path):
    short = write_idx(tmp_path / "short.gz", make_images(4), dims=(5, 4, 5))
    with data_error(rf"IDX payload too short in {re.escape(str(short))}: .*5x4x5 = 100 bytes"):
        data.read_idx(short)
    long = write_idx(tmp_path / "long.gz", make_images(4), dims=(3, 4, 5))
    with data_error(rf"IDX payload too long in {re.escape(str(long))}"):
        data.read_idx(long)
    stub = tmp_path / "stub.gz"
    stub.write_bytes(gzip.compress(struct.pack(">I", 0x803) + b"\0\0"))
    with data_error(r"ends inside its IDX header"):
        data.read_idx(stub)


def test_image_label_count_mismatch_names_both_files(tmp_path):
    make_idx_dataset(tmp_path)
    labels = write_idx(tmp_path / data.IDX_TRAIN_LABELS, np.zeros(11, np.uint8))
    images = tmp_path / data.IDX_TRAIN_IMAGES
    with data_error(
        rf"image/label count mismatch: {re.escape(str(images))} has 12 images but "
        rf"{re.escape(str(labels))} has 11 labels"
    ):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_label_out_of_range(tmp_path):
    make_idx_dataset(tmp_path)
    labels = write_idx(tmp_path / data.IDX_TEST_LABELS, np.array([1, 2, 10, 3, 4], np.uint8))
    with data_error(rf"label 10 in {re.escape(str(labels))} is outside 0\.\.9"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_train_test_image_size_mismatch(tmp_path):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / data.IDX_TEST_IMAGES, make_images(5, 6, 6))
    with data_error(r"image size mismatch: .*4x5 images but .*has 6x6"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_check_reports_local_checksum_mismatch(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "mnist")
    record_sums(monkeypatch, "mnist", tmp_path / "mnist", data.IDX_FILES)
    assert data.check("mnist", data_dir=tmp_path) == (
        f"mnist: ok ({tmp_path / 'mnist'}): train 12, test 5, 1x4x5, 10 classes"
    )
    changed = write_idx(tmp_path / "mnist" / data.IDX_TEST_IMAGES, make_images(5, start=7))
    with data_error(rf"checksum mismatch for {re.escape(str(changed))}: sha256 [0-9a-f]{{64}}"):
        data.check("mnist", data_dir=tmp_path)
    with data_error(rf"checksum mismatch for {re.escape(str(changed))}"):  # load verifies too
        data.load("mnist", data_dir=tmp_path, download=False)


def test_load_verifies_each_file_once(tmp_path, monkeypatch):
    """load hashes a file the first time; the cache remembers it by size and mtime, and a
    changed file (new mtime) is hashed again."""
    make_idx_dataset(tmp_path / "mnist")
    record_sums(monkeypatch, "mnist", tmp_path / "mnist", data.IDX_FILES)
    hashed = []
    real = data.download._verify_file
    monkeypatch.setattr(
        data.download, "_verify_file", lambda p, *a: hashed.append(p.name) or real(p, *a)
    )
    data.load("mnist", data_dir=tmp_path, download=False)
    assert sorted(hashed) == sorted(data.IDX_FILES)
    data.load("mnist", data_dir=tmp_path, download=False)
    assert len(hashed) == 4  # nothing hashed the second time
    assert (data.cache_dir() / "verified.json").is_file()
    labels = tmp_path / "mnist" / data.IDX_TEST_LABELS
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    data.load("mnist", data_dir=tmp_path, download=False)
    assert hashed[4:] == [data.IDX_TEST_LABELS]


def test_data_dir_holding_another_dataset_is_refused(tmp_path, monkeypatch):
    """`--dataset mnist --data-dir <fashion-mnist files>`: the checksums tell them apart."""
    monkeypatch.setattr(data.lookup, "SYSTEM_DATA_ROOTS", DEFAULT_SYSTEM_ROOTS)
    monkeypatch.setitem(data.download.CHECKSUMS, "mnist", RECORDED_SUMS["mnist"])
    with data_error(r"checksum mismatch for .*train-images-idx3-ubyte\.gz: sha256 "):
        data.load("mnist", data_dir=FASHION_DIR, download=False)


@pytest.mark.parametrize("state", ["missing", "empty", "incomplete"])
def test_data_dir_without_the_dataset_is_an_error_not_a_fallback(tmp_path, monkeypatch, state):
    make_idx_dataset(data.cache_dir() / "mnist")  # found in the cache without --data-dir
    mine = tmp_path / "mine"
    if state != "missing":
        mine.mkdir()
    if state == "incomplete":
        make_idx_dataset(mine)
        (mine / data.IDX_TRAIN_LABELS).unlink()
    with data_error(rf"--data-dir {re.escape(str(mine))} does not hold the mnist data"):
        data.load("mnist", data_dir=mine, download=False)
    assert data.load("mnist", download=False).train_x.shape[0] == 12


def test_checksum_entries_accept_any_recorded_sum_and_md5(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path)
    sums = {f: (f"sha256:{'0' * 64}", f"md5:{digest(tmp_path / f, 'md5')}") for f in data.IDX_FILES}
    sums[data.IDX_TEST_LABELS] = digest(tmp_path / data.IDX_TEST_LABELS)  # bare hex: sha256
    monkeypatch.setitem(data.download.CHECKSUMS, "kmnist", sums)
    assert data.check("kmnist", data_dir=tmp_path).startswith("kmnist: ok")


# --------------------------------------------------------------------------------------------
# Names, validation split, digits
# --------------------------------------------------------------------------------------------


def test_unknown_dataset_lists_valid_names():
    valid = "digits, fashion-mnist, mnist, kmnist, cifar10"
    with data_error(rf"unknown dataset 'mnits'; valid names: {valid}"):
        data.load("mnits")
    with data_error(r"unknown dataset"):
        data.locate("cifar100")
    with data_error(r"unknown dataset"):
        data.check("")


@pytest.mark.parametrize("bad", [-1, 12, 100, 1.5, 0.99, 0.01, True, "3"])
def test_bad_validation_size(tmp_path, bad):
    make_idx_dataset(tmp_path)
    with data_error(r"validation size .*(whole count|>= 0|less than the 12 training|no example)"):
        data.load("mnist", data_dir=tmp_path, validation=bad, download=False)


def test_a_validation_fraction_holds_out_that_share_of_the_training_set():
    """A fraction below 1 is a share of the training set, rounded: 1/12 is 120 of digits'
    1,438 training images, the split a count of 120 gives (and 5,000 of 60,000)."""
    share = data.load("digits", validation=1 / 12, seed=3)
    count = data.load("digits", validation=120, seed=3)
    assert share.val_x.shape[0] == 120 and share.train_x.shape[0] == 1438 - 120
    assert torch.equal(share.val_x, count.val_x) and torch.equal(share.train_y, count.train_y)
    assert data.held_out(1 / 12, 60000, "fashion-mnist") == 5000
    assert data.held_out(5000.0, 60000, "fashion-mnist") == 5000


@pytest.mark.parametrize("bad", [-1, 2.0, None])
def test_bad_seed(bad):
    with data_error(r"validation seed must be a non-negative integer"):
        data.load("digits", validation=5, seed=bad)


def test_validation_split_deterministic_and_disjoint(tmp_path):
    train_x, *_ = make_idx_dataset(tmp_path, n_train=40)
    a = data.load("mnist", data_dir=tmp_path, validation=10, seed=1, download=False)
    b = data.load("mnist", data_dir=tmp_path, validation=10, seed=1, download=False)
    c = data.load("mnist", data_dir=tmp_path, validation=10, seed=2, download=False)
    assert a.val_x.shape == (10, 1, 4, 5) and a.train_x.shape == (30, 1, 4, 5)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    ids = lambda x: (x[:, 0, 0, 0] * 255).round().long().tolist()  # noqa: E731 - image number
    val_ids, train_ids = ids(a.val_x), ids(a.train_x)
    assert not set(val_ids) & set(train_ids)
    assert sorted(val_ids + train_ids) == list(range(40))
    assert val_ids == sorted(val_ids) and train_ids == sorted(train_ids)  # original order kept
    assert torch.equal(a.val_y, torch.tensor(val_ids) % 10)


def test_digits_shapes_and_fixed_split():
    ds = data.load("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.test_x.shape[1:] == (1, 8, 8)
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 1797
    assert ds.test_x.shape[0] == 359 and ds.image_shape == (1, 8, 8) and ds.n_features == 64
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    counts = torch.bincount(ds.test_y, minlength=10)
    totals = counts + torch.bincount(ds.train_y, minlength=10)
    assert torch.equal(counts, torch.round(totals * 0.2).long())  # stratified, 20 %
    other = data.load("digits", seed=123)
    assert torch.equal(ds.test_x, other.test_x) and torch.equal(ds.train_x, other.train_x)
    pinned = hashlib.sha256(ds.test_x.numpy().tobytes() + ds.test_y.numpy().tobytes())
    assert pinned.hexdigest()[:16] == DIGITS_TEST_DIGEST


DIGITS_TEST_DIGEST = "d0e806086923822b"  # pins the fixed split (and its pixels)


def test_digits_validation_split():
    full = data.load("digits")
    a = data.load("digits", validation=200, seed=7)
    b = data.load("digits", validation=200, seed=7)
    assert a.val_x.shape == (200, 1, 8, 8) and a.train_x.shape[0] == full.train_x.shape[0] - 200
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, full.test_x)
    rows = lambda x: {bytes(r.numpy().tobytes()) for r in x}  # noqa: E731 - digits are unique
    assert not rows(a.val_x) & rows(a.train_x)
    assert rows(a.val_x) | rows(a.train_x) == rows(full.train_x)
    assert not torch.equal(a.val_x, data.load("digits", validation=200, seed=8).val_x)
    assert data.locate("digits") is None
    assert data.check("digits") == (
        "digits: ok (embedded, scikit-learn): train 1438, test 359, 1x8x8, 10 classes"
    )


# --------------------------------------------------------------------------------------------
# Lookup order
# --------------------------------------------------------------------------------------------


def test_lookup_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    cache = data.cache_dir() / "mnist"
    system = tmp_path / "system" / "mnist"
    make_idx_dataset(explicit / "mnist", n_train=11)
    make_idx_dataset(env, n_train=12)  # the flat form: $CTSP_DATA/<files>
    make_idx_dataset(cache, n_train=13)
    make_idx_dataset(system, n_train=14)
    monkeypatch.setenv("CTSP_DATA", str(env))

    def n_train(data_dir=None) -> int:
        return data.load("mnist", data_dir=data_dir, download=False).train_x.shape[0]

    assert data.locate("mnist", explicit) == explicit / "mnist"
    assert n_train(explicit) == 11
    (explicit / "mnist" / data.IDX_TRAIN_IMAGES).unlink()
    # a --data-dir without the data is never left for the other places
    with data_error("does not hold the mnist data"):
        n_train(explicit)
    assert data.locate("mnist", explicit) is None
    assert data.locate("mnist") == env and n_train() == 12
    monkeypatch.delenv("CTSP_DATA")
    assert data.locate("mnist") == cache and n_train() == 13
    for f in data.IDX_FILES:
        (cache / f).unlink()
    assert data.locate("mnist") == system and n_train() == 14
    assert dict(data.describe())["mnist"] == f"found in {system}"


def test_named_subdirectory_beats_flat_form(tmp_path):
    make_idx_dataset(tmp_path, n_train=15)
    make_idx_dataset(tmp_path / "kmnist", n_train=16)
    assert data.load("kmnist", data_dir=str(tmp_path), download=False).train_x.shape[0] == 16
    assert data.load("mnist", data_dir=str(tmp_path), download=False).train_x.shape[0] == 15


def test_cache_dir_respects_xdg_and_home(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "xdg-cache" / "ctsp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "ctsp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "ctsp"


def test_describe_lists_every_dataset(tmp_path):
    rows = dict(data.describe())
    assert list(rows) == list(data.DATASET_NAMES)
    assert rows["digits"].startswith("embedded (scikit-learn)")
    assert rows["mnist"].startswith(f"not found; looked in {data.cache_dir() / 'mnist'}, ")
    assert "`ctsp data check mnist` (downloads from" in rows["mnist"]
    assert "--data-dir" in rows["mnist"]
    assert "apt-get install dataset-fashion-mnist" in rows["fashion-mnist"]


def test_describe_with_a_data_dir_looks_there_only(tmp_path):
    """As a run with that --data-dir does: the other places are not searched."""
    make_idx_dataset(tmp_path / "system" / "mnist")  # (the system root of these tests)
    assert data.locate("mnist") == tmp_path / "system" / "mnist"
    empty = tmp_path / "empty"
    empty.mkdir()
    rows = dict(data.describe(empty))
    assert rows["mnist"] == f"not in --data-dir {empty}; looked in {empty / 'mnist'}, {empty}"
    with data_error(f"--data-dir {tmp_path / 'nowhere'} is not a directory"):
        data.describe(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path) -> Path:
    return tmp_path / "served"


def test_download_lands_in_cache_and_loads(tmp_path, monkeypatch, served):
    train_x, train_y, test_x, test_y = make_idx_dataset(served, n_train=20)
    record_sums(monkeypatch, "mnist", served, data.IDX_FILES)
    cache = data.cache_dir() / "mnist"
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        assert "downloads from " + url in dict(data.describe())["mnist"]
        ds = data.load("mnist")
    assert files_in(cache) == sorted(data.IDX_FILES)  # no temporary files left
    for f in data.IDX_FILES:
        assert (cache / f).read_bytes() == (served / f).read_bytes()
    assert torch.equal(ds.train_y, torch.from_numpy(train_y.astype(np.int64)))
    assert torch.equal(ds.test_x, torch.from_numpy(test_x[:, None] / np.float32(255)))
    # The server is gone: the cached copy is used from now on.
    assert data.locate("mnist") == cache
    assert data.load("mnist").train_x.shape == (20, 1, 4, 5)
    assert data.check("mnist").startswith(f"mnist: ok ({cache}): train 20, test 5")


def test_check_download_flag(monkeypatch, served):
    make_idx_dataset(served)
    record_sums(monkeypatch, "kmnist", served, data.IDX_FILES)
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url + "/")
        with data_error("kmnist data not found"):
            data.check("kmnist")
        summary = data.check("kmnist", download=True)
    assert summary == (
        f"kmnist: ok ({data.cache_dir() / 'kmnist'}): train 12, test 5, 1x4x5, 10 classes"
    )


def test_download_checksum_mismatch_leaves_nothing(monkeypatch, served):
    make_idx_dataset(served)
    record_sums(monkeypatch, "mnist", served, data.IDX_FILES)
    write_idx(served / data.IDX_TEST_IMAGES, make_images(5, start=9))  # not what was recorded
    cache = data.cache_dir() / "mnist"
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        with data_error(
            rf"checksum mismatch for t10k-images-idx3-ubyte\.gz downloaded from "
            rf"{re.escape(url)}/t10k-images-idx3-ubyte\.gz: sha256 [0-9a-f]{{64}} does not "
            rf"match the recorded [0-9a-f]{{64}}; the download was discarded"
        ):
            data.load("mnist")
    assert files_in(cache) == []  # neither the bad file, its temp file, nor the good ones


def test_download_http_404(monkeypatch, served):
    make_idx_dataset(served)
    record_sums(monkeypatch, "mnist", served, data.IDX_FILES)
    (served / data.IDX_TRAIN_LABELS).unlink()
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        with data_error(
            rf"mnist data not found \(looked in .*\) and the download of {re.escape(url)}/"
            r"train-labels-idx1-ubyte\.gz failed \(HTTP 404 .*--data-dir"
        ):
            data.load("mnist")
    assert files_in(data.cache_dir() / "mnist") == []


def test_download_network_failure(monkeypatch):
    with data_error(
        rf"fashion-mnist data not found \(looked in .*/system/fashion-mnist\) and the download "
        rf"of {re.escape(CLOSED_PORT_URL)}/train-images-idx3-ubyte\.gz failed "
        r"\(.*\); to get it otherwise: install the Debian package "
        r"dataset-fashion-mnist .*--data-dir DIR or set \$CTSP_DATA=DIR"
    ):
        data.load("fashion-mnist")
    assert files_in(data.cache_dir() / "fashion-mnist") == []


def test_download_refuses_files_without_recorded_checksum(monkeypatch, served):
    make_idx_dataset(served)
    monkeypatch.setitem(data.download.CHECKSUMS, "mnist", {})
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        with data_error(r"no recorded checksum for mnist file train-images-idx3-ubyte\.gz"):
            data.load("mnist")


def test_download_replaces_a_damaged_cached_file(monkeypatch, served):
    make_idx_dataset(served)
    record_sums(monkeypatch, "mnist", served, data.IDX_FILES)
    cache = data.cache_dir() / "mnist"
    cache.mkdir(parents=True)
    for f in data.IDX_FILES[:3]:
        (cache / f).write_bytes((served / f).read_bytes())
    (cache / data.IDX_TRAIN_LABELS).write_bytes(b"damaged")
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        data.load("mnist")
    assert (cache / data.IDX_TRAIN_LABELS).read_bytes() == (
        served / data.IDX_TRAIN_LABELS
    ).read_bytes()
    assert files_in(cache) == sorted(data.IDX_FILES)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def test_cifar_download_extracts_into_cache(tmp_path, monkeypatch, served):
    archive = served / data.CIFAR_ARCHIVE
    batches = make_cifar_archive(archive, tmp_path / "work")
    cifar_sums(monkeypatch, archive, tmp_path / "work" / data.CIFAR_FOLDER)
    with http_server(served) as url:
        monkeypatch.setenv("CTSP_DATA_URL", url)
        ds = data.load("cifar10", validation=3)
    cache = data.cache_dir() / "cifar10"
    assert data.CIFAR_ARCHIVE in files_in(cache) and data.CIFAR_FOLDER in files_in(cache)
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.val_x.shape == (3, 3, 32, 32)
    assert ds.test_x.shape == (4, 3, 32, 32) and ds.image_shape == (3, 32, 32)
    assert ds.n_features == 3072 and ds.train_x.dtype == torch.float32
    full = data.load("cifar10")
    x, y = cifar_expected(batches)
    assert torch.equal(full.train_x, torch.from_numpy(x / np.float32(255)))
    assert torch.equal(full.train_y, torch.from_numpy(y))
    test = batches[data.CIFAR_TEST_BATCH]
    assert torch.equal(full.test_y, torch.tensor(test[b"labels"]))
    assert data.check("cifar10") == (
        f"cifar10: ok ({cache}): train 15, test 4, 3x32x32, 10 classes"
    )


def test_cifar_extracted_folder_forms(tmp_path):
    batches = make_cifar_batches(tmp_path / "a" / "cifar10" / data.CIFAR_FOLDER)
    make_cifar_batches(tmp_path / "b")  # the batches directly in the directory
    x, _ = cifar_expected(batches)
    ds = data.load("cifar10", data_dir=tmp_path / "a", download=False)
    assert torch.equal(ds.train_x, torch.from_numpy(x / np.float32(255)))
    assert data.locate("cifar10", tmp_path / "a") == tmp_path / "a" / "cifar10"
    assert data.load("cifar10", data_dir=tmp_path / "b", download=False).test_x.shape[0] == 4


def test_cifar_local_archive_is_verified_and_extracted(tmp_path, monkeypatch):
    archive = tmp_path / "mine" / data.CIFAR_ARCHIVE
    make_cifar_archive(archive, tmp_path / "work")
    cifar_sums(monkeypatch, archive, None)
    status = dict(data.describe(tmp_path / "mine"))["cifar10"]
    assert status.startswith(f"found in {tmp_path / 'mine'} (cifar-10-python.tar.gz")
    ds = data.load("cifar10", data_dir=tmp_path / "mine", download=False)
    assert ds.train_x.shape == (15, 3, 32, 32)
    assert data.CIFAR_FOLDER in files_in(data.cache_dir() / "cifar10")
    monkeypatch.setitem(data.download.CHECKSUMS, "cifar10", {data.CIFAR_ARCHIVE: "0" * 64})
    with data_error(rf"checksum mismatch for {re.escape(str(archive))}"):
        data.check("cifar10", data_dir=tmp_path / "mine")


def test_cifar_corrupt_batch_named(tmp_path):
    folder = tmp_path / data.CIFAR_FOLDER
    make_cifar_batches(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(garbage")
    with data_error(rf"corrupt CIFAR-10 batch {re.escape(str(folder / 'data_batch_3'))}"):
        data.load("cifar10", data_dir=tmp_path, download=False)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": [1, 2]}, protocol=2))
    with data_error(r"corrupt CIFAR-10 batch .*data_batch_3: expected a dict with data and labels"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def test_cifar_missing_batch_named(tmp_path):
    folder = tmp_path / data.CIFAR_FOLDER
    make_cifar_batches(folder)
    (folder / "test_batch").unlink()
    with data_error(rf"{re.escape(str(folder))} lacks test_batch"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = tmp_path / data.CIFAR_FOLDER
    make_cifar_batches(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with data_error(r"corrupt CIFAR-10 batch .*data_batch_1: cannot unpickle it .*not allowed"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def test_cifar_archive_with_path_traversal_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(data.download.CHECKSUMS, "cifar10", {})
    archive = tmp_path / "evil" / data.CIFAR_ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with data_error(r"unsafe path 'cifar-10-batches-py/\.\./\.\./escaped' in .*refusing"):
        data.load("cifar10", data_dir=tmp_path / "evil", download=False)
    assert not list(tmp_path.rglob("escaped"))
    assert files_in(data.cache_dir() / "cifar10") == []


def test_cifar_truncated_archive(tmp_path, monkeypatch):
    monkeypatch.setitem(data.download.CHECKSUMS, "cifar10", {})
    archive = tmp_path / "t" / data.CIFAR_ARCHIVE
    make_cifar_archive(archive, tmp_path / "work")
    archive.write_bytes(archive.read_bytes()[:2000])
    with data_error(rf"{re.escape(str(archive))} is truncated or corrupt"):
        data.load("cifar10", data_dir=tmp_path / "t", download=False)
    assert files_in(data.cache_dir() / "cifar10") == []


# --------------------------------------------------------------------------------------------
# Package layout
# --------------------------------------------------------------------------------------------

LAYERS = ("formats", "lookup", "download", "datasets", "__init__")  # each imports only earlier


def test_package_imports_point_one_way():
    package = Path(data.__file__).parent
    assert sorted(p.stem for p in package.glob("*.py")) == sorted(LAYERS)
    for rank, module in enumerate(LAYERS):
        tree = ast.parse((package / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in LAYERS[:rank], (module, node.module)
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            for name in names:
                assert not name.startswith("ctsp") or name in ("ctsp.errors", "ctsp.environment"), (
                    module,
                    name,
                )


def test_reexported_tables_are_the_ones_read():
    assert data.CHECKSUMS is data.download.CHECKSUMS
    assert data.DOWNLOAD_URLS is data.lookup.DOWNLOAD_URLS
    assert all(hasattr(data, name) for name in data.__all__)
