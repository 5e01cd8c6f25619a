"""The files of the datasets: IDX (MNIST, Fashion-MNIST) and CIFAR-10's binary batches, read and checked by
parsing (magic numbers, declared shapes, sizes, gzip CRC), and CIFAR-10's archive extracted safely. Nothing here
touches the network or knows where files come from (:mod:`rbdlib.data.sources`).
"""

from __future__ import annotations

import errno
import gzip
import os
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what it should be (wrong magic number, truncated, wrong shape)."""


IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN, "test_batch.bin")
CIFAR_MEMBERS = {f"{CIFAR_DIR}/{f}" for f in (*CIFAR_FILES, "batches.meta.txt", "readme.html")}


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
    for filename in IDX_FILES:
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
    for candidate in (folder / CIFAR_DIR, folder):
        if all((candidate / f).is_file() for f in CIFAR_FILES):
            return candidate
    archive = folder / CIFAR_ARCHIVE
    return _extract_cifar(archive) if archive.is_file() else None


def _extract_cifar(archive: Path) -> Path:
    """Extract the expected batch files (and nothing else) next to the archive; each one atomically."""
    target = archive.parent / CIFAR_DIR
    target.mkdir(exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name not in CIFAR_MEMBERS or not member.isfile():
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
    missing = [f for f in CIFAR_FILES if not (target / f).is_file()]
    if missing:
        raise DatasetFormatError(f"{archive} lacks {missing}; expected the binary version of CIFAR-10.")
    return target


def read_folder(name: str, folder: Path):
    """((train images, labels), (test images, labels)) as uint8 arrays of the dataset ``name`` in ``folder``
    (CIFAR-10 extracted from its archive there if need be), or None when the folder does not hold it."""
    if not folder.is_dir():
        return None
    if name == "cifar10":
        batch_dir = _find_cifar(folder)
        if batch_dir is None:
            return None
        parts = [read_cifar_binary(batch_dir / f) for f in CIFAR_TRAIN]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return train, read_cifar_binary(batch_dir / "test_batch.bin")
    files = _find_idx(folder)
    if files is None:
        return None
    train = _load_idx_pair(files[IDX_FILES[0]], files[IDX_FILES[1]])
    return train, _load_idx_pair(files[IDX_FILES[2]], files[IDX_FILES[3]])
