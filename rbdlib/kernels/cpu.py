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

import ctypes
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from .. import philox as ref
from .constants import (
    C2,
    C4,
    C6,
    C8,
    C10,
    FLUSH,
    HALF_PI,
    L3,
    L5,
    L7,
    L9,
    LN2,
    P22,
    P24,
    PER_BLOCK,
    RADEMACHER,
    S3,
    S5,
    S7,
    S9,
    SQRT2,
    UNIFORM,
)

TILE = 2048  # elements per tile: a multiple of 128 (one Rademacher block) and small enough for L1

# Numba promotes mixed signed/unsigned integers to float64, so every constant is typed explicitly.
_U = np.uint64
_M0, _M1, _W0, _W1 = _U(ref.PHILOX_M0), _U(ref.PHILOX_M1), _U(ref.PHILOX_W0), _U(ref.PHILOX_W1)
_MASK, _S32, _S8 = _U(ref.MASK32), _U(32), _U(8)
_F = np.float32
_ONE, _TWO, _HALF, _MTWO = _F(1), _F(2), _F(0.5), _F(-2)

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
    return _F(np.int32(np.int64(w >> _S8) * 2 + 1 - (1 << 24))) * P24


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
    big = m > SQRT2
    m = m * _HALF if big else m
    e = _F(np.int32((bits >> 23) - _EXP_BIAS) + np.int32(big))
    f = m - _ONE
    s = f / (_TWO + f)
    z = s * s
    p = (((L9 * z + L7) * z + L5) * z + L3) * z + _ONE
    return np.sqrt(_MTWO * (_TWO * s * p + e * LN2))


_LOW22 = np.int32((1 << 22) - 1)


@njit(inline="always", **_jit)
def _sincos(k):
    """sin and cos of 2 pi k / 2**24 for k = _top24(w); same values as philox._sincos_turn (integer quadrant
    and remainder, then float32 polynomials)."""
    quadrant = k >> 22
    r = np.int32(k & _LOW22)
    upper = r > (1 << 21)
    x = _F(np.int32((1 << 22) - r) if upper else r) * P22 * HALF_PI
    z = x * x
    s = x * ((((S9 * z + S7) * z + S5) * z + S3) * z + _ONE)
    c = ((((C10 * z + C8) * z + C6) * z + C4) * z + C2) * z + _ONE
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
    per = PER_BLOCK[dist]
    nblocks = (size + per - 1) // per
    buf = np.empty(nblocks * per, np.float32)
    for r in range(row0, row1):
        fill(buf, dist, 0, nblocks, rows[r], compartment, step, seed0, seed1)
        out[r, :] = buf[:size]


# ---------------------------------------------------------------- torch's OpenMP team
# Where torch runs on GNU OpenMP (its Linux builds), the kernels' tasks run on torch's own OpenMP team,
# so that one pool of threads owns the cores whichever of torch and rbdlib is imported first.
#
# torch's idle OpenMP threads spin for a few milliseconds after each operation, waiting for the next (unless
# OMP_WAIT_POLICY=PASSIVE was set before torch was loaded; an import cannot change it afterwards). A second
# pool of threads for the kernels competed with them for the cores: on a busy 2-core machine an RBD step
# with +-1 bases took 1.7x as long (up to 27x with two busy processes). Given to torch's team instead, the
# tasks are picked up by the spinning threads at once.
#
# How: ``GOMP_parallel`` (what compiled ``#pragma omp parallel`` code calls) starts a team on torch's
# runtime with a Numba ``cfunc`` as its body. The body takes tasks one at a time from libgomp's dynamic
# loop (``GOMP_loop_dynamic_start``/``_next``), so a thread the OS holds back delays the team by one
# task at most. A task is the same serial kernel call as on the fallback pool and writes its own part of
# the output, so results are bit-identical for any thread count and either executor.
#
# Elsewhere (macOS, Windows, torch built without GNU OpenMP) and with RBDLIB_OPENMP=0, the pool below
# runs the tasks. The bodies live in this file, beside the kernels they call, so that Numba's disk cache
# of them is invalidated whenever the kernels change.
_omp_jit = dict(cache=True, nogil=True)


