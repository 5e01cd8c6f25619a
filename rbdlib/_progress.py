"""Progress bars: tqdm when installed (it comes with the ``[notebooks]`` extra), else a plain fallback.

The library itself needs only torch, numpy and numba; without tqdm a shown bar becomes one printed
line per ``set_postfix`` (each evaluation of a training run), on stderr.
"""

from __future__ import annotations

import sys

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - exercised by tests that hide tqdm
    tqdm = None


class PlainBar:
    """The part of tqdm's interface rbdlib uses: a context manager with ``update`` and ``set_postfix``."""

    def __init__(self, total=None, disable=False, desc="", **_):
        self.n, self.total, self.disable, self.desc = 0, total, bool(disable), desc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values) -> None:
        if not self.disable:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            print(f"{self.desc}: {self.n}/{self.total or '?'} {shown}", file=sys.stderr, flush=True)


def bar(**kwargs):
    """``tqdm(**kwargs)`` if tqdm is installed, else a :class:`PlainBar`."""
    return (tqdm or PlainBar)(**kwargs)
