"""Fused CUDA kernels through CuPy, zero-copy to torch through DLPack, on torch's current stream.

The same counter layout and the same float32 operations as :mod:`rbdlib.philox` (compiled with
``--fmad=false`` so that no multiply-add is fused), so raw words and uniform/Rademacher elements
equal the CPU's bit for bit, and normals agree to float32 rounding.

We do not use ``cupy.random``: its Philox keeps per-thread state, so its output depends on the
launch geometry and it cannot seek to an element. Here every thread computes the blocks it needs
from their addresses.

CuPy is optional. :func:`available` says whether a CUDA device can be used; nothing in this module
touches the GPU at import time.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .constants import RADEMACHER, defines

TILE = 8192  # elements per (direction, tile) block in project
THREADS = 256

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ uint4 philox(uint4 c, u32 k0, u32 k1) {
    #pragma unroll
    for (int r = 0; r < PHILOX_ROUNDS; ++r) {
        u32 hi0 = __umulhi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
        u32 hi1 = __umulhi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    return c;
}

__device__ __forceinline__ float uniform_of(u32 w) {
    return (float)((long long)(w >> 8) * 2 + 1 - (1LL << 24)) * P24;
}

__device__ __forceinline__ float radius_of(u32 w) {
    long long n = (long long)(w >> 8) + 1;
    int shift = 0;
    #pragma unroll
    for (int s = 16; s >= 1; s >>= 1) {
        bool small = n < (1LL << (24 - s));
        n = small ? (n << s) : n;
        shift = small ? shift + s : shift;
    }
    float m = (float)n * P23;
    bool big = m > SQRT2;
    m = big ? m * 0.5f : m;
    float e = (float)((big ? 1 : 0) - 1 - shift);
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float p = (((L9 * z + L7) * z + L5) * z + L3) * z + 1.0f;
    return sqrtf(-2.0f * (2.0f * s * p + e * LN2));
}

__device__ __forceinline__ void sincos_of(u32 w, float* sn, float* cs) {
    long long k = (long long)(w >> 8);
    long long quadrant = k >> 22, r = k & ((1LL << 22) - 1);
    bool upper = r > (1LL << 21);
    float x = (float)(upper ? (1LL << 22) - r : r) * P22 * HALF_PI;
    float z = x * x;
    float s = x * ((((S9 * z + S7) * z + S5) * z
                   + S3) * z + 1.0f);
    float c = ((((C10 * z + C8) * z + C6) * z
                + C4) * z + (-0.5f)) * z + 1.0f;
    if (upper) { float t = s; s = c; c = t; }
    bool odd = quadrant & 1;
    float sin_sign = (float)(1 - 2 * (quadrant >> 1));
    float cos_sign = (float)(1 - 2 * ((quadrant ^ (quadrant >> 1)) & 1));
    *sn = (odd ? c : s) * sin_sign;
    *cs = (odd ? s : c) * cos_sign;
}

// four elements of one block (normal or uniform)
__device__ __forceinline__ void block4(int dist, uint4 w, float* v) {
    if (dist == UNIFORM) {
        v[0] = uniform_of(w.x); v[1] = uniform_of(w.y); v[2] = uniform_of(w.z); v[3] = uniform_of(w.w);
    } else {
        float r0 = radius_of(w.x), r1 = radius_of(w.z), s0, c0, s1, c1;
        sincos_of(w.y, &s0, &c0); sincos_of(w.w, &s1, &c1);
        v[0] = r0 * c0; v[1] = r0 * s0; v[2] = r1 * c1; v[3] = r1 * s1;
    }
}

__device__ __forceinline__ u32 word_of(uint4 w, int q) {
    return q == 0 ? w.x : q == 1 ? w.y : q == 2 ? w.z : w.w;
}

// A unit is what one thread makes from one Philox call: 4 elements, or 32 for Rademacher
// (one word of the block, so neighbouring threads share a block and each keeps one word).
__device__ __forceinline__ void unit(int dist, u64 u, u32 i, u32 k, u32 t, u32 k0, u32 k1, float* v) {
    if (dist == RADEMACHER) {
        uint4 w = philox(make_uint4((u32)(u >> 2), i, k, t), k0, k1);
        u32 word = word_of(w, (int)(u & 3));
        #pragma unroll
        for (int b = 0; b < 32; ++b) v[b] = ((word >> b) & 1u) ? 1.0f : -1.0f;
    } else {
        block4(dist, philox(make_uint4((u32)u, i, k, t), k0, k1), v);
    }
}

extern "C" __global__ void rbd_project(const float* g, long long size, int dist, u32 k0, u32 k1, u32 t,
                                       u32 k, u32 offset, int tile_units, double* partial, int ntiles) {
    __shared__ float red[256];
    const int per = dist == RADEMACHER ? 32 : 4;
    const int tile = blockIdx.x, i = blockIdx.y;
    float acc = 0.0f, v[32];
    for (int q = threadIdx.x; q < tile_units; q += blockDim.x) {
        u64 u = (u64)tile * tile_units + q;
        long long j0 = (long long)u * per;
        if (j0 >= size) break;
        unit(dist, u, offset + i, k, t, k0, k1, v);
        for (int e = 0; e < per; ++e) if (j0 + e < size) acc += v[e] * g[j0 + e];
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {  // fixed tree: deterministic
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[(u64)i * ntiles + tile] = (double)red[0];
}

extern "C" __global__ void rbd_reduce(const double* partial, int dim, int ntiles, double scale, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    double acc = 0.0;
    for (int tile = 0; tile < ntiles; ++tile) acc += partial[(u64)i * ntiles + tile];
    out[i] = (float)(acc * scale);
}

extern "C" __global__ void rbd_expand(const float* c, int dim, long long size, int dist, u32 k0, u32 k1,
                                      u32 t, u32 k, u32 offset, double scale, float* out) {
    const int per = dist == RADEMACHER ? 32 : 4;
    u64 u = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    long long j0 = (long long)u * per;
    if (j0 >= size) return;
    float v[32], acc[32];
    double total[32];
    for (int e = 0; e < per; ++e) { acc[e] = 0.0f; total[e] = 0.0; }
    for (int i = 0; i < dim; ++i) {
        unit(dist, u, offset + i, k, t, k0, k1, v);
        float ci = c[i];
        for (int e = 0; e < per; ++e) acc[e] += ci * v[e];
        if ((i + 1) % FLUSH == 0 || i == dim - 1)
            for (int e = 0; e < per; ++e) { total[e] += (double)acc[e]; acc[e] = 0.0f; }
    }
    for (int e = 0; e < per && j0 + e < size; ++e) out[j0 + e] = (float)(total[e] * scale);
}

extern "C" __global__ void rbd_materialize(const long long* rows, int nrows, long long size, int dist,
                                           u32 k0, u32 k1, u32 t, u32 k, float* out) {
    const int per = dist == RADEMACHER ? 32 : 4;
    u64 u = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y;
    long long j0 = (long long)u * per;
    if (j0 >= size || r >= nrows) return;
    float v[32];
    unit(dist, u, (u32)rows[r], k, t, k0, k1, v);
    for (int e = 0; e < per && j0 + e < size; ++e) out[(u64)r * size + j0 + e] = v[e];
}

extern "C" __global__ void rbd_words(const u32* counters, u32 k0, u32 k1, long long n, u32* out) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    uint4 w = philox(make_uint4(counters[4 * idx], counters[4 * idx + 1], counters[4 * idx + 2],
                                counters[4 * idx + 3]), k0, k1);
    out[4 * idx] = w.x; out[4 * idx + 1] = w.y; out[4 * idx + 2] = w.z; out[4 * idx + 3] = w.w;
}
"""


