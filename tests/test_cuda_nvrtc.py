"""The CUDA source through NVIDIA's own compiler, without a GPU.

NVRTC (the runtime compiler CuPy uses) comes from PyPI: ``nvidia-cuda-nvrtc-cu12`` for CUDA 12 and
``nvidia-cuda-nvrtc`` for CUDA 13 (the ``nvrtc`` extra installs both). ``rbdlib.kernels.cuda.SOURCE`` is
compiled to PTX under the options CuPy gives it (``cuda.OPTIONS``, then CuPy's own ``-ftz=true`` and
``-arch=compute_XX``) for every architecture from compute_75 to the newest each compiler knows. The PTX
must hold every kernel, with a parameter list that matches what the launch plans pass, no fused
multiply-add (so the transforms round as on the CPU), and the transforms' constants bit for bit.

The g++ emulation in test_cuda_source.py checks the kernels' arithmetic; g++ accepts things NVRTC
does not (hex float literals before C++17), which is why this test exists.

Where a package is missing the test is skipped and says how to install it; with ``RBDLIB_REQUIRE_NVRTC=1``
(set by CI) a missing compiler is a failure instead.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

from rbdlib.kernels import constants, cuda

PACKAGES = {12: ("nvidia-cuda-nvrtc-cu12", "cuda_nvrtc/lib/libnvrtc.so.12"),
            13: ("nvidia-cuda-nvrtc", "cu13/lib/libnvrtc.so.13")}


@functools.cache
def nvrtc(major: int) -> ctypes.CDLL:
    package, relative = PACKAGES[major]
    spec = importlib.util.find_spec("nvidia")
    found = [Path(p) / relative for p in (spec.submodule_search_locations if spec else [])]
    found = [p for p in found if p.exists()]
    if not found:
        message = f"NVRTC for CUDA {major} is not installed: pip install {package} (or rbdlib[nvrtc])"
        if os.environ.get("RBDLIB_REQUIRE_NVRTC") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ctypes.CDLL(str(found[0]))


def check(lib, result: int, what: str):
    if result != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(result).decode()}")


def supported_archs(lib) -> list[int]:
    count = ctypes.c_int()
    check(lib, lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * count.value)()
    check(lib, lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return sorted(archs)


def compile_ptx(lib, source: str, options) -> tuple[bool, str, str]:
    """(compiled, log, ptx) of one NVRTC compilation."""
    prog = ctypes.c_void_p()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"rbdlib.cu", 0, None, None), "create")
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        ok = lib.nvrtcCompileProgram(prog, len(options), opts) == 0
        size = ctypes.c_size_t()
        check(lib, lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
        log = ctypes.create_string_buffer(size.value)
        check(lib, lib.nvrtcGetProgramLog(prog, log), "log")
        ptx = b""
        if ok:
            check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
            buf = ctypes.create_string_buffer(size.value)
            check(lib, lib.nvrtcGetPTX(prog, buf), "PTX")
            ptx = buf.value
        return ok, log.value.decode(errors="replace"), ptx.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def cupy_options(arch: int) -> tuple[str, ...]:
    return (*cuda.OPTIONS, "-ftz=true", f"-arch=compute_{arch}")


@functools.cache
def ptx_for(major: int, arch: int) -> str:
    ok, log, ptx = compile_ptx(nvrtc(major), cuda.SOURCE, cupy_options(arch))
    assert ok, f"NVRTC {major} rejected rbdlib.kernels.cuda.SOURCE for compute_{arch}:\n{log}"
    return ptx


def archs_of(major: int) -> list[int]:
    archs = [a for a in supported_archs(nvrtc(major)) if a >= 75]
    assert archs and archs[0] == 75, f"CUDA {major} supports {archs}"
    return archs


def entries(ptx: str) -> dict[str, list[str]]:
    """kernel name -> PTX parameter types ('.u64', '.u32', '.f64', ...), in order."""
    found = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx):
        found[m.group(1)] = re.findall(r"\.param\s+(\.\w+)", m.group(2))
    return found


def recorded_launches() -> dict[str, tuple]:
    """What each launch plan passes, kernel by kernel, for a small problem of each distribution."""
    calls = {}

    def record(kernel, grid, block, args):
        calls.setdefault(kernel, args)

    f32, f64 = np.zeros(64, np.float32), np.zeros(64, np.float64)
    cuda.launch_project(record, f32, f64, f32[:2], 2, constants.CODES["normal"], 1, 2, 3, 4, 5, 0.5)
    cuda.launch_expand(record, f32[:2], f32, constants.CODES["normal"], 1, 2, 3, 4, 5, 0.5)
    cuda.launch_materialize(record, np.zeros(2, np.int64), np.zeros((2, 64), np.float32), 0, 1, 2, 3, 4)
    cuda.launch_words(record, np.zeros((4, 4), np.uint32), 1, 2, np.zeros((4, 4), np.uint32))
    return calls


def ptx_type_of(arg) -> tuple[str, int]:
    """(kind, bytes) a launch argument occupies: a device array is a 64-bit pointer."""
    if isinstance(arg, np.ndarray):
        return "int", 8
    return ("float" if isinstance(arg, np.floating) else "int"), arg.dtype.itemsize


def ptx_kind(param: str) -> tuple[str, int]:
    return ("float" if param.startswith(".f") else "int"), int(param[2:]) // 8


@pytest.mark.parametrize("major", [12, 13])
def test_source_compiles_for_every_architecture(major):
    archs = archs_of(major)
    for arch in archs:
        ptx = ptx_for(major, arch)
        assert set(entries(ptx)) == {"rbd_project", "rbd_reduce", "rbd_expand", "rbd_materialize", "rbd_words"}


def fused_multiply_adds(ptx: str) -> list[str]:
    """Float fma/mad instructions (fma.rn.f32, fma.rn.ftz.f32, ...); integer mad.lo.s32 is not one."""
    return re.findall(r"\b(?:fma|mad)(?:\.\w+)*\.f(?:16|32|64)\b", ptx)


@pytest.mark.parametrize("major", [12, 13])
def test_ptx_has_no_fused_multiply_add(major):
    """--fmad=false holds: no fma/mad on floats anywhere, so the transforms round as the CPU's."""
    for arch in archs_of(major):
        fused = fused_multiply_adds(ptx_for(major, arch))
        assert not fused, f"compute_{arch}: {len(fused)} fused multiply-adds, e.g. {fused[0]}"
    # and the check can fail: the same source without --fmad=false is full of them
    ok, log, ptx = compile_ptx(nvrtc(major), cuda.SOURCE, ("-std=c++17", "-ftz=true", "-arch=compute_75"))
    assert ok, log
    assert len(fused_multiply_adds(ptx)) > 20