def _runtime_path() -> str | None:
    """The GNU OpenMP runtime torch has loaded: the one in torch's folder, or the only one loaded."""
    if sys.platform != "linux" or "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            loaded = {line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    mine = [p for p in loaded if p.startswith(os.path.dirname(torch.__file__))]
    return (mine or sorted(loaded))[0] if len(mine) == 1 or len(loaded) == 1 else None


@functools.cache
def _gomp():
    """(GOMP_parallel, and the addresses of the dynamic loop's three calls) in torch's runtime, or None."""
    path = _runtime_path()
    if path is None:
        return None
    lib = ctypes.CDLL(path)  # already loaded by torch: the same runtime, not a second copy
    lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.GOMP_parallel.restype = None
    loop = [ctypes.cast(getattr(lib, f"GOMP_loop_{name}"), ctypes.c_void_p).value
            for name in ("dynamic_start", "dynamic_next", "end_nowait")]
    return lib.GOMP_parallel, loop


_forked = False  # GNU OpenMP cannot start a team in a child forked after its parent used one: it hangs


def _after_fork_in_child():
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def openmp_available() -> bool:
    """True when the kernels run on torch's OpenMP team (Linux, torch built with GNU OpenMP, not a forked
    child: libgomp hangs there, torch's own operations included, so the kernels use their pool).

    ``RBDLIB_OPENMP=0`` turns it off (the kernels then use their own pool), for comparisons."""
    return not _forked and os.environ.get("RBDLIB_OPENMP", "1") != "0" and _gomp() is not None


# Intrinsics: a typed pointer from an address, and calls of the loop's C functions through addresses
# taken from the frame (so that the compiled bodies hold no absolute address and can be cached on disk).
@intrinsic
def _pointer(typingctx, address, dtype):
    target = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):
        llvm_type = context.get_value_type(target)
        if isinstance(signature.args[0], types.Integer):
            return builder.inttoptr(args[0], llvm_type)
        return builder.bitcast(args[0], llvm_type)

    return target(address, dtype), codegen


_I64, _BOOL = ir.IntType(64), ir.IntType(8)


def _call(builder, address, result, params, values):
    function = builder.inttoptr(address, ir.FunctionType(result, params).as_pointer())
    return builder.call(function, values)


@intrinsic
def _loop_start(typingctx, address, ntasks, chunk, bounds):
    """GOMP_loop_dynamic_start(0, ntasks, 1, chunk, &bounds[0], &bounds[1]) != 0"""
    def codegen(context, builder, signature, args):
        address, ntasks, chunk, bounds = args
        lo = builder.inttoptr(bounds, _I64.as_pointer())
        hi = builder.gep(lo, [ir.Constant(_I64, 1)])
        r = _call(builder, address, _BOOL, [_I64] * 4 + [_I64.as_pointer()] * 2,
                  [ir.Constant(_I64, 0), ntasks, ir.Constant(_I64, 1), chunk, lo, hi])
        return builder.icmp_unsigned("!=", r, ir.Constant(_BOOL, 0))

    return types.boolean(types.int64, types.int64, types.int64, types.int64), codegen


@intrinsic
def _loop_next(typingctx, address, bounds):
    """GOMP_loop_dynamic_next(&bounds[0], &bounds[1]) != 0"""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[1], _I64.as_pointer())
        r = _call(builder, args[0], _BOOL, [_I64.as_pointer()] * 2, [ptr, builder.gep(ptr, [ir.Constant(_I64, 1)])])
        return builder.icmp_unsigned("!=", r, ir.Constant(_BOOL, 0))

    return types.boolean(types.int64, types.int64), codegen


@intrinsic
def _loop_end(typingctx, address):
    """GOMP_loop_end_nowait()"""
    def codegen(context, builder, signature, args):
        _call(builder, args[0], ir.VoidType(), [], [])
        return context.get_dummy_value()

    return types.none(types.int64), codegen