# the constants the CUDA and CPU kernels share, as #define lines (rbdlib/kernels/constants.py)
SOURCE = defines() + SOURCE


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when CuPy is installed and sees a CUDA device (cached; never raises)."""
    try:
        import cupy

        return bool(cupy.is_available()) and torch.cuda.is_available()
    except Exception:
        return False


# What NVRTC is given for SOURCE. CuPy appends "-ftz=true" and the device's "-arch"; the tests compile
# SOURCE with NVRTC from PyPI under exactly these options for every architecture, without a GPU.
OPTIONS = ("--fmad=false", "-std=c++17")


@functools.cache
def _module(device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=SOURCE, options=OPTIONS)


class _on_torch_stream:
    """Run CuPy kernels on torch's current stream of a device (stream-ordered, no sync).

    Entering gives ``launch(kernel, grid, block, args)``, the launcher the functions below take.
    """

    def __init__(self, device: torch.device):
        import cupy

        self.device = cupy.cuda.Device(device.index)
        self.stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream, device.index)
        self.module = _module(device.index)

    def __enter__(self):
        self.device.__enter__()
        self.stream.__enter__()
        return lambda kernel, grid, block, args: self.module.get_function(kernel)(grid, block, args)

    def __exit__(self, *exc):
        self.stream.__exit__(*exc)
        self.device.__exit__(*exc)


def _cp(tensor: torch.Tensor):
    import cupy

    return cupy.from_dlpack(tensor.detach())


# Launch plans: each takes a launcher and device arrays (CuPy here; NumPy in the CPU emulation of
# this source in tests/test_cuda_source.py), so geometry and argument types are tested without a GPU.
def _grid(n: int) -> int:
    return (n + THREADS - 1) // THREADS


def _units(size: int, dist: int) -> int:
    per = 32 if dist == RADEMACHER else 4
    return (size + per - 1) // per


def tiles(size: int) -> int:
    """Tiles of project: its float64 scratch holds dim x tiles(size) partial sums."""
    return (size + TILE - 1) // TILE


def launch_project(launch, g, partial, out, dim, dist, k0, k1, step, compartment, offset, scale):
    size, ntiles = g.shape[0], tiles(g.shape[0])
    tile_units = TILE // (32 if dist == RADEMACHER else 4)
    launch("rbd_project", (ntiles, dim), (THREADS,),
           (g, np.int64(size), np.int32(dist), np.uint32(k0), np.uint32(k1), np.uint32(step),
            np.uint32(compartment), np.uint32(offset), np.int32(tile_units), partial, np.int32(ntiles)))
    launch("rbd_reduce", (_grid(dim),), (THREADS,), (partial, np.int32(dim), np.int32(ntiles), np.float64(scale), out))


def launch_expand(launch, c, out, dist, k0, k1, step, compartment, offset, scale):
    size = out.shape[0]
    launch("rbd_expand", (_grid(_units(size, dist)),), (THREADS,),
           (c, np.int32(c.shape[0]), np.int64(size), np.int32(dist), np.uint32(k0), np.uint32(k1),
            np.uint32(step), np.uint32(compartment), np.uint32(offset), np.float64(scale), out))


def launch_materialize(launch, rows, out, dist, k0, k1, step, compartment):
    nrows, size = out.shape
    launch("rbd_materialize", (_grid(_units(size, dist)), nrows), (THREADS,),
           (rows, np.int32(nrows), np.int64(size), np.int32(dist), np.uint32(k0), np.uint32(k1),
            np.uint32(step), np.uint32(compartment), out))


def launch_words(launch, counters, k0, k1, out):
    n = counters.shape[0]
    launch("rbd_words", (_grid(n),), (THREADS,), (counters, np.uint32(k0), np.uint32(k1), np.int64(n), out))


# torch in, torch out
def project(g: torch.Tensor, dim, dist, k0, k1, step, compartment, offset, scale) -> torch.Tensor:
    partial = torch.empty(dim * tiles(g.numel()), dtype=torch.float64, device=g.device)
    out = torch.empty(dim, dtype=torch.float32, device=g.device)
    with _on_torch_stream(g.device) as launch:
        launch_project(launch, _cp(g), _cp(partial), _cp(out), dim, dist, k0, k1, step, compartment, offset, scale)
    return out


def expand(c: torch.Tensor, size, dist, k0, k1, step, compartment, offset, scale) -> torch.Tensor:
    out = torch.empty(size, dtype=torch.float32, device=c.device)
    with _on_torch_stream(c.device) as launch:
        launch_expand(launch, _cp(c), _cp(out), dist, k0, k1, step, compartment, offset, scale)
    return out


def materialize(rows: torch.Tensor, size, dist, k0, k1, step, compartment, device) -> torch.Tensor:
    rows = rows.to(device=device, dtype=torch.int64)
    out = torch.empty((rows.numel(), size), dtype=torch.float32, device=device)
    with _on_torch_stream(out.device) as launch:
        launch_materialize(launch, _cp(rows), _cp(out), dist, k0, k1, step, compartment)
    return out


def philox_words(counter: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """Raw Philox words for uint32-valued counters (n, 4) held in an int64 CUDA tensor."""
    import cupy

    counters = counter.to(torch.int64).to(torch.int32).contiguous()  # same bits as uint32
    out = torch.empty(counters.shape, dtype=torch.int32, device=counter.device)
    with _on_torch_stream(out.device) as launch:
        launch_words(launch, _cp(counters).view(cupy.uint32), k0, k1, _cp(out).view(cupy.uint32))
    return out
