"""Fused CPU kernels (Numba): generate basis elements tile by tile and use them at once.

``project``: c_i = scale * sum_j z_i[j] g[j]        (tasks: ranges of tiles, all directions)
``expand`` : delta[j] = scale * sum_i c_i z_i[j]    (tasks: ranges of tiles, all directions)

Every element is made from its address (see :mod:`rbdlib.philox`) inside a tile of ``TILE``
elements that lives in L1 cache; no ``dim x size`` matrix ever exists. Extra memory is
``size`` floats for the output plus ``dim x ceil(size / TILE)`` float64 partial sums.

The reduction order is fixed by the tiling, not by the thread count or the work split:
``project`` sums each tile (vectorized, in an order the compiler fixes for this machine; for
Rademacher in 32 explicit lanes) and then adds the tile sums pairwise (NumPy); ``expand`` adds
directions in index order for each element. So results are bit-identical for any number of
threads on the same machine.

Rademacher signs are never written out as floats: a direction's tile is 64 Philox words, and
element e takes the sign of bit e % 32 of word e // 32: x or -x chosen by a bit test (exact), in
32-bit SIMD lanes. Normal elements keep the top 24 bits of each word as int32 (AVX2 has no int64-to-float
conversion, which would keep the transforms scalar) and take the logarithm's exponent and mantissa from the
bits of a float32, with no loop or branch. +-1 kernels and dense (normal, uniform) kernels are separate
functions, so each compiles only what it uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

from .. import philox as ref

TILE = 2048  # elements per tile: a multiple of 128 (one Rademacher block) and small enough for L1
FLUSH = 64  # expand adds this many directions in float32 before moving the sum to float64
NORMAL, UNIFORM, RADEMACHER = 0, 1, 2
CODES = {"normal": NORMAL, "uniform": UNIFORM, "rademacher": RADEMACHER}

# Numba promotes mixed signed/unsigned integers to float64, so every constant is typed explicitly.
_U = np.uint64
_M0, _M1, _W0, _W1 = _U(ref.PHILOX_M0), _U(ref.PHILOX_M1), _U(ref.PHILOX_W0), _U(ref.PHILOX_W1)
_MASK, _S32, _S8 = _U(ref.MASK32), _U(32), _U(8)
_F = np.float32
_ONE, _TWO, _HALF, _MTWO = _F(1), _F(2), _F(0.5), _F(-2)
_LN2, _SQRT2, _HALF_PI = ref.LN2, ref.SQRT2, ref.HALF_PI
_P22, _P23, _P24 = ref.TWO_POW_M22, ref.TWO_POW_M23, ref.TWO_POW_M24
_L9, _L7, _L5, _L3 = _F(1 / 9), _F(1 / 7), _F(1 / 5), _F(1 / 3)
_S9, _S7, _S5, _S3 = _F(1 / 362880), _F(-1 / 5040), _F(1 / 120), _F(-1 / 6)
_C10, _C8, _C6, _C4, _C2 = _F(-1 / 3628800), _F(1 / 40320), _F(-1 / 720), _F(1 / 24), _F(-1 / 2)

_jit = dict(nogil=True, cache=True, error_model="numpy")


@njit(inline="always", **_jit)
def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 scalars holding 32-bit words (see rbdlib.philox.philox4x32)."""
    for _ in range(ref.ROUNDS):
        p0, p1 = c0 * _M0, c2 * _M1
        c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ c3 ^ k1, p0 & _MASK
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@njit(inline="always", **_jit)
def _uniform(w):
    return _F(np.int32(np.int64(w >> _S8) * 2 + 1 - (1 << 24))) * _P24


@njit(inline="always", **_jit)
def _top24(w):
    """The top 24 bits of a Philox word as int32, so that the transforms run in 32-bit SIMD lanes."""
    return np.int32(w >> _S8)


_MANTISSA, _EXP_ONE, _EXP_BIAS = np.int32(0x7FFFFF), np.int32(0x3F800000), np.int32(127 + 24)


@njit(inline="always", **_jit)
def _radius(k):
    """sqrt(-2 log u), u = (k + 1) / 2**24 for k = _top24(w); same values as philox._log_unit.

    philox._log_unit normalises n = k + 1 into [2**23, 2**24) by integer shifts; here the same mantissa m in
    [1, 2) and exponent come from the bits of float32(n), which is exact (n <= 2**24): no loop, no branch."""
    bits = _F(k + 1).view(np.int32)
    m = np.int32((bits & _MANTISSA) | _EXP_ONE).view(np.float32)
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = _F(np.int32((bits >> 23) - _EXP_BIAS) + np.int32(big))
    f = m - _ONE
    s = f / (_TWO + f)
    z = s * s
    p = (((_L9 * z + _L7) * z + _L5) * z + _L3) * z + _ONE
    return np.sqrt(_MTWO * (_TWO * s * p + e * _LN2))


