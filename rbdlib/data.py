"""Datasets, the paper's train/validation split, augmentation and mini-batches, all as plain tensors.

``load_dataset`` returns float32 images ``N x C x H x W`` and int64 labels for Fashion-MNIST, MNIST,
CIFAR-10 (binary version) and scikit-learn's bundled 8x8 digits (always available offline). The paper
holds out a contiguous block of 10,000 training images as validation set and never touches the test set.

>>> ds = load_dataset("digits")
>>> ds.train_x.shape[1:], ds.train_x.dtype, ds.train_y.dtype
(torch.Size([1, 8, 8]), torch.float32, torch.int64)
>>> len(ds.train_x) + len(ds.val_x) + len(ds.test_x)
1797

Where files are looked for, in order: the ``root`` argument, ``$RBDLIB_DATA``, the user cache
``$XDG_CACHE_HOME/rbdlib/<name>`` (default ``~/.cache/rbdlib/<name>``), then system folders such as
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). Files found locally are
validated by parsing (magic numbers, shapes, gzip CRC) rather than by digest, because Debian ships the same
images recompressed. Downloads are verified against hard-coded SHA-256 digests before they are kept.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import numbers
import os
import struct
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._progress import bar as progress_bar

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "DATASETS",
    "load_dataset",
    "best_available",
    "data_dirs",
    "augment_mnist",
    "augment_cifar",
    "random_crop",
    "batches",
]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "digits")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable; the message lists the places tried and the fixes."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what it should be (wrong magic number, truncated, wrong shape)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test tensors of one dataset: images ``N x C x H x W`` float32, labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    classes: tuple[str, ...]
    source_path: str | None = None

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_x)}, val={len(self.val_x)}, "
            f"test={len(self.test_x)}, image={tuple(self.in_shape)}, source={self.source_path!r})"
        )


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
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
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
    "fashion-mnist": tuple(map(_mirrored, _IDX_FILES, [_FASHION_BASES] * 4, _FASHION_SHA256)),
    "mnist": tuple(map(_mirrored, _IDX_FILES, [_MNIST_BASES] * 4, _MNIST_SHA256)),
    "cifar10": (
        RemoteFile(
            "cifar-10-binary.tar.gz",
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
_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN, "test_batch.bin")
_CIFAR_MEMBERS = {f"{_CIFAR_DIR}/{f}" for f in (*_CIFAR_FILES, "batches.meta.txt", "readme.html")}

_urlopen = urllib.request.urlopen  # tests replace this to serve bytes without a network


# --------------------------------------------------------------------------------------------------
# Where to look


def data_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ``name``, in order (existing or not).

    >>> str(data_dirs("fashion-mnist")[-1])
    '/usr/share/datasets/fashion-mnist'
    """
    _check_name(name)
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


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}.")


# --------------------------------------------------------------------------------------------------
# Downloading


def _download(remote: RemoteFile, dest_dir: Path, progress: bool | None) -> Path:
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


# --------------------------------------------------------------------------------------------------
# Parsing


IDX_MAX_BYTES = 70_000 * 28 * 28  # the largest file of the MNIST family: 70,000 images of 28 x 28 bytes
CIFAR_BATCH_BYTES = 10_000 * 3073  # one CIFAR-10 batch: 10,000 records of 1 label + 3,072 pixel bytes


