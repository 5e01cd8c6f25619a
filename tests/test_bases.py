"""``RandomBases`` against explicit references: the NumPy Philox reference and float64 matrix products.

The reference matrix of a basis is built here from :func:`rbdlib.philox.philox4x32` and the
documented counter layout, never from the compiled kernels, and the products are taken in float64.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import rbdlib
from rbdlib import RandomBases
from rbdlib import philox as ref
from rbdlib.kernels import cpu

DISTS = ref.DISTRIBUTIONS


# ---------------------------------------------------------------- the explicit reference
def reference_matrix(seed, step, compartment, directions, size, distribution):
    """Unscaled float64 rows: row n is direction ``directions[n]`` from the documented address."""
    per = ref.ELEMENTS_PER_BLOCK[distribution]
    nblocks = (size + per - 1) // per
    directions = np.asarray(directions, np.uint64)
    counter = np.empty((len(directions), nblocks, 4), np.uint32)
    counter[..., 0] = np.arange(nblocks, dtype=np.uint64)[None, :]
    counter[..., 1] = directions[:, None]
    counter[..., 2], counter[..., 3] = compartment, step
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    w = ref.philox4x32(counter, key)
    z = ref.TRANSFORMS[distribution](w).reshape(len(directions), nblocks * per)[:, :size]
    return z.astype(np.float64)


def rel_err(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


def bits(t):
    return t.numpy().view(np.uint32)


@pytest.fixture(scope="module")
def g_cache():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(10007, generator=gen)


# ---------------------------------------------------------------- project / expand == reference products
@pytest.mark.parametrize("distribution", DISTS)
@pytest.mark.parametrize("size, dim", [(1, 1), (3, 300), (127, 5), (129, 1), (2049, 300), (10007, 33)])
def test_project_expand_match_float64_reference(distribution, size, dim, g_cache):
    seed, step, comp, offset = 2**33 + 3, 5, 2, 1000
    b = RandomBases(seed=seed, step=step, compartment=comp, dim=dim, size=size,
                    distribution=distribution, offset=offset)
    assert b.scale == 1 / math.sqrt(size)
    z = reference_matrix(seed, step, comp, np.arange(offset, offset + dim), size, distribution)
    phi = z / math.sqrt(size)
    g = g_cache[:size].clone()
    c = b.project(g)
    assert c.dtype == torch.float32 and c.shape == (dim,)
    c_ref = phi @ g.double().numpy()
    assert rel_err(c.numpy(), c_ref) < 1e-5
    coords = torch.linspace(-1, 2, dim)
    delta = b.expand(coords)
    assert delta.dtype == torch.float32 and delta.shape == (size,)
    assert rel_err(delta.numpy(), coords.double().numpy() @ phi) < 1e-5
    # materialize (scaled) equals the reference rows
    np.testing.assert_allclose(b.materialize().numpy(), phi, rtol=1e-6, atol=0)


@pytest.mark.parametrize("distribution", DISTS)
def test_explicit_scale(distribution):
    size, dim, scale = 3001, 7, 0.37
    b = RandomBases(seed=1, step=2, compartment=3, dim=dim, size=size, distribution=distribution, scale=scale)
    assert b.scale == scale
    phi = scale * reference_matrix(1, 2, 3, np.arange(dim), size, distribution)
    g = torch.randn(size, generator=torch.Generator().manual_seed(1))
    assert rel_err(b.project(g).numpy(), phi @ g.double().numpy()) < 1e-5
    c = torch.randn(dim, generator=torch.Generator().manual_seed(2))
    assert rel_err(b.expand(c).numpy(), c.double().numpy() @ phi) < 1e-5
    # the scale is exactly linear
    unit = RandomBases(seed=1, step=2, compartment=3, dim=dim, size=size, distribution=distribution,
                       scale=1.0)
    assert rel_err(b.project(g).numpy(), scale * unit.project(g).double().numpy()) < 1e-6


def test_project_non_contiguous_and_requires_grad():
    b = RandomBases(seed=4, step=0, compartment=0, dim=3, size=500)
    base = torch.randn(1000, requires_grad=True)
    g = base[::2]  # a strided view that needs grad
    c = b.project(g)
    assert not c.requires_grad
    expected = (b.scale * reference_matrix(4, 0, 0, range(3), 500, "normal")) @ g.detach().double().numpy()
    assert rel_err(c.numpy(), expected) < 1e-5


# ---------------------------------------------------------------- invariances
@pytest.mark.parametrize("distribution", DISTS)
def test_thread_count_invariance(distribution, monkeypatch):
    """torch.set_num_threads governs the kernels; any count gives the same bits (every call is split here),
    on torch's OpenMP team and on the fallback pool alike."""
    monkeypatch.setattr(cpu, "MIN_WORK", 1)  # split even small calls into tasks
    b = RandomBases(seed=9, step=1, compartment=0, dim=70, size=20_011, distribution=distribution)
    g = torch.randn(20_011, generator=torch.Generator().manual_seed(3))
    c_in = torch.randn(70, generator=torch.Generator().manual_seed(4))
    results = []
    previous = torch.get_num_threads()
    try:
        for executor in ("1", "0"):  # RBDLIB_OPENMP: torch's team (where there is one), then the pool
            monkeypatch.setenv("RBDLIB_OPENMP", executor)
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                assert cpu.threads() == n
                results.append((b.project(g), b.expand(c_in), b.materialize([0, 33, 69, 5, 6])))
    finally:
        torch.set_num_threads(previous)
    for one, *others in zip(*results, strict=True):
        for other in others:
            np.testing.assert_array_equal(bits(one), bits(other))


