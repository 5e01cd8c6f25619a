"""Datasets, the paper's train/validation split, augmentation and mini-batches, all as plain tensors.

``load_dataset`` returns float32 images ``N x C x H x W`` and int64 labels for Fashion-MNIST, MNIST,
CIFAR-10 (binary version) and scikit-learn's bundled 8x8 digits (always available offline). The paper
holds out a contiguous block of 10,000 training images as validation set and never touches the test set.

>>> ds = load_dataset("digits")
>>> ds.train_x.shape[1:], ds.train_x.dtype, ds.train_y.dtype
(torch.Size([1, 8, 8]), torch.float32, torch.int64)
>>> len(ds.train_x) + len(ds.val_x) + len(ds.test_x)
1797

Three rooms: :mod:`~rbdlib.data.sources` (the catalogue, the folders searched, verified downloads),
:mod:`~rbdlib.data.formats` (IDX and CIFAR-10 files, read and checked by parsing) and
:mod:`~rbdlib.data.tensors` (the split, augmentation, mini-batches). This module loads a dataset through them
and re-exports their public names.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import checks
from .formats import DatasetFormatError, read_cifar_binary, read_idx
from .sources import (
    CLASSES,
    DATASETS,
    SOURCES,
    SYSTEM_DIRS,
    DatasetNotFoundError,
    RemoteFile,
    check_name,
    data_dirs,
    locate,
)
from .tensors import Dataset, augment_cifar, augment_mnist, batches, random_crop, split, standardize_per_image

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
    "standardize_per_image",
    "read_idx",
    "read_cifar_binary",
    "RemoteFile",
    "SOURCES",
    "SYSTEM_DIRS",
    "CLASSES",
]


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
    check_name(name)
    if val_size is not None and not checks.is_int(val_size):
        raise TypeError(f"val_size must be an int or None (the paper's 10,000), got {val_size!r}")
    checks.whole("split_seed", split_seed, what="a non-negative int")
    if name == "digits":
        return _load_digits(val_size, split_seed)
    folder, arrays = locate(name, root, download, progress)
    (train_x, train_y), (test_x, test_y) = arrays
    train_x, test_x = _to_float(train_x), _to_float(test_x)
    if name == "cifar10":
        train_x, test_x = standardize_per_image(train_x), standardize_per_image(test_x)
    train_y, test_y = torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_y.astype(np.int64))
    return split(name, CLASSES[name], train_x, train_y, test_x, test_y, 10_000 if val_size is None else val_size,
                 split_seed, str(folder))


def _to_float(images: np.ndarray) -> torch.Tensor:
    x = images.astype(np.float32)
    x /= 255.0   # in place: no second full-size float copy while loading
    return torch.from_numpy(x)


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
    return split("digits", CLASSES["digits"], train_x, train_y, test_x, test_y,
                 n_test if val_size is None else val_size, split_seed, "sklearn")


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