def read_idx(path: str | os.PathLike, magic: int, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or plain), checking its magic number and size.

    Magic numbers: 2049 (``0x801``) for label files, 2051 (``0x803``) for image files. The header is read
    first and a shape of more than ``max_bytes`` is refused before any memory is spent on it; then exactly
    the bytes the header declares are read (a compressed file is never inflated past them).
    """
    path = Path(path)
    ndim = magic & 0xFF
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
            got = struct.unpack(">I", head[:4])[0] if len(head) >= 4 else None
            if got != magic:
                raise DatasetFormatError(f"{path}: magic number {got}, expected {magic}; is this the right file?")
            if len(head) < 4 + 4 * ndim:
                raise DatasetFormatError(f"{path}: {len(head)} bytes cannot hold the IDX header of {ndim} "
                                         f"dimension(s) ({4 + 4 * ndim} bytes); the file is truncated, delete it "
                                         "and retry.")
            dims = struct.unpack(f">{ndim}I", head[4:])
            size = int(np.prod(dims, dtype=np.int64))
            if size > max_bytes:
                raise DatasetFormatError(f"{path}: its header declares shape {dims} ({size:,} bytes), more than "
                                         f"the {max_bytes:,} of the largest file of this kind; not a dataset file.")
            raw = f.read(size + 1)
    except (OSError, EOFError) as error:  # BadGzipFile is an OSError; truncated gzip raises EOFError
        raise DatasetFormatError(f"{path} is not a readable IDX file ({error}); delete it, retry.") from error
    total = 4 + 4 * ndim + size
    if len(raw) > size:
        raise DatasetFormatError(f"{path}: more bytes than the {total} its header declares for shape {dims}.")
    if len(raw) < size:
        raise DatasetFormatError(f"{path}: {4 + 4 * ndim + len(raw)} bytes, fewer than the {total} its header "
                                 f"declares for shape {dims}; the file is truncated, delete it and retry.")
    return np.frombuffer(raw, np.uint8).reshape(dims)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for filename in _IDX_FILES:
        gz, plain = folder / filename, folder / filename.removesuffix(".gz")
        found[filename] = gz if gz.is_file() else plain if plain.is_file() else None
    return found if all(found.values()) else None  # type: ignore[return-value]


def _load_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images, 2051), read_idx(labels, 2049)
    if len(x) != len(y) or x.shape[1:] != (28, 28):
        raise DatasetFormatError(f"{images} has shape {x.shape} for {len(y)} labels, expected N x 28 x 28.")
    if len(y) and y.max() > 9:
        raise DatasetFormatError(f"{labels}: label {y.max()} out of range 0..9; not an MNIST-style label file.")
    return x[:, None], y


def read_cifar_binary(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    size = os.path.getsize(path)
    if size > CIFAR_BATCH_BYTES:
        raise DatasetFormatError(f"{path}: {size:,} bytes, more than a CIFAR-10 batch ({CIFAR_BATCH_BYTES:,}).")
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DatasetFormatError(f"{path}: {raw.size} bytes is not a whole number of 3073-byte records.")
    records = raw.reshape(-1, 3073)
    labels = records[:, 0]
    if labels.max() > 9:
        raise DatasetFormatError(f"{path}: label {labels.max()} out of range 0..9; not a CIFAR-10 batch.")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _find_cifar(folder: Path) -> Path | None:
    for candidate in (folder / _CIFAR_DIR, folder):
        if all((candidate / f).is_file() for f in _CIFAR_FILES):
            return candidate
    archive = folder / SOURCES["cifar10"][0].filename
    return _extract_cifar(archive) if archive.is_file() else None


def _extract_cifar(archive: Path) -> Path:
    """Extract the expected batch files (and nothing else) next to the archive; each one atomically."""
    target = archive.parent / _CIFAR_DIR
    target.mkdir(exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name not in _CIFAR_MEMBERS or not member.isfile():
                    continue  # never follow unexpected names, links or absolute paths
                if member.size > CIFAR_BATCH_BYTES:  # declared size; the copy below stops there too
                    raise DatasetFormatError(f"{archive}: member {member.name} declares {member.size:,} bytes, "
                                             f"more than a CIFAR-10 batch ({CIFAR_BATCH_BYTES:,}).")
                source = tar.extractfile(member)
                fd, tmp = tempfile.mkstemp(dir=target, prefix=".extract.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, source:
                        left = CIFAR_BATCH_BYTES + 1
                        while left > 0 and (chunk := source.read(min(1 << 20, left))):
                            out.write(chunk)
                            left -= len(chunk)
                    os.replace(tmp, target / Path(member.name).name)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except OSError as error:
        if error.errno == errno.ENOSPC:  # the disk, not the archive
            raise OSError(errno.ENOSPC, f"no space left on the device to extract {archive} into {target}; free "
                                        "some space and retry") from None
        raise DatasetFormatError(f"{archive} is not a readable CIFAR-10 archive ({error}).") from error
    except (tarfile.TarError, EOFError) as error:
        raise DatasetFormatError(f"{archive} is not a readable CIFAR-10 archive ({error}).") from error
    missing = [f for f in _CIFAR_FILES if not (target / f).is_file()]
    if missing:
        raise DatasetFormatError(f"{archive} lacks {missing}; expected the binary version of CIFAR-10.")
    return target


# --------------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    name: str = "fashion-mnist",
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    val_size: int | None = None,
    split_seed: int = 0,
    progress: bool | None = None,
) -> Dataset:
    """Load ``name`` ("fashion-mnist", "mnist", "cifar10" or "digits") as tensors with the paper's split.

    Images are float32 in [0, 1] (``/255``; digits ``/16``). CIFAR-10 is additionally standardised per
    image on all splits, ``(x - mean) / max(std, 1/sqrt(3072))``, as TensorFlow's
    ``per_image_standardization``. Validation: a contiguous block of ``val_size`` images (10,000; digits
    20 %) cut from the training set at an offset drawn from ``split_seed``; the test set is untouched
    (digits: a fixed 20 %). ``download=False`` never touches the network; downloads go into ``root`` if
    given, else ``$RBDLIB_DATA/<name>``, else the user cache.

    >>> ds = load_dataset("digits", split_seed=1)
    >>> len(ds.train_x), len(ds.val_x), len(ds.test_x)
    (1079, 359, 359)
    >>> float(ds.train_x.min()), float(ds.train_x.max())
    (0.0, 1.0)
    """
    _check_name(name)
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int)):
        raise TypeError(f"val_size must be an int or None (the paper's 10,000), got {val_size!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative int, got {split_seed!r}")
    if name == "digits":
        return _load_digits(val_size, split_seed)
    folder, arrays = _locate_and_read(name, root, download, progress)
    (train_x, train_y), (test_x, test_y) = arrays
    train_x, test_x = _to_float(train_x), _to_float(test_x)
    if name == "cifar10":
        train_x, test_x = standardize_per_image(train_x), standardize_per_image(test_x)
    train_y, test_y = torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_y.astype(np.int64))
    return _split(name, train_x, train_y, test_x, test_y, 10_000 if val_size is None else val_size,
                  split_seed, str(folder))


def _locate_and_read(name: str, root, download: bool, progress: bool | None):
    tried = data_dirs(name, root)
    for folder in tried:
        arrays = _read_folder(name, folder)
        if arrays is not None:
            return folder, arrays
    if not download:
        raise _not_found(name, tried, "not on disk and download=False")
    dest = _download_dir(name, root)
    try:
        for remote in SOURCES[name]:
            if not (dest / remote.filename).is_file():
                _download(remote, dest, progress)
    except OSError as error:
        details = f"Download into {dest}: {error}"
        raise _not_found(name, tried, "not on disk and the download failed", details) from error
    arrays = _read_folder(name, dest)
    if arrays is None:
        raise _not_found(name, tried, f"files downloaded into {dest} are incomplete")
    return dest, arrays


def _read_folder(name: str, folder: Path):
    if not folder.is_dir():
        return None
    if name == "cifar10":
        batch_dir = _find_cifar(folder)
        if batch_dir is None:
            return None
        parts = [read_cifar_binary(batch_dir / f) for f in _CIFAR_TRAIN]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return train, read_cifar_binary(batch_dir / "test_batch.bin")
    files = _find_idx(folder)
    if files is None:
        return None
    train = _load_idx_pair(files[_IDX_FILES[0]], files[_IDX_FILES[1]])
    return train, _load_idx_pair(files[_IDX_FILES[2]], files[_IDX_FILES[3]])


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


def _to_float(images: np.ndarray) -> torch.Tensor:
    x = images.astype(np.float32)
    x /= 255.0   # in place: no second full-size float copy while loading
    return torch.from_numpy(x)


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / max(std, 1/sqrt(numel))`` per image, as TF's ``per_image_standardization``.

    >>> x = standardize_per_image(torch.rand(2, 3, 4, 4))
    >>> x.flatten(1).mean(1).abs().max() < 1e-6
    tensor(True)
    """
    flat = x.flatten(1)
    std = flat.std(1, unbiased=False).clamp_min(flat.shape[1] ** -0.5)
    return ((flat - flat.mean(1, keepdim=True)) / std[:, None]).view_as(x)


