"""Philox4x32-10 and the address of every basis element: the NumPy reference.

A random basis in rbdlib is a pure function. Element ``j`` of direction ``i`` of the basis of
compartment ``k`` at step ``t`` under the 64-bit seed ``s`` is

    phi[s, t, k, i][j] = scale * transform(philox4x32(counter, key))

with the Random123 block function Philox4x32-10 (cuRAND's ``Philox4_32_10``) and

    counter = (block, i, k, t)       four 32-bit words
    key     = (s mod 2**32, s >> 32) two 32-bit words
    block   = j // 4   for "normal" and "uniform" (one call gives four elements),
              j // 128 for "rademacher"          (one call gives 128 sign bits).

Nothing here depends on chunk sizes, threads or devices, so every backend (this module, the
compiled CPU kernel, the CUDA kernel) produces the same 32-bit words. The block word has 32 bits, so a
direction holds at most ``MAX_SIZE = 2**34`` elements (``RandomBases`` refuses longer ones): past that
the counter would wrap and the direction repeat itself.

The transforms use only operations that IEEE 754 rounds exactly the same way everywhere
(integer arithmetic, float32 ``+ - * /`` and ``sqrt``, no fused multiply-add), with our own
polynomial ``log`` and ``sincos``, so the compiled CPU kernel reproduces this reference bit for bit.

>>> import numpy as np
>>> philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))  # Random123 known answer
array([1713891541, 3781805453, 3159862348, 2600524760], dtype=uint32)
>>> elements(seed=0, step=0, compartment=0, direction=0, start=0, count=3, distribution="rademacher")
array([ 1., -1.,  1.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from .distributions import ALL, NAMES

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
MASK32 = 0xFFFFFFFF
ROUNDS = 10

#: the distributions' names, and per name the elements of one Philox call (views of :mod:`rbdlib.distributions`)
DISTRIBUTIONS = NAMES
ELEMENTS_PER_BLOCK = {d.name: d.per_block for d in ALL}

MAX_SEED = 2**64 - 1
MAX_INDEX = 2**32 - 1  # step, compartment, direction and block are 32-bit counter words
MAX_SIZE = 2**34  # elements of one direction: 2**32 blocks of four (normal, uniform), so the block word never wraps

# float32 constants of the transforms; the compiled kernels read them through rbdlib.kernels.constants
LN2 = np.float32(0.6931471805599453)
SQRT2 = np.float32(1.4142135623730951)
HALF_PI = np.float32(1.5707963267948966)
TWO_POW_M22 = np.float32(2.0**-22)
TWO_POW_M23 = np.float32(2.0**-23)
TWO_POW_M24 = np.float32(2.0**-24)
# polynomial coefficients, highest power first (Horner): log m = 2 s (1 + z/3 + z^2/5 + ...), z = s^2 (atanh
# series), and the Taylor series of sin x / x and cos x in z = x^2
LOG_SERIES = (1 / 9, 1 / 7, 1 / 5, 1 / 3, 1.0)
SIN_SERIES = (1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1.0)
COS_SERIES = (-1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -1 / 2, 1.0)


def philox4x32(counter, key, rounds: int = ROUNDS) -> np.ndarray:
    """The Philox4x32 block function (Salmon et al. 2011, Random123), vectorized over leading axes.

    ``counter`` has shape (..., 4) and ``key`` shape (..., 2), both uint32 (they broadcast).
    Returns uint32 words of shape (..., 4).

    >>> philox4x32(np.full(4, 0xFFFFFFFF, np.uint32), np.full(2, 0xFFFFFFFF, np.uint32))
    array([1083123565, 1103641358, 2718681030, 1834242557], dtype=uint32)
    """
    counter, key = np.asarray(counter), np.asarray(key)
    if counter.shape[-1:] != (4,) or key.shape[-1:] != (2,):
        raise ValueError(
            f"philox4x32 expects counter (..., 4) and key (..., 2); got {counter.shape} and {key.shape}"
        )
    if counter.dtype != np.uint32 or key.dtype != np.uint32:
        raise TypeError(f"philox4x32 expects uint32 arrays; got {counter.dtype} and {key.dtype}")
    c = [counter[..., n].astype(np.uint64) for n in range(4)]
    k0, k1 = key[..., 0].astype(np.uint64), key[..., 1].astype(np.uint64)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        p0, p1 = c[0] * PHILOX_M0, c[2] * PHILOX_M1  # exact 64-bit products of 32-bit words
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & MASK32, (p0 >> 32) ^ c[3] ^ k1, p0 & MASK32]
    return np.stack(c, axis=-1).astype(np.uint32)


def key_words(seed: int) -> tuple[int, int]:
    """The Philox key of a 64-bit seed as two 32-bit words: (low word, high word).

    >>> key_words(2**32 + 5)
    (5, 1)
    """
    return seed & MASK32, seed >> 32


def key_of(seed: int) -> np.ndarray:
    """:func:`key_words` as a uint32 array of shape (2,)."""
    return np.array(key_words(seed), dtype=np.uint32)


def words(seed: int, step: int, compartment: int, direction: int, blocks) -> np.ndarray:
    """The four 32-bit words of each counter block of one direction: shape (len(blocks), 4)."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    counter = np.empty(blocks.shape + (4,), np.uint32)
    counter[..., 0] = blocks
    counter[..., 1], counter[..., 2], counter[..., 3] = direction, compartment, step
    return philox4x32(counter, key_of(seed))