@pytest.mark.parametrize("major", [12, 13])
def test_ptx_holds_the_transform_constants_bit_for_bit(major):
    """Each decimal literal became exactly the float32 the CPU kernel uses (PTX writes 0fXXXXXXXX).

    The compiler may fold a negative constant's sign into the operation (``C8 - 0.275e-6 * z``), which
    is exact, so the magnitude's bits are what is looked for."""
    ptx = ptx_for(major, archs_of(major)[-1]).upper()
    for name in constants.FLOATS:
        bits = int(abs(np.float32(getattr(constants, name))).view(np.uint32))
        signed = {f"0F{bits:08X}", f"0F{bits | 0x80000000:08X}"}
        assert any(b in ptx for b in signed), f"{name}: 0f{bits:08x} (either sign) not in the PTX"


@pytest.mark.parametrize("major", [12, 13])
def test_ptx_parameters_match_what_the_launch_plans_pass(major):
    params = entries(ptx_for(major, archs_of(major)[0]))
    for kernel, args in recorded_launches().items():
        want = [ptx_kind(p) for p in params[kernel]]
        got = [ptx_type_of(a) for a in args]
        assert got == want, f"{kernel}: launch plan passes {got}, PTX declares {params[kernel]}"


@pytest.mark.parametrize("major", [12, 13])
def test_nvrtc_rejects_what_gpp_accepts(major):
    """The reason for this file: a hex float literal under -std=c++14 (the old options) is an error."""
    ok, log, _ = compile_ptx(nvrtc(major), "#define P24 0x1.0p-24f\n__global__ void k(float* x) { *x *= P24; }",
                             ("--fmad=false", "-std=c++14", "-arch=compute_75"))
    assert not ok and "error" in log