def _split(name, train_x, train_y, test_x, test_y, val_size: int, split_seed: int, source) -> Dataset:
    n = len(train_x)
    if not 0 < val_size < n:
        raise ValueError(f"val_size={val_size} must be between 1 and {n - 1} for {name!r} ({n} train images): "
                         "the training loop reports validation accuracy, so it needs at least one image")
    offset = int(np.random.default_rng(split_seed).integers(0, n - val_size + 1))
    val = slice(offset, offset + val_size)
    keep = torch.cat([torch.arange(offset), torch.arange(offset + val_size, n)])
    # clone the validation slice: a view would keep the whole pre-split training array alive (157 MB more
    # per process for Fashion-MNIST, which notebook 07 pays three times)
    return Dataset(
        train_x[keep], train_y[keep], train_x[val].clone(), train_y[val].clone(), test_x, test_y, name, CLASSES[name],
        source
    )


def _load_digits(val_size: int | None, split_seed: int) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the 'digits' dataset is scikit-learn's: pip install 'rbdlib[notebooks]' "
                          "(or scikit-learn)") from error

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))  # fixed: the test set never moves
    x, y = x[order], y[order]
    n_test = round(0.2 * len(x))
    train_x, train_y, test_x, test_y = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    return _split("digits", train_x, train_y, test_x, test_y, n_test if val_size is None else val_size,
                  split_seed, "sklearn")


