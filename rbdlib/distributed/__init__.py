"""Shared-seed data-parallel RBD on ``torch.distributed``: workers exchange coordinates, not gradients.

Split by role: :mod:`~rbdlib.distributed.protocol` (what ranks exchange: :class:`DistributedRBD`,
:func:`communication`), :mod:`~rbdlib.distributed.launcher` (joining ``torchrun``'s process group, starting
local processes), :mod:`~rbdlib.distributed.example` (a training loop on the paper's FC network) and the
command line ``python -m rbdlib.distributed``. The names below are re-exported for convenience; the
protocol module imports nothing of the launcher, the example or the experiment modules.

>>> import torch, rbdlib
>>> opt = rbdlib.RBD(torch.nn.Linear(784, 10).parameters(), lr=0.5, dim=250)
>>> communication(opt, world_size=2, scheme="independent")["coord_bytes_per_step"]
2000
"""

from .example import train
from .launcher import LaunchError, free_port, init, launch
from .protocol import SCHEMES, DistributedRBD, communication

__all__ = ["DistributedRBD", "communication", "SCHEMES", "init", "launch", "free_port", "LaunchError", "train"]