# ---------------------------------------------------------------- transforms (float32, exact ops)
def uniform_from_words(w: np.ndarray) -> np.ndarray:
    """U(-1, 1) from the top 24 bits: (2 m + 1 - 2**24) / 2**24, exact in float32 and symmetric."""
    m = (w >> np.uint32(8)).astype(np.int64)
    return ((2 * m + 1 - 2**24).astype(np.float32) * TWO_POW_M24).astype(np.float32)


def _log_unit(n: np.ndarray) -> np.ndarray:
    """log(n / 2**24) in float32 for integers n in [1, 2**24], by normalisation and atanh series."""
    n = n.astype(np.int64)
    shift = np.zeros_like(n)
    for s in (16, 8, 4, 2, 1):  # branch-free count of leading zeros: afterwards n in [2**23, 2**24]
        small = n < (1 << (24 - s))
        n = np.where(small, n << s, n)
        shift = np.where(small, shift + s, shift)
    m = n.astype(np.float32) * TWO_POW_M23  # in [1, 2]
    big = m > SQRT2
    m = np.where(big, m * np.float32(0.5), m)  # in [sqrt(1/2), sqrt(2)]
    e = (np.where(big, 1, 0) - 1 - shift).astype(np.float32)
    f = m - np.float32(1)
    s = f / (np.float32(2) + f)  # log m = 2 atanh(s), |s| < 0.172
    z = s * s
    p = np.float32(LOG_SERIES[0])
    for coef in LOG_SERIES[1:]:
        p = p * z + np.float32(coef)
    return (np.float32(2) * s * p + e * LN2).astype(np.float32)


def _sincos_quarter(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of x in [0, pi/4] by Taylor polynomials (error < 2e-9 before rounding)."""
    z = x * x
    s = np.float32(SIN_SERIES[0])
    for coef in SIN_SERIES[1:]:
        s = s * z + np.float32(coef)
    c = np.float32(COS_SERIES[0])
    for coef in COS_SERIES[1:]:
        c = c * z + np.float32(coef)
    return (x * s).astype(np.float32), c.astype(np.float32)


def _sincos_turn(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of 2 pi k / 2**24 for integers k in [0, 2**24): quadrant, octant, polynomial."""
    k = k.astype(np.int64)
    quadrant, r = k >> 22, k & (2**22 - 1)
    upper = r > 2**21  # fold the upper half of the quadrant onto [0, pi/4] and swap sin/cos
    x = np.where(upper, 2**22 - r, r).astype(np.float32) * TWO_POW_M22 * HALF_PI
    s, c = _sincos_quarter(x)
    s, c = np.where(upper, c, s), np.where(upper, s, c)  # sin and cos of the angle in the quadrant
    sin = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cos = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    return sin.astype(np.float32), cos.astype(np.float32)


def normal_from_words(w: np.ndarray) -> np.ndarray:
    """Box-Muller: words (a, b) -> (r cos t, r sin t), r = sqrt(-2 log u), u in (0, 1], t in [0, 2 pi).

    Words 0, 1 of a block give elements 0, 1; words 2, 3 give elements 2, 3.
    """
    a, b = w[..., 0::2], w[..., 1::2]
    radius = np.sqrt(np.float32(-2) * _log_unit((a >> np.uint32(8)).astype(np.int64) + 1))
    sin, cos = _sincos_turn(b >> np.uint32(8))
    out = np.empty(w.shape, np.float32)
    out[..., 0::2], out[..., 1::2] = radius * cos, radius * sin
    return out


def rademacher_from_words(w: np.ndarray) -> np.ndarray:
    """+1 where bit (e % 32) of word (e // 32) is set, else -1: 128 elements per block."""
    bits = (w[..., :, None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)
    return (bits.reshape(w.shape[:-1] + (128,)).astype(np.float32) * np.float32(2) - np.float32(1))


TRANSFORMS = {"normal": normal_from_words, "uniform": uniform_from_words, "rademacher": rademacher_from_words}
assert set(TRANSFORMS) == set(NAMES), "every declared distribution has its reference transform"


def elements(seed: int, step: int, compartment: int, direction: int, start: int, count: int,
             distribution: str = "normal") -> np.ndarray:
    """Unscaled elements ``start .. start+count-1`` of one direction, float32: the reference.

    >>> elements(0, 0, 0, 0, 0, 4, "normal").round(4)
    array([ 0.9911, -0.9247, -0.6176, -0.4821], dtype=float32)
    """
    per = ELEMENTS_PER_BLOCK[distribution]
    first, last = start // per, (start + count - 1) // per
    w = words(seed, step, compartment, direction, np.arange(first, last + 1))
    flat = TRANSFORMS[distribution](w).reshape(-1)
    return flat[start - first * per: start - first * per + count]
