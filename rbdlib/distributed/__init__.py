"""Shared-seed data-parallel RBD on ``torch.distributed``: workers exchange coordinates, not gradients.

Split by role: :mod:`~rbdlib.distributed.protocol` (what ranks exchange: :class:`DistributedRBD`,
:func:`communication`) and :mod:`~rbdlib.distributed.launcher` (joining ``torchrun``'s process group, starting
local processes). The names below are re-exported for convenience. Neither module knows a dataset or a
network: the example that trains the paper's FC network this way, and its command line, are
:mod:`rbdlib.shared_seeds`.

>>> import torch, rbdlib
>>> opt = rbdlib.RBD(torch.nn.Linear(784, 10).parameters(), lr=0.5, dim=250)
>>> communication(opt, world_size=2, scheme="independent")["coord_bytes_per_step"]
2000
"""

from .launcher import LaunchError, free_port, init, launch
from .protocol import SCHEMES, DistributedRBD, communication

__all__ = ["DistributedRBD", "communication", "SCHEMES", "init", "launch", "free_port", "LaunchError"]
