"""Imported first by rbdlib: torch's OpenMP workers sleep instead of spinning when they are idle.

By default torch's OpenMP workers spin for milliseconds after every parallel region. On a busy or 2-core
machine that spinning takes the cores from rbdlib's kernels and from other processes: measured here under
load, a training step was 10-25x slower with spinning workers than with sleeping ones, whose cost is a few
microseconds per parallel region. OpenMP reads OMP_WAIT_POLICY once, when torch is first imported, so
this acts only when rbdlib is imported before torch, and it never overrides a value the user has set.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
