"""``python -m rbdlib.bench``: :func:`rbdlib.bench.main`."""

from . import main

main()