# A frame is one int64 array: [ntasks, chunk, three loop addresses, args...], an array argument as
# (address, rows, columns), a float as its bits, an int as itself. The bodies read the arguments by position.
HEADER = 5


def _pack(ntasks: int, chunk: int, args: tuple) -> np.ndarray:
    words = [ntasks, chunk, *_gomp()[1]]
    for a in args:
        if isinstance(a, np.ndarray):
            if not a.flags.c_contiguous:
                raise ValueError("_run_openmp: array arguments must be C-contiguous")
            words += [a.ctypes.data, a.shape[0], a.shape[1] if a.ndim == 2 else 1]
        elif isinstance(a, (float, np.floating)):
            words.append(int(np.float64(a).view(np.int64)))
        else:
            words.append(int(a))
    return np.array(words, np.int64)


@njit(**_omp_jit)
def _frame(data, size):
    return carray(_pointer(data, np.int64), size)


@njit(**_omp_jit)
def _vec(f, i, dtype):
    return carray(_pointer(f[i], dtype), f[i + 1])


@njit(**_omp_jit)
def _mat(f, i, dtype):
    return carray(_pointer(f[i], dtype), (f[i + 1], f[i + 2]))


@njit(**_omp_jit)
def _float(f, i):
    return carray(_pointer(f.ctypes.data, np.float64), f.size)[i]


@njit(**_omp_jit)
def _tasks(f, bounds, first):
    """The next range of tasks from libgomp's dynamic loop into ``bounds``; False when none is left."""
    if first:
        return _loop_start(f[2], f[0], f[1], bounds.ctypes.data)
    return _loop_next(f[3], bounds.ctypes.data)


# The bodies: one per kernel, its arguments as the kernel takes them. Each takes ranges of tasks until none
# is left, then leaves without waiting (the end of the team is the barrier). The kernel is named in each
# body rather than passed to a shared loop: a function passed as a value would keep the body off the cache.
_u, _f32, _f64 = np.uint64, np.float32, np.float64


def _body_project_signs(data):  # (g, dim, seed0, seed1, step, compartment, offset, partial)
    f, b = _frame(data, 17), np.empty(2, np.int64)
    g, partial, more = _vec(f, 5, _f32), _mat(f, 14, _f64), _tasks(f, b, True)
    while more:
        _project_signs(g, f[8], _u(f[9]), _u(f[10]), f[11], f[12], f[13], partial, b[0], b[1])
        more = _tasks(f, b, False)
    _loop_end(f[4])


def _body_project_dense(data):  # (g, dim, dist, seed0, seed1, step, compartment, offset, partial)
    f, b = _frame(data, 18), np.empty(2, np.int64)
    g, partial, more = _vec(f, 5, _f32), _mat(f, 15, _f64), _tasks(f, b, True)
    while more:
        _project_dense(g, f[8], f[9], _u(f[10]), _u(f[11]), f[12], f[13], f[14], partial, b[0], b[1])
        more = _tasks(f, b, False)
    _loop_end(f[4])


def _body_expand_signs(data):  # (c, size, seed0, seed1, step, compartment, offset, scale, out)
    f, b = _frame(data, 18), np.empty(2, np.int64)
    c, out, more = _vec(f, 5, _f32), _vec(f, 15, _f32), _tasks(f, b, True)
    while more:
        _expand_signs(c, f[8], _u(f[9]), _u(f[10]), f[11], f[12], f[13], _float(f, 14), out, b[0], b[1])
        more = _tasks(f, b, False)
    _loop_end(f[4])


def _body_expand_dense(data):  # (c, size, dist, seed0, seed1, step, compartment, offset, scale, out)
    f, b = _frame(data, 19), np.empty(2, np.int64)
    c, out, more = _vec(f, 5, _f32), _vec(f, 16, _f32), _tasks(f, b, True)
    while more:
        _expand_dense(c, f[8], f[9], _u(f[10]), _u(f[11]), f[12], f[13], f[14], _float(f, 15), out, b[0], b[1])
        more = _tasks(f, b, False)
    _loop_end(f[4])