@pytest.mark.skipif(sys.platform != "linux" or "OpenMP" not in torch.__config__.parallel_info(),
                    reason="torch runs on GNU OpenMP only on Linux")
def test_kernels_use_torchs_openmp_team_where_torch_has_one(monkeypatch):
    """On Linux torch's builds use GNU OpenMP: the kernels must find it (else the fallback pool would
    silently run every test), and RBDLIB_OPENMP=0 turns it off."""
    assert cpu.openmp_available()
    monkeypatch.setenv("RBDLIB_OPENMP", "0")
    assert not cpu.openmp_available()


def test_set_threads_is_torchs_knob():
    previous = rbdlib.set_threads(1)
    try:
        assert torch.get_num_threads() == 1 and cpu.threads() == 1
        assert rbdlib.set_threads(None) == 1 and torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("distribution", DISTS)
def test_materialize_row_subsets_are_identical(distribution):
    b = RandomBases(seed=2**40, step=3, compartment=1, dim=12, size=2051, distribution=distribution)
    full = b.materialize()
    assert full.shape == (12, 2051)
    for rows in ([3, 1, 7], slice(2, 9, 3), 5, np.array([11, 0]), range(4), [], torch.tensor([6, 6])):
        part = b.materialize(rows)
        index = np.arange(12)[rows] if not isinstance(rows, int) else np.array([rows])
        if isinstance(rows, torch.Tensor):
            index = rows.numpy()
        np.testing.assert_array_equal(bits(part), bits(full[torch.as_tensor(index, dtype=torch.long)]))
    # a basis with an offset is a window onto the same directions
    shifted = RandomBases(seed=2**40, step=3, compartment=1, dim=4, size=2051, distribution=distribution,
                          offset=5)
    np.testing.assert_array_equal(bits(shifted.materialize()), bits(full[5:9]))


@pytest.mark.parametrize("distribution", DISTS)
@pytest.mark.parametrize("size", [129, 2049, 30_001])
def test_project_is_prefix_consistent(distribution, size):
    """How many directions are computed together must not change any coordinate, bit for bit."""
    g = torch.randn(size, generator=torch.Generator().manual_seed(5))
    kw = dict(seed=77, step=4, compartment=2, size=size, distribution=distribution)
    big = RandomBases(dim=200, **kw).project(g)
    for dim in (1, 3, 63, 64, 65, 130):
        np.testing.assert_array_equal(bits(RandomBases(dim=dim, **kw).project(g)), bits(big[:dim]))
    # and a window with an offset is the matching slice
    window = RandomBases(dim=70, offset=65, **kw).project(g)
    np.testing.assert_array_equal(bits(window), bits(big[65:135]))


