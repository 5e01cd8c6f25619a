"""``RandomBases``: the public face of the pure function that defines every random direction.

A basis is never stored. ``project`` and ``expand`` regenerate the directions they need, tile by
tile, in the fused kernels of :mod:`rbdlib.kernels` (compiled CPU code, or CUDA through CuPy when
the tensor lives on a GPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import checks, distributions
from . import philox as ref
from .kernels import cpu, cuda


class RandomBases:
    """``dim`` random directions in R^size, addressed by (seed, step, compartment, direction).

    Direction ``i`` (0 <= i < dim) is ``scale * z`` where ``z`` is element-wise ``normal``
    (N(0, 1)), ``uniform`` (U(-1, 1)) or ``rademacher`` (+-1), made by Philox4x32-10 from the
    counter (block, offset + i, compartment, step) and the key ``seed`` (see :mod:`rbdlib.philox`).
    ``offset`` shifts the direction indices: workers drawing independent bases use
    ``offset = rank * dim``. The default ``scale`` is ``1 / sqrt(size)``, so a normal direction
    has norm close to 1; the optimizers pass ``1 / sqrt(D)`` of the whole network instead.
    ``size`` is at most :data:`rbdlib.philox.MAX_SIZE` (a longer direction would repeat itself), for every backend.

    >>> b = RandomBases(seed=0, step=3, compartment=0, dim=4, size=10)
    >>> g = torch.arange(10.0)
    >>> c = b.project(g)                 # c_i = <phi_i, g>
    >>> torch.allclose(c, b.materialize() @ g)
    True
    >>> b.expand(c).shape                # sum_i c_i phi_i
    torch.Size([10])
    """

    def __init__(self, seed: int, step: int, compartment: int, dim: int, size: int,
                 distribution: str = "normal", scale: float | None = None, offset: int = 0):
        self.seed = checks.index("seed", seed, ref.MAX_SEED)
        self.step = checks.index("step", step, ref.MAX_INDEX)
        self.compartment = checks.index("compartment", compartment, ref.MAX_INDEX)
        self.dim = checks.index("dim", dim, ref.MAX_INDEX)
        if checks.is_int(size) and size > ref.MAX_SIZE:
            raise ValueError(f"size must be at most 2**34 = {ref.MAX_SIZE} elements per compartment (the 32-bit block "
                             f"word of Philox counters), got {size}; split the parameters into compartments "
                             "(compartments=N)")
        self.size = checks.index("size", size, ref.MAX_SIZE)
        if self.dim < 1 or self.size < 1:
            raise ValueError(f"dim and size must be positive, got dim={dim}, size={size}")
        self.offset = checks.index("offset", offset, ref.MAX_INDEX + 1 - self.dim)
        self._dist = distributions.get(distribution).code
        self.distribution = distribution
        self.scale = checks.real("scale", 1.0 / math.sqrt(self.size) if scale is None else scale, low_open=True)
        self._key = ref.key_words(self.seed)

    def __repr__(self) -> str:
        return (f"RandomBases(seed={self.seed}, step={self.step}, compartment={self.compartment}, "
                f"dim={self.dim}, size={self.size}, distribution={self.distribution!r}, "
                f"scale={self.scale:.6g}, offset={self.offset})")

    # ------------------------------------------------------------------ checks
    def _check(self, name: str, x, length: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {x.dtype}; convert with {name}.float()")
        if x.shape != (length,):
            raise ValueError(f"{name} must have shape ({length},) for this basis, got {tuple(x.shape)}")
        if x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{name} is on {x.device}; rbdlib supports cpu and cuda tensors")
        if x.device.type == "cuda" and not cuda.available():
            raise RuntimeError(f"{name} is on {x.device} but CuPy cannot use the GPU; "
                               "install the extra: pip install 'rbdlib[gpu]'")
        if x.is_sparse or x.is_complex():
            raise TypeError(f"{name} must be a dense real tensor")
        return x.detach().contiguous()

    def _args(self):
        return (self._dist, *self._key, self.step, self.compartment, self.offset, self.scale)

    # ------------------------------------------------------------------ the three operations
    def project(self, g: torch.Tensor) -> torch.Tensor:
        """Coordinates ``c_i = <phi_i, g>`` of a float32 vector of length ``size``: shape (dim,)."""
        g = self._check("g", g, self.size)
        if g.is_cuda:
            return cuda.project(g, self.dim, *self._args())
        out = np.empty(self.dim, np.float64)
        dist, k0, k1, step, comp, offset, scale = self._args()
        cpu.project(g.numpy(), self.dim, dist, np.uint64(k0), np.uint64(k1), step, comp, offset, scale, out)
        return torch.from_numpy(out.astype(np.float32))

    def expand(self, c: torch.Tensor) -> torch.Tensor:
        """The vector ``sum_i c_i phi_i`` for coordinates of shape (dim,): shape (size,)."""
        c = self._check("c", c, self.dim)
        if c.is_cuda:
            return cuda.expand(c, self.size, *self._args())
        out = torch.empty(self.size, dtype=torch.float32)
        dist, k0, k1, step, comp, offset, scale = self._args()
        cpu.expand(c.numpy(), self.size, dist, np.uint64(k0), np.uint64(k1), step, comp, offset, scale,
                   out.numpy())
        return out

    def materialize(self, rows=None, device=None) -> torch.Tensor:
        """Explicit scaled directions as a (len(rows), size) float32 matrix; for teaching and tests.

        ``rows`` is None (all), an int, a slice or a sequence of direction indices in [0, dim).
        This allocates the matrix it returns: 4 * len(rows) * size bytes.
        """
        if rows is None:
            rows = np.arange(self.dim)
        elif isinstance(rows, slice):
            rows = np.arange(self.dim)[rows]
        else:  # ints and sequences: integer indices in [0, dim), no wrap-around, no bool masks
            given = rows
            if isinstance(rows, torch.Tensor):
                rows = rows.detach().cpu().numpy()
            rows = np.asarray(rows)
            if rows.ndim > 1:
                raise ValueError(f"rows must be an int, a slice or a 1-D sequence, got shape {rows.shape}")
            if rows.size and (rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer)):
                raise TypeError(f"rows must be integer direction indices, got {given!r} ({rows.dtype})")
            rows = rows.reshape(-1).astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= self.dim):
                raise IndexError(f"rows {given!r} out of range for dim={self.dim}")
        rows = np.asarray(rows, dtype=np.int64) + self.offset
        device = torch.device(device or "cpu")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"materialize: device {device} is not supported; use cpu or cuda")
        if device.type == "cuda" and not cuda.available():
            raise RuntimeError(f"materialize(device={str(device)!r}) needs CuPy and a CUDA GPU, which "
                               "cannot be used here; install the extra: pip install 'rbdlib[gpu]'")
        if device.type == "cuda":
            out = cuda.materialize(torch.from_numpy(rows), self.size, self._dist, *self._key, self.step,
                                   self.compartment, device)
            return out * self.scale
        out = np.empty((rows.size, self.size), np.float32)
        cpu.materialize(rows, self.size, self._dist, np.uint64(self._key[0]), np.uint64(self._key[1]),
                        self.step, self.compartment, out)
        return torch.from_numpy(out) * self.scale


def philox4x32(counter, key):
    """The Philox4x32-10 block function on uint32 arrays (..., 4) and (..., 2) -> (..., 4).

    NumPy arrays use the reference implementation; CUDA tensors (int64 holding uint32 values)
    use the GPU kernel, so the two can be compared word for word.

    >>> philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))
    array([1713891541, 3781805453, 3159862348, 2600524760], dtype=uint32)
    """
    if isinstance(counter, torch.Tensor) and counter.is_cuda:
        key = [int(k) for k in np.asarray(key, dtype=np.uint32).reshape(2)]
        return cuda.philox_words(counter.reshape(-1, 4), *key).reshape(counter.shape)
    return ref.philox4x32(counter, key)
