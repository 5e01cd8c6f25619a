"""The checks of numbers, indices, flags and choices that rbdlib's public functions run on their arguments.

One message style: the argument's name, what it must be, and what was given,

    <name> must be <what>[ (<hint>)], got <value!r>

a ``TypeError`` where only the type is wrong and the range is not in question (an index, a flag), else a
``ValueError``. Nothing is converted silently: ``True`` is not the integer 1, ``"3"`` is not the number 3.

>>> index("step", 7, 2**32 - 1)
7
>>> real("lr", -1, what="a non-negative finite number")
Traceback (most recent call last):
...
ValueError: lr must be a non-negative finite number, got -1
>>> flag("split_dim", 1)
Traceback (most recent call last):
...
TypeError: split_dim must be True or False, got int 1
"""

from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
    """An integer, not a bool (``True`` is no count of anything)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def index(name: str, value, high: int, low: int = 0) -> int:
    """An integer in [low, high]: a ``TypeError`` naming the type of anything else, a ``ValueError`` naming the
    range for an integer outside it.

    >>> index("dim", 2.5, 10)
    Traceback (most recent call last):
    ...
    TypeError: dim must be an integer, got float 2.5
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def whole(name: str, value, low: int = 0, what: str | None = None, hint: str = "") -> int:
    """An integer >= ``low`` (a count, a size, a seed): a ``ValueError`` for anything else, its type included.

    >>> whole("world_size", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: world_size must be a positive integer, got 0
    """
    if not is_int(value) or value < low:
        what = what or {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
        raise ValueError(f"{name} must be {what}{hint}, got {value!r}")
    return int(value)


def real(name: str, value, low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
         what: str | None = None, hint: str = "", where: str = "") -> float:
    """A real number in [low, high) (or (low, high) with ``low_open``); NaN, infinities, bools and strings are
    refused with a ``ValueError``. ``what`` says what the number must be, ``hint`` why or what is usual, ``where``
    where it was found ("in param_groups").

    >>> real("momentum", 1.0, 0, 1, hint=" (0.9 is usual)")
    Traceback (most recent call last):
    ...
    ValueError: momentum must be a number in [0, 1) (0.9 is usual), got 1.0
    """
    ok = is_real(value) and (low < value if low_open else low <= value) and value < high
    if not ok:
        if what is None:
            finite = high == math.inf
            what = (f"a {'positive' if low_open else 'non-negative'} finite number" if finite and low == 0
                    else f"a number in {'(' if low_open else '['}{low:g}, {high:g})")
        raise ValueError(f"{name} must be {what}{hint}, got {value!r}{where}")
    return float(value)


def flag(name: str, value) -> bool:
    """``True`` or ``False`` and nothing else (not 1, not ``"false"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def choice(name: str, value, options, what: str | None = None, hint: str = ""):
    """One of ``options`` (compared with ``==``), or a ``ValueError`` listing them.

    >>> choice("scheme", "both", ("shared", "independent"))
    Traceback (most recent call last):
    ...
    ValueError: scheme must be one of ('shared', 'independent'), got 'both'
    """
    if isinstance(value, bool) or value not in tuple(options):
        raise ValueError(f"{name} must be {what or f'one of {tuple(options)}'}{hint}, got {value!r}")
    return value