_LOW22 = np.int32((1 << 22) - 1)


@njit(inline="always", **_jit)
def _sincos(k):
    """sin and cos of 2 pi k / 2**24 for k = _top24(w); same values as philox._sincos_turn (integer quadrant
    and remainder, then float32 polynomials)."""
    quadrant = k >> 22
    r = np.int32(k & _LOW22)
    upper = r > (1 << 21)
    x = _F(np.int32((1 << 22) - r) if upper else r) * _P22 * _HALF_PI
    z = x * x
    s = x * ((((_S9 * z + _S7) * z + _S5) * z + _S3) * z + _ONE)
    c = ((((_C10 * z + _C8) * z + _C6) * z + _C4) * z + _C2) * z + _ONE
    s, c = (c, s) if upper else (s, c)
    # rotate by quadrant * pi/2 with selects and exact sign flips (branch-free, so it vectorizes)
    odd = (quadrant & 1) == 1
    sin, cos = (c if odd else s), (s if odd else c)
    return (-sin if quadrant >= 2 else sin), (-cos if quadrant == 1 or quadrant == 2 else cos)


@njit(inline="always", **_jit)
def _sign(word, e):
    """+1.0 where bit e of word is set, else -1.0 (integer arithmetic, so it stays in SIMD lanes)."""
    return _F(np.int32(((word >> e) & 1) * 2 - 1))


# BIT[e] = 1 << e as int32: "word & BIT[e]" tests bit e of an int32 word in 32-bit SIMD lanes (a shift by the
# lane index would widen to 64-bit lanes), and "x if test else -x" is a select there: 2-3x faster than
# multiplying by _sign, with the same values (x * +-1 is exact).
BIT = np.array([1 << e for e in range(31)] + [-(1 << 31)], np.int32)


@njit(inline="always", **_jit)
def _words(bits, block0, nblocks, i, k, t, k0, k1):
    """Rademacher: the 4 Philox words of each block (128 signs, bit e of word q = element 32 q + e) into bits."""
    for b in range(nblocks):
        w0, w1, w2, w3 = philox(_U(block0 + b), _U(i), _U(k), _U(t), k0, k1)
        bits[4 * b], bits[4 * b + 1], bits[4 * b + 2], bits[4 * b + 3] = w0, w1, w2, w3


@njit(**_jit)
def fill(buf, dist, block0, nblocks, i, k, t, k0, k1):
    """Unscaled elements of blocks block0 .. block0+nblocks-1 of direction i into buf (float32)."""
    i, k, t = _U(i), _U(k), _U(t)
    if dist == RADEMACHER:
        for b in range(nblocks):
            w0, w1, w2, w3 = philox(_U(block0 + b), i, k, t, k0, k1)
            for q, word in enumerate((w0, w1, w2, w3)):
                word = np.int64(word)
                for e in range(32):
                    buf[128 * b + 32 * q + e] = _sign(word, e)
    elif dist == UNIFORM:
        for b in range(nblocks):
            w0, w1, w2, w3 = philox(_U(block0 + b), i, k, t, k0, k1)
            buf[4 * b], buf[4 * b + 1] = _uniform(w0), _uniform(w1)
            buf[4 * b + 2], buf[4 * b + 3] = _uniform(w2), _uniform(w3)
    else:  # two passes, so that the 32-bit transform is not held to the 64-bit lanes of Philox
        top = buf.view(np.int32)
        for b in range(nblocks):
            w0, w1, w2, w3 = philox(_U(block0 + b), i, k, t, k0, k1)
            top[4 * b], top[4 * b + 1], top[4 * b + 2], top[4 * b + 3] = _top24(w0), _top24(w1), _top24(w2), _top24(w3)
        for p in range(2 * nblocks):  # a pair of elements from a pair of words: (radius, angle)
            r = _radius(top[2 * p])
            s, c = _sincos(top[2 * p + 1])
            buf[2 * p], buf[2 * p + 1] = r * c, r * s


