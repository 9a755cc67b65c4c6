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
   when given, it must hold the files (an error otherwise; the other places are not searched);
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
(a bare hex string means sha256); a file verifies when it matches any of them. Every file is
verified before use: downloads as they arrive, local files by :func:`load` the first time it
reads them (``cache_dir()/verified.json`` remembers a verified file by path, size, mtime and
the sums it matched, so a second load hashes nothing) and by :func:`check` every time.

Every problem raises :class:`ctsp.errors.DataError` with a one-line message naming the file.

Modules
-------
Each depends only on those below it (and on :mod:`ctsp.errors`):

:mod:`ctsp.data.datasets`
    :class:`Dataset`, :func:`load`, :func:`check`; digits, the validation split, tensors.
:mod:`ctsp.data.download`
    ``CHECKSUMS``, verification and download into the cache.
:mod:`ctsp.data.lookup`
    ``DATASET_NAMES``, the lookup order, :func:`cache_dir`, :func:`locate`, :func:`describe`.
:mod:`ctsp.data.formats`
    The IDX and CIFAR-10 readers (:func:`read_idx`) and the archive extraction.

This package re-exports their public names. The tables (``CHECKSUMS``, ``DOWNLOAD_URLS``,
``SYSTEM_DATA_ROOTS``, ...) are read where they are defined, so code that replaces one (a
test's monkeypatch) must set it on that module, e.g. ``ctsp.data.lookup.SYSTEM_DATA_ROOTS``.
"""

from __future__ import annotations

from .datasets import DIGITS_SPLIT_SEED as DIGITS_SPLIT_SEED
from .datasets import DIGITS_TEST_FRACTION as DIGITS_TEST_FRACTION
from .datasets import Dataset, check, held_out, load
from .download import CHECKSUMS
from .download import DOWNLOAD_TIMEOUT_S as DOWNLOAD_TIMEOUT_S
from .formats import CIFAR_ARCHIVE as CIFAR_ARCHIVE
from .formats import CIFAR_BATCHES as CIFAR_BATCHES
from .formats import CIFAR_FOLDER as CIFAR_FOLDER
from .formats import CIFAR_TEST_BATCH as CIFAR_TEST_BATCH
from .formats import CIFAR_TRAIN_BATCHES as CIFAR_TRAIN_BATCHES
from .formats import IDX_FILES as IDX_FILES
from .formats import IDX_TEST_IMAGES as IDX_TEST_IMAGES
from .formats import IDX_TEST_LABELS as IDX_TEST_LABELS
from .formats import IDX_TRAIN_IMAGES as IDX_TRAIN_IMAGES
from .formats import IDX_TRAIN_LABELS as IDX_TRAIN_LABELS
from .formats import NUM_CLASSES as NUM_CLASSES
from .formats import read_idx
from .lookup import APT_PACKAGES as APT_PACKAGES
from .lookup import DATA_ENV as DATA_ENV
from .lookup import DATASET_NAMES, DOWNLOAD_URLS, SYSTEM_DATA_ROOTS, cache_dir, describe, locate
from .lookup import DOWNLOAD_URL_ENV as DOWNLOAD_URL_ENV

# The documented API. The other names above (file names, constants) are re-exported too, as
# explicit ``X as X`` imports, because scripts, benchmarks and tests use them.
__all__ = [
    "CHECKSUMS",
    "DATASET_NAMES",
    "DOWNLOAD_URLS",
    "SYSTEM_DATA_ROOTS",
    "Dataset",
    "cache_dir",
    "check",
    "describe",
    "held_out",
    "load",
    "locate",
    "read_idx",
]
