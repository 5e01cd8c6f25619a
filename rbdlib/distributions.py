"""The distributions of basis entries, declared once: every other module reads this table.

A distribution is a name (what users pass), a code (what the compiled kernels are passed), the number of
elements one Philox call (four 32-bit words) gives, the variance of one unscaled entry and the fourth moment of
an entry rescaled to unit variance (the only moment the cosine of a step with the gradient depends on, see
:func:`rbdlib.theory.predicted_cosine`). The transforms from words to entries are the distribution's code in
three places: :mod:`rbdlib.philox` (the NumPy reference), :mod:`rbdlib.kernels.cpu` and :mod:`rbdlib.kernels.cuda`.

Adding a distribution: one :class:`Distribution` below, and its transform in those three modules (the tests
compare the kernels with the reference for every entry of :data:`ALL`).

>>> NAMES
('normal', 'uniform', 'rademacher')
>>> get("rademacher").per_block, get("uniform").variance
(128, 0.3333333333333333)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Distribution:
    """One distribution of basis entries (see the module's docstring)."""

    name: str
    code: int            # the kernels' code: the index in ALL
    per_block: int       # elements made from one Philox call
    variance: float      # of one unscaled entry
    fourth_moment: float  # E[z^4] of an entry rescaled to unit variance
    entries: str         # what an unscaled entry is


ALL = (
    Distribution("normal", 0, 4, 1.0, 3.0, "N(0, 1): Box-Muller on two words per pair of entries"),
    Distribution("uniform", 1, 4, 1.0 / 3.0, 9 / 5, "U(-1, 1): the top 24 bits of one word per entry"),
    Distribution("rademacher", 2, 128, 1.0, 1.0, "+-1: one bit per entry"),
)
BY_NAME = {d.name: d for d in ALL}
NAMES = tuple(BY_NAME)
assert [d.code for d in ALL] == list(range(len(ALL))), "codes index ALL"


def check(name) -> str:
    """``name`` if it names a distribution, else a ``ValueError`` listing them."""
    if not isinstance(name, str) or name not in BY_NAME:
        raise ValueError(f"unknown distribution {name!r}; expected one of {NAMES}")
    return name


def get(name) -> Distribution:
    """The :class:`Distribution` called ``name`` (checked)."""
    return BY_NAME[check(name)]
