"""The Philox4x32-10 block function and the element transforms, against explicit references.

Nothing here checks the library against itself: the block function is checked against the
Random123 known-answer vectors and a deliberately naive scalar implementation written from the
specification with Python integers; the transforms against float64 math written out in the test;
the compiled CPU kernel against the NumPy reference, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rbdlib
from rbdlib import philox as ref
from rbdlib.kernels import constants, cpu

# Random123 kat_vectors for philox4x32_10: (counter, key, expected output), hex words.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


# ---------------------------------------------------------------- a naive scalar Philox4x32-10
def naive_philox(counter, key, rounds=10):
    """Philox4x32-R exactly as the Random123 paper states it, one scalar block, Python ints."""
    m0, m1 = 0xD2511F53, 0xCD9E8D57
    w0, w1 = 0x9E3779B9, 0xBB67AE85
    mask = 0xFFFFFFFF
    x0, x1, x2, x3 = (int(v) for v in counter)
    k0, k1 = (int(v) for v in key)
    for r in range(rounds):
        if r > 0:  # the key schedule: bump before every round but the first
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        prod0, prod1 = m0 * x0, m1 * x2
        hi0, lo0 = prod0 >> 32, prod0 & mask
        hi1, lo1 = prod1 >> 32, prod1 & mask
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return (x0, x1, x2, x3)


def u32(values):
    return np.array(values, dtype=np.uint32)


# ---------------------------------------------------------------- the block function
@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_known_answers(counter, key, expected):
    assert ref.philox4x32(u32(counter), u32(key)).tolist() == list(expected)
    assert rbdlib.philox4x32(u32(counter), u32(key)).tolist() == list(expected)
    assert naive_philox(counter, key) == expected  # the test's own reference is right too


def test_known_answers_batched_and_broadcast():
    counters = u32([c for c, _, _ in KNOWN_ANSWERS])
    keys = u32([k for _, k, _ in KNOWN_ANSWERS])
    expected = u32([e for _, _, e in KNOWN_ANSWERS])
    out = ref.philox4x32(counters, keys)
    assert out.shape == (3, 4) and out.dtype == np.uint32
    np.testing.assert_array_equal(out, expected)
    # extra leading axes
    out = ref.philox4x32(np.broadcast_to(counters, (5, 3, 4)), np.broadcast_to(keys, (5, 3, 2)))
    assert out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, (5, 3, 4)))
    # one key broadcast against many counters
    out = ref.philox4x32(np.zeros((7, 4), np.uint32), np.zeros(2, np.uint32))
    np.testing.assert_array_equal(out, np.broadcast_to(expected[0], (7, 4)))


def test_naive_and_vectorized_agree_on_random_inputs():
    rng = np.random.default_rng(1234)
    counters = rng.integers(0, 2**32, size=(300, 4), dtype=np.uint64).astype(np.uint32)
    keys = rng.integers(0, 2**32, size=(300, 2), dtype=np.uint64).astype(np.uint32)
    # a few extreme words as well
    counters[:4] = [[0, 0, 0, 0], [2**32 - 1] * 4, [1, 0, 0, 0], [0, 0, 0, 2**31]]
    keys[:4] = [[2**32 - 1, 0], [0, 2**32 - 1], [1, 1], [2**31, 2**31]]
    out = ref.philox4x32(counters, keys)
    for n in range(len(counters)):
        assert tuple(out[n].tolist()) == naive_philox(counters[n], keys[n]), n


def test_words_counter_and_key_layout():
    """words(): counter (block, direction, compartment, step), key (low, high word of the seed)."""
    seed = (0x89ABCDEF << 32) | 0x01234567
    out = ref.words(seed, step=11, compartment=7, direction=5, blocks=[0, 3, 2**32 - 1])
    for n, block in enumerate([0, 3, 2**32 - 1]):
        assert tuple(out[n].tolist()) == naive_philox((block, 5, 7, 11), (0x01234567, 0x89ABCDEF))
    assert ref.key_of(seed).tolist() == [0x01234567, 0x89ABCDEF]


@pytest.mark.parametrize("counter, key, match", [
    (np.zeros(3, np.uint32), np.zeros(2, np.uint32), r"\(\.\.\., 4\)"),
    (np.zeros((2, 5), np.uint32), np.zeros(2, np.uint32), r"\(\.\.\., 4\)"),
    (np.zeros(4, np.uint32), np.zeros(3, np.uint32), r"\(\.\.\., 2\)"),
    (np.zeros(4, np.uint32), np.zeros((), np.uint32), r"\(\.\.\., 2\)"),
])
def test_philox_rejects_wrong_shapes(counter, key, match):
    with pytest.raises(ValueError, match=match):
        ref.philox4x32(counter, key)
    with pytest.raises(ValueError, match=match):
        rbdlib.philox4x32(counter, key)


@pytest.mark.parametrize("cdtype, kdtype, bad", [
    (np.int64, np.uint32, "int64"), (np.uint32, np.int32, "int32"),
    (np.uint64, np.uint32, "uint64"), (np.float32, np.uint32, "float32"),
])
def test_philox_rejects_wrong_dtypes(cdtype, kdtype, bad):
    with pytest.raises(TypeError, match="uint32") as err:
        ref.philox4x32(np.zeros(4, cdtype), np.zeros(2, kdtype))
    assert bad in str(err.value)
    # plain Python lists are int64 arrays: refused rather than silently reinterpreted
    with pytest.raises(TypeError, match="uint32"):
        rbdlib.philox4x32([0, 0, 0, 0], [0, 0])


# ---------------------------------------------------------------- transforms against float64 math
def random_words(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, size=(n, 4), dtype=np.uint64).astype(np.uint32)


def edge_words():
    """Words at the ends of the 24-bit range, quadrant and octant boundaries, low bits set or not."""
    top = [0, 1, 2, 2**21 - 1, 2**21, 2**21 + 1, 2**22 - 1, 2**22, 2**22 + 2**21, 2**23, 3 * 2**22,
           2**24 - 2, 2**24 - 1]
    values = sorted({(t << 8) | low for t in top for low in (0, 255)})
    a, b = np.meshgrid(np.array(values, np.uint64), np.array(values, np.uint64))
    return np.stack([a.ravel(), b.ravel(), b.ravel(), a.ravel()], axis=-1).astype(np.uint32)


def box_muller64(w):
    """Float64 Box-Muller of the words, exactly as documented: (a, b) -> (r cos t, r sin t)."""
    w = w.astype(np.uint64)
    a, b = w[..., 0::2], w[..., 1::2]
    u = ((a >> np.uint64(8)).astype(np.float64) + 1.0) / 2.0**24
    t = 2.0 * math.pi * (b >> np.uint64(8)).astype(np.float64) / 2.0**24
    r = np.sqrt(-2.0 * np.log(u))
    out = np.empty(w.shape, np.float64)
    out[..., 0::2], out[..., 1::2] = r * np.cos(t), r * np.sin(t)
    return out


@pytest.mark.parametrize("words", [random_words(50_000), edge_words()], ids=["random", "edges"])
def test_normal_transform_matches_float64_box_muller(words):
    got = ref.normal_from_words(words)
    assert got.dtype == np.float32 and got.shape == words.shape
    np.testing.assert_allclose(got.astype(np.float64), box_muller64(words), rtol=0, atol=1e-6)


def test_normal_transform_extremes():
    # top 24 bits all ones: u = 1, radius 0 exactly; all zeros: u = 2**-24, the largest radius
    w = u32([[0xFFFFFFFF, 0, 0xFFFFFF00, 0x40000000], [0, 0, 0xFF, 0]])
    z = ref.normal_from_words(w)
    assert np.all(z[0] == 0)
    rmax = math.sqrt(-2 * math.log(2.0**-24))
    assert abs(z[1, 0] - rmax) < 1e-6 and abs(z[1, 1]) < 1e-6  # angle 0: (r, 0)


@pytest.mark.parametrize("words", [random_words(50_000, 1), edge_words()], ids=["random", "edges"])
def test_uniform_transform_is_exact(words):
    got = ref.uniform_from_words(words)
    assert got.dtype == np.float32 and got.shape == words.shape
    m = (words.astype(np.uint64) >> np.uint64(8)).astype(np.float64)
    expected = (2 * m + 1 - 2.0**24) / 2.0**24  # exact in float64 and representable in float32
    np.testing.assert_array_equal(got.astype(np.float64), expected)
    assert np.all(np.abs(got) < 1)


def test_uniform_transform_range_ends():
    got = ref.uniform_from_words(u32([0, 0xFF, 0xFFFFFF00, 0xFFFFFFFF]))
    assert got.tolist() == [-1 + 2.0**-24, -1 + 2.0**-24, 1 - 2.0**-24, 1 - 2.0**-24]


def test_rademacher_transform_bit_rule():
    words = np.concatenate([random_words(200, 2), u32([[0, 2**32 - 1, 1, 2**31]])])
    got = ref.rademacher_from_words(words)
    assert got.shape == (len(words), 128) and got.dtype == np.float32
    for n, row in enumerate(words.tolist()):
        expected = [1.0 if (row[e // 32] >> (e % 32)) & 1 else -1.0 for e in range(128)]
        assert got[n].tolist() == expected, n


# ---------------------------------------------------------------- elements(): addressing
@pytest.mark.parametrize("distribution", ref.DISTRIBUTIONS)
def test_elements_follow_the_documented_address(distribution):
    """Element j of a direction comes from block j // per of counter (block, i, k, t), key (lo, hi)."""
    seed, step, comp, direction = 2**40 + 17, 9, 4, 123
    per = ref.ELEMENTS_PER_BLOCK[distribution]
    start, count = 5, 3 * per + 7  # starts and ends mid-block
    got = ref.elements(seed, step, comp, direction, start, count, distribution)
    assert got.shape == (count,) and got.dtype == np.float32
    key = (seed & 0xFFFFFFFF, seed >> 32)
    for j in range(start, start + count):
        w = u32(naive_philox((j // per, direction, comp, step), key))
        e = j % per
        if distribution == "rademacher":
            expected = 1.0 if (int(w[e // 32]) >> (e % 32)) & 1 else -1.0
            assert got[j - start] == expected
        elif distribution == "uniform":
            m = int(w[e]) >> 8
            assert got[j - start] == (2 * m + 1 - 2**24) / 2**24
        else:
            assert abs(got[j - start] - box_muller64(w[None])[0, e]) < 1e-6


def test_elements_slices_are_consistent():
    for distribution in ref.DISTRIBUTIONS:
        whole = ref.elements(3, 1, 2, 7, 0, 1000, distribution)
        for start, count in [(0, 1), (1, 3), (127, 2), (129, 500), (999, 1)]:
            part = ref.elements(3, 1, 2, 7, start, count, distribution)
            np.testing.assert_array_equal(part, whole[start:start + count])


# ---------------------------------------------------------------- compiled kernel == reference, bit for bit
KERNEL_CASES = [  # (seed, step, compartment, direction)
    (0, 0, 0, 0), (1, 2, 3, 4), (2**32 + 5, 7, 0, 31), (2**64 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1),
    (123456789012345, 1000, 17, 250),
]


@pytest.mark.parametrize("distribution", ref.DISTRIBUTIONS)
@pytest.mark.parametrize("size", [1, 3, 5, 127, 129, 2049, 4099])
def test_kernel_materialize_is_bit_identical_to_reference(distribution, size):
    for seed, step, comp, direction in KERNEL_CASES:
        out = np.full((1, size), np.nan, np.float32)
        cpu.materialize(np.array([direction], np.int64), size, constants.CODES[distribution],
                        np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), step, comp, out)
        expected = ref.elements(seed, step, comp, direction, 0, size, distribution)
        np.testing.assert_array_equal(out[0].view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("distribution", ref.DISTRIBUTIONS)
def test_kernel_is_the_reference_up_to_the_last_block_of_the_largest_direction(distribution):
    """The block word has 32 bits: a direction holds 2**34 elements (2**32 blocks of four), where the word would
    wrap, so RandomBases refuses longer ones. The kernel's last blocks below that limit are the reference's,
    generated alone (no 2**34-element allocation)."""
    assert (ref.MAX_SIZE - 1) // ref.ELEMENTS_PER_BLOCK["normal"] == ref.MAX_INDEX
    per, seed = ref.ELEMENTS_PER_BLOCK[distribution], 2**40 + 3
    out = np.full(2 * per, np.nan, np.float32)
    cpu.fill(out, constants.CODES[distribution], 2**32 - 2, 2, 5, 1, 7, np.uint64(seed & 0xFFFFFFFF),
             np.uint64(seed >> 32))
    expected = ref.elements(seed, 7, 1, 5, (2**32 - 2) * per, 2 * per, distribution)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))
    assert rbdlib.RandomBases(seed, 0, 0, 1, ref.MAX_SIZE).size == ref.MAX_SIZE  # allocates nothing
    with pytest.raises(ValueError, match=r"size must be at most 2\*\*34"):
        rbdlib.RandomBases(seed, 0, 0, 1, ref.MAX_SIZE + 1)


@pytest.mark.parametrize("distribution", ref.DISTRIBUTIONS)
def test_bases_materialize_is_bit_identical_to_reference(distribution):
    """Through RandomBases (scale 1, offset), several directions at once."""
    for seed, step, comp, _ in KERNEL_CASES[:-1]:
        b = rbdlib.RandomBases(seed=seed, step=min(step, 2**32 - 1), compartment=comp, dim=6, size=1001,
                               distribution=distribution, scale=1.0, offset=2**32 - 7)
        rows = b.materialize()
        assert rows.dtype == torch.float32 and rows.shape == (6, 1001)
        for i in range(6):
            expected = ref.elements(seed, step, comp, 2**32 - 7 + i, 0, 1001, distribution)
            np.testing.assert_array_equal(rows[i].numpy().view(np.uint32), expected.view(np.uint32))
