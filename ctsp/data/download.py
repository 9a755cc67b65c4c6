"""Checksums, verification and download of dataset files.

``CHECKSUMS[name][filename]`` is a tuple of accepted digests written ``"<algorithm>:<hex>"``
(a bare hex string means sha256); a file verifies when it matches any of them. A download
fetches each file into a temporary file beside its target in the cache and verifies it; only
when every file of the dataset has arrived and verified are they moved into place with
``os.replace``, so a failed download leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ctsp.errors import DataError

from .formats import (
    CIFAR_ARCHIVE,
    CIFAR_TEST_BATCH,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    _cifar_batch_dir,
    _extract_cifar,
    _one_line,
)
from .lookup import (
    _base_url,
    _candidates,
    _how_to_get,
    _not_found,
    _required_files,
    cache_dir,
    given,
    locate,
)

log = logging.getLogger("ctsp.data")  # the package's logger, named as before the split

DOWNLOAD_TIMEOUT_S = 60.0

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


def _find_or_download(name: str, data_dir: str | Path | None, download: bool) -> Path:
    """The directory holding ``name``'s files. A ``data_dir`` that does not hold them is an
    error (never a fall-back to the other places); else the lookup order, then a download."""
    where = locate(name, data_dir)
    if where is not None:
        return where
    if not download or given(data_dir):
        raise _not_found(name, data_dir)
    return _download(name, None)


def _cifar_batches_for(where: Path) -> Path:
    """The extracted batch folder for a located CIFAR-10 directory (extracting if needed)."""
    batch_dir = _cifar_batch_dir(where)
    if batch_dir is not None:
        return batch_dir
    cached = _cifar_batch_dir(cache_dir() / "cifar10")
    if cached is not None:
        return cached
    archive = where / CIFAR_ARCHIVE
    _verify_cached("cifar10", where, [CIFAR_ARCHIVE])
    return _extract_cifar(archive, cache_dir() / "cifar10")


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


VERIFIED_FILE = "verified.json"
"""In the cache: the files that verified, by path, with their size, mtime and accepted sums."""


def _verify_cached(name: str, folder: Path, filenames: Iterable[str]) -> None:
    """:func:`_verify_file` for each of ``filenames`` in ``folder``, skipped for a file that
    verified before with the same size, mtime and recorded sums (the record is
    ``cache_dir()/verified.json``, read and written once per call; unwritable: not kept)."""
    record = cache_dir() / VERIFIED_FILE
    try:
        seen = json.loads(record.read_text())
        seen = seen if isinstance(seen, dict) else {}
    except (OSError, ValueError):
        seen = {}
    changed = False
    for filename in filenames:
        accepted = _accepted(name, filename)
        if not accepted:
            continue
        path = folder / filename
        try:
            st = path.stat()
        except OSError:
            raise DataError(f"{name}: file missing: {path}") from None
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns, sorted(":".join(a) for a in accepted)]
        if seen.get(key) != stamp:
            _verify_file(path, name, filename)
            seen[key], changed = stamp, True
    if not changed:
        return
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=record.parent, prefix=f".{VERIFIED_FILE}.", suffix=".tmp", delete=False
        ) as f:
            json.dump(seen, f)
        os.replace(f.name, record)


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