def _body_materialize_rows(data):  # (rows, size, dist, seed0, seed1, step, compartment, out)
    f, b = _frame(data, 17), np.empty(2, np.int64)
    rows, out, more = _vec(f, 5, np.int64), _mat(f, 14, _f32), _tasks(f, b, True)
    while more:
        _materialize_rows(rows, f[8], f[9], _u(f[10]), _u(f[11]), f[12], f[13], out, b[0], b[1])
        more = _tasks(f, b, False)
    _loop_end(f[4])


_BODIES = {_project_signs: _body_project_signs, _project_dense: _body_project_dense,
           _expand_signs: _body_expand_signs, _expand_dense: _body_expand_dense,
           _materialize_rows: _body_materialize_rows}


@functools.cache
def _body(kernel):
    """The compiled body of a kernel (on first use; cached on disk like the kernels)."""
    return cfunc(types.void(types.voidptr), **_omp_jit)(_BODIES[kernel])


def _run_openmp(kernel, ntasks: int, chunk: int, args: tuple, threads: int) -> None:
    """Run ``kernel(*args, start, stop)`` over [0, ntasks) in chunks of ``chunk`` on a team of ``threads``."""
    frame = _pack(ntasks, chunk, args)
    _gomp()[0](_body(kernel).address, frame.ctypes.data, threads, 0)


# ---------------------------------------------------------------- threads
# The kernels above are serial and release the GIL. Parallel work is a list of tasks (ranges of
# tiles or rows) taken by torch's OpenMP team (above) or, where there is none, by the calling thread
# and a few pool threads in turn from one counter, so a thread that the OS holds back just takes fewer
# tasks. Idle pool threads sleep on a lock. The thread count is torch's, read at every call:
# ``torch.set_num_threads(n)`` is the one knob for torch and these kernels alike.
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
    if openmp_available():  # torch's own threads (above), one task at a time; else the pool below
        _run_openmp(kernel, ntasks, 1, args, n)
        return
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


def piece_rates(repeats: int = 15) -> dict:
    """Seconds per Philox word, per normal transform (one element) and per float32 dot element, on one thread
    over one tile in L1 cache (best of ``repeats``), measured with the kernels' own inlined pieces: what
    ``python -m rbdlib.bench limit`` builds the machine's limit from."""
    import time

    u = np.uint64

    @njit(nogil=True, error_model="numpy")
    def words(bits, reps):
        for r in range(reps):
            _words(bits, 0, bits.shape[0] // 4, r, 0, 0, u(1), u(2))

    @njit(nogil=True, error_model="numpy")
    def transform(top, out, reps):  # the second pass of fill for normal bases, on int32 words
        for _ in range(reps):
            for p in range(top.shape[0] // 2):
                r = _radius(top[2 * p])
                s, c = _sincos(top[2 * p + 1])
                out[2 * p], out[2 * p + 1] = r * c, r * s

    @njit(nogil=True, error_model="numpy")
    def dot(basis, g, reps):
        acc = 0.0
        for _ in range(reps):
            acc += _dot(basis, g, 0, basis.shape[0])
        return acc

    n, reps = TILE, 200
    bits = np.empty(n, np.uint32)
    top = np.random.default_rng(0).integers(0, 1 << 24, n).astype(np.int32)  # the top 24 bits of words
    g = np.ones(n, np.float32)

    def best(f, *args):
        f(*args, 1)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f(*args, reps)
            times.append(time.perf_counter() - start)
        return min(times) / (reps * n)

    return {"word": best(words, bits), "normal": best(transform, top, g.copy()), "dot": best(dot, g.copy(), g)}


def set_threads(n: int | None) -> int:
    """Set torch's thread count, which the kernels follow (None: all cores); returns the previous value.

    The same as ``torch.set_num_threads(n)``, kept for code written against earlier versions."""
    previous = torch.get_num_threads()
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(n)
    return previous