@pytest.mark.parametrize("distribution", DISTS)
def test_expand_with_zero_padding(distribution):
    size = 4099
    kw = dict(seed=8, step=2, compartment=0, size=size, distribution=distribution)
    c = torch.randn(70, generator=torch.Generator().manual_seed(6))
    small = RandomBases(dim=70, **kw).expand(c)
    padded = RandomBases(dim=200, **kw).expand(torch.cat([c, torch.zeros(130)]))
    # the default scale depends on size only, so both bases scale alike
    np.testing.assert_allclose(padded.numpy(), small.numpy(), rtol=1e-6, atol=1e-7)


def test_adjoint_identity():
    """<P g, c> == <g, P^T c>: project and expand are transposes of each other."""
    for distribution in DISTS:
        b = RandomBases(seed=3, step=3, compartment=3, dim=40, size=5003, distribution=distribution)
        g = torch.randn(5003, generator=torch.Generator().manual_seed(7))
        c = torch.randn(40, generator=torch.Generator().manual_seed(8))
        lhs = float(b.project(g).double() @ c.double())
        rhs = float(g.double() @ b.expand(c).double())
        assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + abs(rhs))


# ---------------------------------------------------------------- statistics
N_STAT = 1_000_000
MOMENTS = {"normal": (1.0, 3.0), "uniform": (1 / 3, 1 / 5), "rademacher": (1.0, 1.0)}  # variance, E z^4


@pytest.mark.parametrize("distribution", DISTS)
def test_mean_and_variance(distribution):
    b = RandomBases(seed=11, step=0, compartment=0, dim=4, size=N_STAT // 4, distribution=distribution,
                    scale=1.0)
    z = b.materialize().double().numpy().ravel()
    var, m4 = MOMENTS[distribution]
    assert abs(z.mean()) < 5 * math.sqrt(var / z.size)
    # the sample variance has standard deviation sqrt((E z^4 - var^2) / n)
    assert abs(z.var() - var) < 5 * math.sqrt((m4 - var**2) / z.size) + 5 * var / z.size
    assert abs(np.mean(z**4) - m4) < 0.02 * m4
    if distribution == "rademacher":
        assert set(np.unique(z)) == {-1.0, 1.0}
    if distribution == "uniform":
        assert z.min() > -1 and z.max() < 1


def test_normal_shape_ks_skew_kurtosis():
    b = RandomBases(seed=12, step=0, compartment=0, dim=8, size=N_STAT // 8, scale=1.0)
    z = np.sort(b.materialize().double().numpy().ravel())
    n = z.size
    skew = np.mean(z**3) / np.mean(z**2) ** 1.5
    kurt = np.mean(z**4) / np.mean(z**2) ** 2
    assert abs(skew) < 5 * math.sqrt(6 / n)
    assert abs(kurt - 3) < 5 * math.sqrt(24 / n)
    cdf = 0.5 * (1 + torch.special.erf(torch.from_numpy(z) / math.sqrt(2)).numpy())  # float64
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov critical value at 0.1 %
    # lag-1 correlation (pairs from one Box-Muller draw, and across blocks) is negligible
    rows = b.materialize().double().numpy()
    assert abs(np.mean(rows[:, :-1] * rows[:, 1:])) < 5 / math.sqrt(rows.size)


def test_uniform_ks():
    b = RandomBases(seed=13, step=0, compartment=0, dim=4, size=250_000, distribution="uniform", scale=1.0)
    z = np.sort(b.materialize().double().numpy().ravel())
    n = z.size
    cdf = (z + 1) / 2
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)


def test_normal_direction_norm_is_about_one():
    size = 200_003
    b = RandomBases(seed=14, step=0, compartment=0, dim=5, size=size)
    norms = b.materialize().double().norm(dim=1).numpy()
    assert np.all(np.abs(norms - 1) < 5 / math.sqrt(2 * size))


