"""The CUDA kernels without a GPU: their source, compiled for the CPU by g++ behind a small CUDA shim,
launched through the same launch plans as on a GPU, checked against the NumPy reference.

This covers the kernels' arithmetic, indexing and reductions, the launch geometry and the argument
types that ``rbdlib.kernels.cuda`` passes (each is checked against the kernel's C signature). It
does not cover CuPy, DLPack or streams: the ``gpu`` tests in test_bases.py do, on a GPU.

The shim runs the blocks of a grid one after another; the threads of a block run as OS threads
meeting at a ``std::barrier`` for ``__syncthreads`` (only for kernels that call it), so
``__shared__`` memory can be a static array. ``-ffp-contract=off`` matches ``--fmad=false``.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import rbdlib
from rbdlib import philox as ref
from rbdlib.kernels import constants, cuda

SHIM = r"""
#include <barrier>
#include <math.h>
#include <thread>
#include <vector>
struct dim3_ { unsigned x, y, z; };
thread_local dim3_ threadIdx, blockIdx;
dim3_ blockDim, gridDim;
struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static std::barrier<>* block_barrier;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

template <class Kernel> void emulate(dim3_ grid, unsigned threads, bool barrier, Kernel kernel) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                auto run = [=](unsigned t) { blockIdx = {x, y, z}; threadIdx = {t, 0, 0}; kernel(); };
                if (!barrier) { for (unsigned t = 0; t < threads; ++t) run(t); continue; }
                std::barrier<> meet(threads);
                block_barrier = &meet;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t) pool.emplace_back(run, t);
                for (auto& th : pool) th.join();
            }
}
"""

POINTEE = {"float": np.float32, "double": np.float64, "long long": np.int64, "u32": np.uint32}
SCALAR = {"long long": np.int64, "int": np.int32, "u32": np.uint32, "double": np.float64}
CTYPE = {np.int64: ctypes.c_int64, np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.float64: ctypes.c_double}
KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)\s*\{')


def kernels() -> dict:
    """name -> (parameters as (type, is_pointer, name), calls __syncthreads) parsed from the source."""
    found = {}
    starts = list(KERNEL.finditer(cuda.SOURCE))
    for m, nxt in zip(starts, starts[1:] + [None]):
        body = cuda.SOURCE[m.end():nxt.start() if nxt else None]
        params = []
        for p in m.group(2).split(","):
            p = " ".join(p.split()).replace("const ", "")
            ctype, name = p.rsplit(" ", 1)
            params.append((ctype.rstrip("*").strip(), ctype.endswith("*"), name))
        found[m.group(1)] = (params, "__syncthreads" in body)
    return found


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to compile the CUDA source for the CPU")
    signatures = kernels()
    wrappers = []
    for name, (params, barrier) in signatures.items():
        decl = ", ".join(f"{t}{'*' if ptr else ''} {n}" for t, ptr, n in params)
        args = ", ".join(n for _, _, n in params)
        wrappers.append(f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned threads, '
                        f'{decl}) {{ emulate({{gx, gy, gz}}, threads, {str(barrier).lower()}, '
                        f'[=] {{ {name}({args}); }}); }}')
    folder = tmp_path_factory.mktemp("cuda_emulator")
    (folder / "emu.cpp").write_text(SHIM + cuda.SOURCE + "\n".join(wrappers) + "\n")
    subprocess.run(["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
                    "-Wno-unknown-pragmas", "-o", str(folder / "emu.so"), str(folder / "emu.cpp")],
                   check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(folder / "emu.so"))

    def launch(kernel, grid, block, args):
        params, _ = signatures[kernel]
        assert len(args) == len(params), f"{kernel}: {len(args)} arguments for {len(params)} parameters"
        converted = []
        for arg, (ctype, pointer, name) in zip(args, params):
            if pointer:  # a device array: right element type, contiguous
                assert isinstance(arg, np.ndarray) and arg.dtype == POINTEE[ctype], f"{kernel}.{name}"
                assert arg.flags.c_contiguous, f"{kernel}.{name}"
                converted.append(ctypes.c_void_p(arg.ctypes.data))
            else:  # a scalar of exactly the C type: a wrong width would be garbage on a GPU
                assert type(arg) is SCALAR[ctype], f"{kernel}.{name}: {type(arg).__name__} for {ctype}"
                converted.append(CTYPE[SCALAR[ctype]](arg))
        grid = tuple(grid) + (1,) * (3 - len(grid))
        getattr(lib, f"launch_{kernel}")(*map(ctypes.c_uint, grid), ctypes.c_uint(block[0]), *converted)

    return launch


def test_source_declares_every_kernel_the_plans_launch():
    assert set(kernels()) == {"rbd_project", "rbd_reduce", "rbd_expand", "rbd_materialize", "rbd_words"}


def test_words_match_reference_and_known_answers(emulator):
    kat = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
           ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
           ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    for counter, key, expected in kat:
        out = np.empty((1, 4), np.uint32)
        cuda.launch_words(emulator, np.array([counter], np.uint32), key[0], key[1], out)
        assert out[0].tolist() == expected
    counters = np.random.default_rng(0).integers(0, 2**32, (1000, 4), dtype=np.uint64).astype(np.uint32)
    out = np.empty_like(counters)
    cuda.launch_words(emulator, counters, 0x9E3779B9, 7, out)
    np.testing.assert_array_equal(out, ref.philox4x32(counters, np.array([0x9E3779B9, 7], np.uint32)))


@pytest.mark.parametrize("distribution", ["normal", "uniform", "rademacher"])
def test_materialize_bit_identical_to_reference(emulator, distribution):
    seed, step, compartment = 2**40 + 3, 7, 2
    key = ref.key_of(seed)
    for size in (1, 5, 127, 129, 1000):
        rows = np.array([0, 3, 5], np.int64)
        out = np.empty((3, size), np.float32)
        cuda.launch_materialize(emulator, rows, out, constants.CODES[distribution], key[0], key[1], step, compartment)
        for r, row in zip(rows, out):
            np.testing.assert_array_equal(row, ref.elements(seed, step, compartment, r, 0, size, distribution))


@pytest.mark.parametrize("distribution", ["normal", "uniform", "rademacher"])
@pytest.mark.parametrize("size,dim", [(1, 1), (129, 3), (10007, 2), (20000, 1), (300, 70)])
def test_project_expand_match_float64_reference(emulator, distribution, size, dim):
    b = rbdlib.RandomBases(12345, 4, 1, dim, size, distribution, offset=3)
    gen = torch.Generator().manual_seed(size + dim)
    g, c = torch.randn(size, generator=gen), torch.randn(dim, generator=gen)
    P = b.materialize().double()
    args = (b._dist, *ref.key_of(12345), b.step, b.compartment, b.offset, b.scale)
    partial = np.empty(dim * cuda.tiles(size), np.float64)
    coords = np.empty(dim, np.float32)
    cuda.launch_project(emulator, g.numpy(), partial, coords, dim, *args)
    want = (P @ g.double()).numpy()
    assert np.linalg.norm(coords - want) <= 1e-5 * np.linalg.norm(want)
    delta = np.empty(size, np.float32)
    cuda.launch_expand(emulator, c.numpy(), delta, *args)
    want = (P.T @ c.double()).numpy()
    assert np.linalg.norm(delta - want) <= 1e-5 * np.linalg.norm(want)
    if distribution != "normal":  # same float32 sums in the same order as the CPU kernel
        np.testing.assert_array_equal(delta, b.expand(c).numpy())