def best_available(preferred: str = "fashion-mnist", **kwargs) -> tuple[Dataset, str]:
    """Load ``preferred`` if possible, else scikit-learn's 8x8 digits; the message says which and why.

    >>> ds, message = best_available("digits")
    >>> ds.name, message.split(":")[0]
    ('digits', 'Using digits')
    """
    try:
        ds = load_dataset(preferred, **kwargs)
    except DatasetNotFoundError as error:
        ds = load_dataset("digits")
        reason = str(error).splitlines()[0].partition("(")[2].rstrip(").")
        return ds, (
            f"Using digits: {preferred} is not available ({reason}), so this run uses scikit-learn's "
            f"8x8 digits instead ({_sizes(ds)}); numbers will differ from the paper's."
        )
    return ds, f"Using {preferred}: {_sizes(ds)} from {ds.source_path}."


def _sizes(ds: Dataset) -> str:
    return f"{len(ds.train_x):,} train / {len(ds.val_x):,} validation / {len(ds.test_x):,} test images"


# --------------------------------------------------------------------------------------------------
# Augmentation (batched torch ops; one random draw per image, no Python loop over images)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on each side, then crop back to ``H x W`` at a random offset per image.

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> random_crop(x, 0).equal(x)
    True
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop expects a batch N x C x H x W, got shape {tuple(x.shape)}.")
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer (pixels on each side), got {pad!r}.")
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = _uniform_ints(2 * pad + 1, (2, n), generator, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n x 1 x h x 1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n x 1 x 1 x w
    images = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[images, channels, rows, cols]


def augment_mnist(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's (Fashion-)MNIST augmentation: pad 3, random 28x28 crop, add U(-0.5, 0.5) per image.

    No clipping, as TensorFlow's ``random_brightness``.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_mnist(torch.rand(5, 1, 28, 28), g).shape
    torch.Size([5, 1, 28, 28])
    """
    x = random_crop(x, 3, generator)
    shift = _uniform(x.shape[0], generator, x.device) - 0.5
    return x + shift.view(-1, 1, 1, 1)


def augment_cifar(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's CIFAR-10 augmentation: pad 4, random 32x32 crop, random horizontal flip.

    The images were already standardised per image at load time, so the zero padding here is the
    image's mean colour (the paper augments first and standardises afterwards; the difference is only
    in the border statistics).

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_cifar(torch.randn(5, 3, 32, 32), g).shape
    torch.Size([5, 3, 32, 32])
    """
    x = random_crop(x, 4, generator)
    flip = _uniform(x.shape[0], generator, x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, device=where).to(device)


def _uniform_ints(high: int, shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = generator.device if generator is not None else "cpu"
    return torch.randint(high, shape, generator=generator, device=where).to(device)


# --------------------------------------------------------------------------------------------------
# Mini-batches


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 32,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``(x, y)`` in mini-batches, shuffled with ``generator`` if ``shuffle``.

    >>> x, y = torch.arange(10.), torch.arange(10)
    >>> [len(b) for b, _ in batches(x, y, 4, shuffle=False)]
    [4, 4, 2]
    >>> [len(b) for b, _ in batches(x, y, 4, generator=torch.Generator().manual_seed(0), drop_last=True)]
    [4, 4]
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)}); pass matching images and labels.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]