@pytest.mark.parametrize("distribution", DISTS)
def test_directions_are_nearly_orthogonal(distribution):
    size, dim = 10_000, 60
    rows = RandomBases(seed=15, step=0, compartment=0, dim=dim, size=size,
                       distribution=distribution).materialize().double()
    unit = rows / rows.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    off = np.abs(cos[~np.eye(dim, dtype=bool)])
    assert off.max() < 5 / math.sqrt(size)
    assert 0.5 / math.sqrt(size) < np.sqrt(np.mean(off**2)) < 1.5 / math.sqrt(size)


@pytest.mark.parametrize("distribution", DISTS)
def test_different_addresses_are_uncorrelated(distribution):
    size = 100_000
    base = dict(seed=5, step=5, compartment=5, dim=1, size=size, distribution=distribution, offset=5)
    variants = [dict(seed=6), dict(seed=5 + 2**32), dict(seed=2**64 - 1), dict(step=6), dict(step=0),
                dict(compartment=6), dict(compartment=0), dict(offset=6), dict(offset=0)]
    z0 = RandomBases(**base).materialize().double().numpy().ravel()
    vectors = [z0]
    for change in variants:
        z = RandomBases(**{**base, **change}).materialize().double().numpy().ravel()
        vectors.append(z)
    corr = np.corrcoef(np.stack(vectors))
    off = np.abs(corr[~np.eye(len(vectors), dtype=bool)])
    assert off.max() < 5 / math.sqrt(size), off.max()