@njit(**_jit)
def _signed_dot(bits, g, j0, n, lanes):
    """sum_e s_e g[j0 + e] over one tile, s_e = +-1 from bit e of bits: exact sign flips added into
    32 float32 lanes (lane e takes elements e, e + 32, ...), then the lanes added in order in float64."""
    tile = g[j0:j0 + n]
    words = bits.view(np.int32)
    lanes[:] = 0
    full = n // 32
    for w in range(full):
        word = words[w]
        for e in range(32):
            x = tile[32 * w + e]
            lanes[e] += x if word & BIT[e] else -x
    if n > 32 * full:  # the last tile's partial word
        word = words[full]
        for e in range(n - 32 * full):
            x = tile[32 * full + e]
            lanes[e] += x if word & BIT[e] else -x
    acc = 0.0
    for e in range(32):
        acc += lanes[e]
    return acc


@njit(fastmath={"reassoc", "contract"}, **_jit)
def _dot(buf, g, j0, n):
    """Sum of one tile in float32 SIMD lanes (the order is fixed per machine by the compiler)."""
    tile = g[j0:j0 + n]  # a slice, not g[j0 + e]: possibly-negative indices would block SIMD
    acc = _F(0)
    for e in range(n):
        acc += buf[e] * tile[e]
    return np.float64(acc)


