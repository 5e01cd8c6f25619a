"""What the CPU and CUDA kernels share, taken from the declarations they implement: the distributions' codes
(:mod:`rbdlib.distributions`), the float32 constants of the transforms and Philox's round constants
(:mod:`rbdlib.philox`), and how many directions ``expand`` adds in float32 before moving the sum to float64.
(Each kernel keeps its own tile size: they are tuned apart.)

The CPU kernel reads these as Numba globals; the CUDA kernel gets them as ``#define`` lines (:func:`defines`).
Neither kernel module defines a number the other one needs.
"""

from __future__ import annotations

import numpy as np

from .. import philox as ref
from ..distributions import ALL

#: the kernels' code of each distribution, and the codes by name
CODES = {d.name: d.code for d in ALL}
NORMAL, UNIFORM, RADEMACHER = CODES["normal"], CODES["uniform"], CODES["rademacher"]
#: elements of one Philox call, indexed by code
PER_BLOCK = np.array([d.per_block for d in ALL], np.int64)

FLUSH = 64  # expand adds this many directions in float32 before moving the sum to float64

# float32 constants of the transforms (the same numbers as the reference's, named as the kernels use them)
_F = np.float32
LN2, SQRT2, HALF_PI = ref.LN2, ref.SQRT2, ref.HALF_PI
P22, P23, P24 = ref.TWO_POW_M22, ref.TWO_POW_M23, ref.TWO_POW_M24
L9, L7, L5, L3 = (_F(c) for c in ref.LOG_SERIES[:4])
S9, S7, S5, S3 = (_F(c) for c in ref.SIN_SERIES[:4])
C10, C8, C6, C4, C2 = (_F(c) for c in ref.COS_SERIES[:5])
assert ref.LOG_SERIES[4] == ref.SIN_SERIES[4] == ref.COS_SERIES[5] == 1.0  # the constant terms: written as 1

#: the float32 constants the CUDA source reads (C2 = -0.5 is written out there)
FLOATS = ("P22", "P23", "P24", "SQRT2", "LN2", "HALF_PI", "L9", "L7", "L5", "L3",
          "S9", "S7", "S5", "S3", "C10", "C8", "C6", "C4")


def float_literal(x) -> str:
    """A float32 as the shortest C decimal literal that reads back as exactly the same float32
    (``5.9604645e-08f``), so a C source means the same bits under any C++ standard. Hex floats (``0x1p-24f``)
    would be exact too, but they are C++17: NVRTC rejects them under an older ``-std``, while g++ accepts them
    as an extension, which is how they once slipped past the CPU emulation of the CUDA source."""
    return f"({np.format_float_scientific(np.float32(x), unique=True, exp_digits=2)}f)"


def defines() -> str:
    """``#define`` lines for a C source: the float32 constants, FLUSH, Philox's round constants and the
    distributions' codes."""
    lines = [f"#define {n} {float_literal(globals()[n])}" for n in FLOATS]
    lines += [f"#define FLUSH {FLUSH}"]
    lines += [f"#define {n} 0x{getattr(ref, n):08X}u" for n in ("PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1")]
    lines += [f"#define PHILOX_ROUNDS {ref.ROUNDS}"]
    lines += [f"#define {d.name.upper()} {d.code}" for d in ALL]
    return "\n".join(lines) + "\n"