# ---------------------------------------------------------------- memory: never a dim x size matrix
@pytest.mark.slow
def test_project_expand_memory_stays_small():
    """size 2e6, dim 1e3 (8 GB as a float32 matrix) with under 100 MB of extra resident memory."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np, torch, rbdlib
        from rbdlib import philox as ref

        def status_kb(field):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])

        def rss_now_kb():
            return status_kb("VmRSS")

        def peak_kb():  # VmHWM is reset by clear_refs; ru_maxrss can keep the peak of a JIT compile
            return status_kb("VmHWM") if RESET else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        size, dim, seed = 2_000_000, 1_000, 3
        small = rbdlib.RandomBases(seed=seed, step=1, compartment=0, dim=130, size=5000)
        small.expand(small.project(torch.randn(5000)))  # compile / load kernels, start threads
        g = torch.randn(size, generator=torch.Generator().manual_seed(0))
        c_in = torch.randn(dim, generator=torch.Generator().manual_seed(1))
        b = rbdlib.RandomBases(seed=seed, step=1, compartment=0, dim=dim, size=size)
        try:  # reset the peak (VmHWM) to the current RSS, Linux >= 4.0
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            RESET = True
        except OSError:
            RESET = False  # then the growth below is only an upper bound (peak since start - current RSS)
        before = rss_now_kb()
        c = b.project(g)
        after_project = peak_kb()
        delta = b.expand(c_in)
        peak = peak_kb()  # kB
        print(f"RSS before {before / 1024:.1f} MB, peak after project {after_project / 1024:.1f} MB, "
              f"after expand {peak / 1024:.1f} MB, RSS now {rss_now_kb() / 1024:.1f} MB")
        # spot checks against the reference (after the measurement)
        for i in (0, dim - 1):
            z = ref.elements(seed, 1, 0, i, 0, size, "normal").astype(np.float64)
            exact = b.scale * (z @ g.double().numpy())
            bound = 1e-5 * b.scale * np.linalg.norm(z) * float(g.double().norm())  # Cauchy-Schwarz scale
            assert abs(float(c[i]) - exact) <= bound, (i, float(c[i]), exact)
        for j in (0, 12345, size - 1):
            col = np.array([ref.elements(seed, 1, 0, i, j, 1, "normal")[0] for i in range(dim)], np.float64)
            exact = b.scale * (col @ c_in.double().numpy())
            bound = 1e-5 * b.scale * np.linalg.norm(col) * float(c_in.double().norm())
            assert abs(float(delta[j]) - exact) <= bound, (j, float(delta[j]), exact)
        print((peak - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    print(out.stdout)
    assert growth_mb < 100, f"peak RSS grew by {growth_mb:.1f} MB"


# ---------------------------------------------------------------- clear errors
def make(**kw):
    args = dict(seed=0, step=0, compartment=0, dim=3, size=10)
    args.update(kw)
    return RandomBases(**args)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(dim=0), ValueError, ["dim"]),
    (dict(dim=-2), ValueError, ["dim", "-2"]),
    (dict(size=0), ValueError, ["size"]),
    (dict(size=-5), ValueError, ["size", "-5"]),
    (dict(seed=-1), ValueError, ["seed", "-1"]),
    (dict(seed=2**64), ValueError, ["seed", str(2**64)]),
    (dict(step=-1), ValueError, ["step", "-1"]),
    (dict(step=2**32), ValueError, ["step"]),
    (dict(compartment=-1), ValueError, ["compartment"]),
    (dict(offset=-1), ValueError, ["offset"]),
    (dict(offset=2**32 - 2), ValueError, ["offset"]),  # offset + dim - 1 > 2**32 - 1
    (dict(seed=True), TypeError, ["seed", "bool"]),
    (dict(step=1.0), TypeError, ["step", "float"]),
    (dict(compartment=False), TypeError, ["compartment", "bool"]),
    (dict(dim=2.5), TypeError, ["dim", "float"]),
    (dict(size="10"), TypeError, ["size", "str"]),
    (dict(offset=np.float64(1)), TypeError, ["offset"]),
    (dict(distribution="gaussian"), ValueError, ["gaussian", "normal"]),
    (dict(distribution=None), ValueError, ["None"]),
    (dict(scale=0.0), ValueError, ["scale"]),
    (dict(scale=-1.0), ValueError, ["scale"]),
    (dict(scale=float("nan")), ValueError, ["scale", "nan"]),
    (dict(scale=float("inf")), ValueError, ["scale", "inf"]),
    (dict(scale="0.1"), ValueError, ["scale"]),
    (dict(scale=True), ValueError, ["scale"]),
])
def test_constructor_errors(kw, exc, words):
    with pytest.raises(exc) as err:
        make(**kw)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_numpy_integers_are_accepted():
    b = make(seed=np.uint64(2**63), step=np.int32(3), dim=np.int64(2), scale=np.float32(0.5))
    assert (b.seed, b.step, b.dim, b.scale) == (2**63, 3, 2, 0.5)


@pytest.mark.parametrize("method, value, exc, words", [
    ("project", torch.zeros(11), ValueError, ["g", "shape", "(10,)", "(11,)"]),
    ("project", torch.zeros(2, 5), ValueError, ["g", "shape", "(2, 5)"]),
    ("project", torch.zeros(()), ValueError, ["g", "shape"]),
    ("project", torch.zeros(10, dtype=torch.float64), TypeError, ["g", "float32", "float64"]),
    ("project", torch.zeros(10, dtype=torch.int64), TypeError, ["g", "float32", "int64"]),
    ("project", np.zeros(10, np.float32), TypeError, ["g", "torch.Tensor", "ndarray"]),
    ("project", [0.0] * 10, TypeError, ["g", "torch.Tensor", "list"]),
    ("project", torch.zeros(10, device="meta"), ValueError, ["g", "meta"]),
    ("expand", torch.zeros(4), ValueError, ["c", "shape", "(3,)", "(4,)"]),
    ("expand", torch.zeros(3, dtype=torch.float64), TypeError, ["c", "float32", "float64"]),
    ("expand", torch.zeros(3, dtype=torch.float16), TypeError, ["c", "float32", "float16"]),
    ("expand", (1.0, 2.0, 3.0), TypeError, ["c", "torch.Tensor", "tuple"]),
    ("expand", torch.zeros(3, device="meta"), ValueError, ["c", "meta"]),
])
def test_operand_errors(method, value, exc, words):
    with pytest.raises(exc) as err:
        getattr(make(), method)(value)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.skipif(rbdlib.gpu_available(), reason="checks the message when no GPU can be used")
def test_cuda_materialize_without_gpu_is_clear():
    with pytest.raises(RuntimeError, match="(?i)cuda|gpu"):
        make().materialize(device="cuda")


@pytest.mark.parametrize("rows, exc, word", [
    (3, IndexError, "rows"), ([0, 5], IndexError, "rows"), (1.5, TypeError, "rows"),
    (True, TypeError, "rows"), ([1.0, 2.0], TypeError, "rows"), ([True, False, True], TypeError, "rows"),
    (-1, IndexError, "rows"), ([0, -3], IndexError, "rows"), ([[0, 1]], ValueError, "rows"),
])
def test_materialize_row_errors(rows, exc, word):
    with pytest.raises(exc) as err:
        make().materialize(rows)
    assert word in str(err.value)


def test_materialize_accepted_rows_and_device_errors():
    b = make()
    assert b.materialize([]).shape == (0, 10)
    assert b.materialize(np.int64(2)).shape == (1, 10)
    assert b.materialize(slice(-2, None)).shape == (2, 10)  # slices keep Python semantics
    with pytest.raises(ValueError, match="meta"):
        b.materialize(device="meta")


# ---------------------------------------------------------------- GPU (skipped without CUDA + CuPy)
gpu = pytest.mark.skipif(not rbdlib.gpu_available(), reason="needs a CUDA GPU with CuPy")


@pytest.mark.gpu
@gpu
def test_gpu_raw_words_match_reference():
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(10_000, 4), dtype=np.uint64).astype(np.uint32)
    counters[:2] = [[0, 0, 0, 0], [2**32 - 1] * 4]
    for key in ([0, 0], [2**32 - 1, 2**32 - 1], [0xA4093822, 0x299F31D0]):
        key = np.array(key, np.uint32)
        out = rbdlib.philox4x32(torch.from_numpy(counters.astype(np.int64)).cuda(), key)
        assert out.is_cuda
        got = (out.cpu().to(torch.int64) & 0xFFFFFFFF).numpy().astype(np.uint32)
        np.testing.assert_array_equal(got, ref.philox4x32(counters, key))
    kat = torch.tensor([[0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]], dtype=torch.int64).cuda()
    got = (rbdlib.philox4x32(kat, np.array([0xA4093822, 0x299F31D0], np.uint32)).cpu().to(torch.int64)
           & 0xFFFFFFFF)
    assert got.tolist() == [[0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("distribution", DISTS)
def test_gpu_materialize_matches_cpu(distribution):
    for size in (1, 3, 127, 129, 2049, 10007):
        b = RandomBases(seed=2**35 + 1, step=3, compartment=1, dim=5, size=size, distribution=distribution,
                        offset=17, scale=1.0)
        cpu_rows = b.materialize([0, 2, 4])
        gpu_rows = b.materialize([0, 2, 4], device="cuda")
        assert gpu_rows.is_cuda and gpu_rows.dtype == torch.float32
        if distribution == "normal":
            np.testing.assert_allclose(gpu_rows.cpu().numpy(), cpu_rows.numpy(), rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(bits(gpu_rows.cpu()), bits(cpu_rows))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("distribution", DISTS)
def test_gpu_project_expand_match_cpu(distribution, monkeypatch):
    for size, dim in ((1, 1), (129, 300), (10007, 33), (100_003, 64)):
        b = RandomBases(seed=7, step=1, compartment=2, dim=dim, size=size, distribution=distribution,
                        offset=3)
        g = torch.randn(size, generator=torch.Generator().manual_seed(0))
        c = torch.randn(dim, generator=torch.Generator().manual_seed(1))
        c_cpu, d_cpu = b.project(g), b.expand(c)
        g_gpu, c_gpu = g.cuda(), c.cuda()
        with monkeypatch.context() as m:  # no host round trip inside the GPU path
            for name in ("cpu", "numpy", "tolist", "item"):
                m.setattr(torch.Tensor, name, _forbidden(name))
            c_dev, d_dev = b.project(g_gpu), b.expand(c_gpu)
        assert c_dev.is_cuda and d_dev.is_cuda and c_dev.device == g_gpu.device
        assert c_dev.dtype == d_dev.dtype == torch.float32
        assert rel_err(c_dev.cpu().numpy(), c_cpu.numpy()) < 1e-5
        assert rel_err(d_dev.cpu().numpy(), d_cpu.numpy()) < 1e-5


def _forbidden(name):
    def method(*args, **kwargs):
        raise AssertionError(f"Tensor.{name} called: host round trip in the GPU path")
    return method


@pytest.mark.gpu
@gpu
def test_gpu_dlpack_zero_copy():
    import cupy

    from rbdlib.kernels import cuda

    x = torch.arange(10, dtype=torch.float32, device="cuda")
    assert cuda._cp(x).data.ptr == x.data_ptr()  # torch -> CuPy without a copy
    b = RandomBases(seed=1, step=0, compartment=0, dim=4, size=1000)
    out = b.expand(torch.ones(4, device="cuda"))
    assert isinstance(out, torch.Tensor) and out.is_cuda
    assert cupy.from_dlpack(out).data.ptr == out.data_ptr()
    # kernels run on torch's current stream: a side stream gives the same answer
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        side = b.expand(torch.ones(4, device="cuda"))
    stream.synchronize()
    torch.testing.assert_close(side, out, rtol=0, atol=0)


@pytest.mark.slow
def test_compile_cache_works_from_a_read_only_package(tmp_path):
    """With the package on a read-only file system (a system-wide or image install), Numba's cache falls back
    to the user's cache directory ($XDG_CACHE_HOME/numba or ~/.cache/numba), so only the first process
    compiles. Needs root and unshare (a private read-only bind mount); skipped elsewhere."""
    import os
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a read-only bind mount")
    package = tmp_path / "site"
    shutil.copytree(os.path.dirname(rbdlib.__file__), package / "rbdlib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    cache = tmp_path / "cache"
    run = ("import rbdlib, torch; b = rbdlib.RandomBases(0, 0, 0, 3, 500, 'rademacher'); "
           f"b.expand(b.project(torch.ones(500))); assert rbdlib.__file__.startswith({str(package)!r})")
    script = (f"mount --bind {package} {package} && mount -o remount,ro,bind {package} && "
              f"! touch {package}/rbdlib/probe 2>/dev/null && {sys.executable} -c \"{run}\"")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(package), XDG_CACHE_HOME=str(cache))
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0 and "mount" in out.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    assert not list((package / "rbdlib").rglob("*.nbi"))
    assert list(cache.rglob("*_project_*.nbi")) and list(cache.rglob("*_expand_*.nbi"))


@pytest.mark.parametrize("order", ["import torch, rbdlib", "import rbdlib, torch"])
def test_import_order_changes_nothing(order):
    """rbdlib leaves the OpenMP environment as it found it and finds torch's runtime either way."""
    import os

    script = (f"{order}, os; from rbdlib.kernels import cpu; "
              "print(os.environ.get('OMP_WAIT_POLICY'), cpu.openmp_available())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    policy, team = out.stdout.split()
    assert policy == "None"
    assert team == str(sys.platform == "linux" and "OpenMP" in torch.__config__.parallel_info())


def test_kernels_run_in_a_forked_child_after_threads_started():
    """The pool's threads do not survive fork; a child (multiprocessing's fork, DataLoader workers) makes its own."""
    import multiprocessing

    b = RandomBases(seed=1, step=0, compartment=0, dim=64, size=50_000, distribution="rademacher")
    g = torch.randn(50_000)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = b.project(g)  # starts the pool in this process
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_project_in_child, (b, g)).get(timeout=120)
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(bits(got), bits(expected))


def _project_in_child(b, g):
    torch.set_num_threads(2)
    return b.project(g)
