"""Where the datasets come from: the catalogue (names, classes, mirrors with their SHA-256 digests, system
folders), the folders searched, and downloads verified before they are kept.

Where files are looked for, in order: the ``root`` argument, ``$RBDLIB_DATA``, the user cache
``$XDG_CACHE_HOME/rbdlib/<name>`` (default ``~/.cache/rbdlib/<name>``), then system folders such as
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). Files found locally are
validated by parsing (:mod:`rbdlib.data.formats`: magic numbers, shapes, gzip CRC) rather than by digest, because
Debian ships the same images recompressed. Downloads are verified against hard-coded SHA-256 digests before they
are kept.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._progress import bar as progress_bar
from .formats import CIFAR_ARCHIVE, IDX_FILES, read_folder

DATASETS = ("fashion-mnist", "mnist", "cifar10", "digits")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable; the message lists the places tried and the fixes."""


# --------------------------------------------------------------------------------------------------
# Sources. Digests: the SHA-256 values are the ones TensorFlow Datasets publishes in
# `tensorflow_datasets/url_checksums/{fashion_mnist,mnist,cifar10}.txt`, cross-checked against several
# independent projects; the two Fashion-MNIST label files were also hashed here from the zalando GitHub
# repository itself. The MNIST files on the ossci-datasets mirror are byte-identical copies of
# yann.lecun.com's (same sizes; same digests as TFDS' cvdf mirror). Debian's `dataset-fashion-mnist` ships
# the same images recompressed (gzip header without file name, 24 bytes shorter), so its .gz digests differ
# from the canonical ones while the decompressed bytes are identical; local files are therefore checked by
# parsing, not by digest.


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its name, the mirrors to try in order, and its SHA-256 digest."""

    filename: str
    urls: tuple[str, ...]
    sha256: str


def _mirrored(filename: str, bases: Sequence[str], sha256: str) -> RemoteFile:
    return RemoteFile(filename, tuple(base + filename for base in bases), sha256)


_FASHION_BASES = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
_FASHION_SHA256 = (
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
)
_MNIST_SHA256 = (
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
)

# Mutable on purpose: tests point these at local files.
SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "fashion-mnist": tuple(map(_mirrored, IDX_FILES, [_FASHION_BASES] * 4, _FASHION_SHA256)),
    "mnist": tuple(map(_mirrored, IDX_FILES, [_MNIST_BASES] * 4, _MNIST_SHA256)),
    "cifar10": (
        RemoteFile(
            CIFAR_ARCHIVE,
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        ),
    ),
}
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
    "cifar10": ("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
}
CLASSES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),  # fmt: skip
    "mnist": tuple(str(i) for i in range(10)),
    "digits": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

_urlopen = urllib.request.urlopen  # tests replace this to serve bytes without a network


# --------------------------------------------------------------------------------------------------
# Where to look


def data_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ``name``, in order (existing or not).

    >>> str(data_dirs("fashion-mnist")[-1])
    '/usr/share/datasets/fashion-mnist'
    """
    check_name(name)
    dirs: list[Path] = []
    for base in (root, os.environ.get("RBDLIB_DATA") or None):
        if base is not None:
            dirs += [Path(base).expanduser(), Path(base).expanduser() / name]
    dirs.append(_cache_dir(name))
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    return dirs


def _cache_dir(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rbdlib" / name


def _download_dir(name: str, root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("RBDLIB_DATA"):
        return Path(os.environ["RBDLIB_DATA"]).expanduser() / name
    return _cache_dir(name)


def check_name(name: str) -> None:
    """A ValueError unless ``name`` is in :data:`DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}.")


# --------------------------------------------------------------------------------------------------
# Downloading


def download_file(remote: RemoteFile, dest_dir: Path, progress: bool | None) -> Path:
    """Fetch ``remote`` into ``dest_dir``, trying each mirror; keep it only if its SHA-256 matches."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.filename
    _remove_stale_parts(dest)
    failures = []
    for url in remote.urls:
        try:
            _fetch_verified(url, dest, remote.sha256, progress)
            return dest
        except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url}: {error}")
    raise OSError("download failed:\n    " + "\n    ".join(failures))


STALE_PART_SECONDS = 600  # a live download writes every few seconds; older .part files are orphans


def _remove_stale_parts(dest: Path) -> None:
    """Remove ``.part`` files of ``dest`` left by a download that was killed (not written to for 10 min)."""
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            pass


def _fetch_verified(url: str, dest: Path, sha256: str, progress: bool | None) -> None:
    # Write to a temporary file next to `dest` and rename only once complete and verified, so an
    # interrupted or corrupt download is never mistaken for a good file.
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length else None
            bar = progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name, disable=_quiet(progress))
            with bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        if total is not None and size != total:
            raise ValueError(f"truncated download: got {size} of {total} bytes")
        if digest.hexdigest() != sha256:
            raise ValueError(f"SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _quiet(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # None: tqdm decides (quiet when not a terminal)


def locate(name: str, root, download: bool, progress: bool | None):
    """(folder, arrays) of the dataset ``name``: the first folder of :func:`data_dirs` that holds it, else (with
    ``download``) the folder it was downloaded into; ``arrays`` as :func:`rbdlib.data.formats.read_folder` reads
    them. Raises :class:`DatasetNotFoundError` naming the places tried and the fixes."""
    tried = data_dirs(name, root)
    for folder in tried:
        arrays = read_folder(name, folder)
        if arrays is not None:
            return folder, arrays
    if not download:
        raise _not_found(name, tried, "not on disk and download=False")
    dest = _download_dir(name, root)
    try:
        for remote in SOURCES[name]:
            if not (dest / remote.filename).is_file():
                download_file(remote, dest, progress)
    except OSError as error:
        details = f"Download into {dest}: {error}"
        raise _not_found(name, tried, "not on disk and the download failed", details) from error
    arrays = read_folder(name, dest)
    if arrays is None:
        raise _not_found(name, tried, f"files downloaded into {dest} are incomplete")
    return dest, arrays


def _not_found(name: str, tried: list[Path], reason: str, details: str = "") -> DatasetNotFoundError:
    places = "\n".join(f"  - {p}" for p in tried)
    hint = "  - apt-get install dataset-fashion-mnist  (Debian/Ubuntu)\n" if name == "fashion-mnist" else ""
    files = ", ".join(r.filename for r in SOURCES[name])
    return DatasetNotFoundError(
        f"Dataset {name!r} not found ({reason}).\nLooked for {files} in:\n{places}\n"
        + (details + "\n" if details else "")
        + "To fix, one of:\n"
        f"{hint}  - put the files in a folder and pass root=... or set RBDLIB_DATA=...\n"
        f"  - call load_dataset({name!r}, download=True) with network access\n"
        f"  - use best_available(), which falls back to the offline 'digits' dataset"
    )
