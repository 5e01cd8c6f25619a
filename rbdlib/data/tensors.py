"""The datasets as tensors: :class:`Dataset`, the paper's train/validation split, per-image standardisation,
augmentation (batched torch ops; one random draw per image, no Python loop over images) and mini-batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import checks


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


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / max(std, 1/sqrt(numel))`` per image, as TF's ``per_image_standardization``.

    >>> x = standardize_per_image(torch.rand(2, 3, 4, 4))
    >>> x.flatten(1).mean(1).abs().max() < 1e-6
    tensor(True)
    """
    flat = x.flatten(1)
    std = flat.std(1, unbiased=False).clamp_min(flat.shape[1] ** -0.5)
    return ((flat - flat.mean(1, keepdim=True)) / std[:, None]).view_as(x)


def split(name: str, classes: tuple[str, ...], train_x, train_y, test_x, test_y, val_size: int, split_seed: int,
          source: str | None) -> Dataset:
    """The paper's split: a contiguous block of ``val_size`` training images, at an offset drawn from
    ``split_seed``, becomes the validation set; the test set is untouched."""
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
        train_x[keep], train_y[keep], train_x[val].clone(), train_y[val].clone(), test_x, test_y, name, classes,
        source
    )


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on each side, then crop back to ``H x W`` at a random offset per image.

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> random_crop(x, 0).equal(x)
    True
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop expects a batch N x C x H x W, got shape {tuple(x.shape)}.")
    checks.whole("pad", pad, hint=" (pixels on each side)")
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
    checks.whole("batch_size", batch_size, low=1)
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]