# Each kernel comes in two forms, for +-1 signs (bits, never floats) and for dense elements (fill), so that a
# first +-1 step does not compile the normal and uniform transforms (a new process starts sooner).
@njit(**_jit)
def _project_signs(g, dim, seed0, seed1, step, compartment, offset, partial, tile0, tile1):
    """partial[i, tile] = <z_{offset+i}, g> over one tile of +-1 signs, for every direction, tiles tile0 .. tile1-1."""
    size = g.shape[0]
    bits = np.empty(TILE // 32, np.uint32)
    lanes = np.empty(32, np.float32)
    for tile in range(tile0, tile1):
        j0 = tile * TILE
        n = min(TILE, size - j0)
        for i in range(dim):
            _words(bits, j0 // 128, (n + 127) // 128, offset + i, compartment, step, seed0, seed1)
            partial[i, tile] = _signed_dot(bits, g, j0, n, lanes)


@njit(**_jit)
def _project_dense(g, dim, dist, seed0, seed1, step, compartment, offset, partial, tile0, tile1):
    """The same for normal or uniform elements, made tile by tile into buf."""
    size = g.shape[0]
    buf = np.empty(TILE, np.float32)
    for tile in range(tile0, tile1):
        j0 = tile * TILE
        n = min(TILE, size - j0)
        for i in range(dim):
            fill(buf, dist, j0 // 4, (n + 3) // 4, offset + i, compartment, step, seed0, seed1)
            partial[i, tile] = _dot(buf, g, j0, n)


@njit(inline="always", **_jit)
def _flush(acc, total, n):
    for e in range(n):
        total[e] += acc[e]
        acc[e] = 0


@njit(inline="always", **_jit)
def _store(total, out, j0, n, scale):
    dst = out[j0:j0 + n]
    for e in range(n):
        dst[e] = total[e] * scale


@njit(**_jit)
def _expand_signs(c, size, seed0, seed1, step, compartment, offset, scale, out, tile0, tile1):
    """out[j] = scale * sum_i c[i] z_{offset+i}[j] for j in tiles tile0 .. tile1-1, +-1 signs: acc += +-c_i."""
    dim = c.shape[0]
    bits = np.empty(TILE // 32, np.uint32)
    words = bits.view(np.int32)
    acc = np.empty(TILE, np.float32)  # float32 sums over at most FLUSH directions,
    total = np.empty(TILE, np.float64)  # then float64 across those groups
    for tile in range(tile0, tile1):
        j0 = tile * TILE
        n = min(TILE, size - j0)
        nblocks = (n + 127) // 128
        acc[:] = 0
        total[:] = 0
        for i in range(dim):
            ci = np.float32(c[i])
            neg = -ci
            _words(bits, j0 // 128, nblocks, offset + i, compartment, step, seed0, seed1)
            for w in range(4 * nblocks):  # whole words: past n only pads the tile
                word = words[w]
                for e in range(32):
                    acc[32 * w + e] += ci if word & BIT[e] else neg
            if (i + 1) % FLUSH == 0 or i == dim - 1:
                _flush(acc, total, n)
        _store(total, out, j0, n, scale)


@njit(**_jit)
def _expand_dense(c, size, dist, seed0, seed1, step, compartment, offset, scale, out, tile0, tile1):
    """The same for normal or uniform elements: acc += c_i * z_i."""
    dim = c.shape[0]
    buf = np.empty(TILE, np.float32)
    acc = np.empty(TILE, np.float32)
    total = np.empty(TILE, np.float64)
    for tile in range(tile0, tile1):
        j0 = tile * TILE
        n = min(TILE, size - j0)
        acc[:] = 0
        total[:] = 0
        for i in range(dim):
            ci = np.float32(c[i])
            fill(buf, dist, j0 // 4, (n + 3) // 4, offset + i, compartment, step, seed0, seed1)
            for e in range(n):
                acc[e] += ci * buf[e]
            if (i + 1) % FLUSH == 0 or i == dim - 1:
                _flush(acc, total, n)
        _store(total, out, j0, n, scale)


@njit(**_jit)
def _materialize_rows(rows, size, dist, seed0, seed1, step, compartment, out, row0, row1):
    per = 128 if dist == RADEMACHER else 4
    nblocks = (size + per - 1) // per
    buf = np.empty(nblocks * per, np.float32)
    for r in range(row0, row1):
        fill(buf, dist, 0, nblocks, rows[r], compartment, step, seed0, seed1)
        out[r, :] = buf[:size]


# ---------------------------------------------------------------- threads
# The kernels above are serial and release the GIL. Parallel work is a list of tasks (ranges of
# tiles or rows) that the calling thread and a few pool threads take in turn from one counter, so
# a thread that the OS holds back (another process, torch's own workers) just takes fewer tasks.
# Idle pool threads sleep on a lock; nothing spins. The thread count is torch's, read at every
# call: ``torch.set_num_threads(n)`` is the one knob for torch and these kernels alike.
MIN_WORK = 1 << 20  # basis elements per thread at least (about 0.1-5 ms); smaller calls use fewer threads
TASKS_PER_THREAD = 4  # more tasks than threads, so that a held-back thread does not hold the call
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def threads() -> int:
    """The number of threads the kernels use: torch's intra-op thread count."""
    return max(1, torch.get_num_threads())


def _parallel(kernel, ntasks: int, work: int, args: tuple) -> None:
    """Run ``kernel(*args, start, stop)`` over [0, ntasks) in chunks, on up to threads() threads."""
    global _pool, _pool_pid
    n = min(threads(), ntasks, max(1, work // MIN_WORK))
    if n <= 1:
        kernel(*args, 0, ntasks)
        return
    step = -(-ntasks // (n * TASKS_PER_THREAD))
    starts = iter(range(0, ntasks, step))  # next() on a range iterator is atomic under the GIL

    def drain():
        for s in starts:
            kernel(*args, s, min(s + step, ntasks))

    if _pool is None or _pool._max_workers < n - 1 or _pool_pid != os.getpid():  # a forked child has no threads
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False)
        _pool, _pool_pid = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="rbdlib"), os.getpid()
    helpers = [_pool.submit(drain) for _ in range(n - 1)]
    drain()
    for h in helpers:
        h.result()


def project(g, dim, dist, seed0, seed1, step, compartment, offset, scale, out):
    """out[i] = scale * <z_{offset+i}, g> for i < dim (float64)."""
    ntiles = (g.shape[0] + TILE - 1) // TILE
    partial = np.empty((dim, ntiles), np.float64)
    if dist == RADEMACHER:
        kernel, args = _project_signs, (g, dim, seed0, seed1, step, compartment, offset, partial)
    else:
        kernel, args = _project_dense, (g, dim, dist, seed0, seed1, step, compartment, offset, partial)
    _parallel(kernel, ntiles, dim * g.shape[0], args)
    np.multiply(partial.sum(axis=1), scale, out=out)  # tile sums added pairwise (NumPy), in float64


def expand(c, size, dist, seed0, seed1, step, compartment, offset, scale, out):
    """out[j] = scale * sum_i c[i] z_{offset+i}[j] for j < size (float32 output, float64 sums)."""
    if dist == RADEMACHER:
        kernel, args = _expand_signs, (c, size, seed0, seed1, step, compartment, offset, scale, out)
    else:
        kernel, args = _expand_dense, (c, size, dist, seed0, seed1, step, compartment, offset, scale, out)
    _parallel(kernel, (size + TILE - 1) // TILE, c.shape[0] * size, args)


def materialize(rows, size, dist, seed0, seed1, step, compartment, out):
    """out[r, :] = unscaled direction rows[r] (float32); for teaching and tests."""
    _parallel(_materialize_rows, rows.shape[0], rows.shape[0] * size,
              (rows, size, dist, seed0, seed1, step, compartment, out))


def set_threads(n: int | None) -> int:
    """Set torch's thread count, which the kernels follow (None: all cores); returns the previous value.

    The same as ``torch.set_num_threads(n)``, kept for code written against earlier versions."""
    previous = torch.get_num_threads()
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(n)
    return previous
