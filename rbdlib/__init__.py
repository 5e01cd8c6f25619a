"""rbdlib: train neural networks in low-dimensional random subspaces.

>>> import torch, rbdlib
>>> model = torch.nn.Linear(4, 2)
>>> opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=3, seed=0)
>>> model(torch.ones(1, 4)).sum().backward(); opt.step(); opt.zero_grad()
"""

from . import data, models, train
from .bases import RandomBases, philox4x32
from .kernels.cpu import set_threads
from .kernels.cuda import available as gpu_available
from .optim import FPD, NES, RBD, replay
from .subspace import FixedSubspace

__version__ = "0.1.0"
__all__ = ["data", "models", "train", "RandomBases", "philox4x32", "RBD", "FPD", "NES", "replay", "FixedSubspace",
           "gpu_available", "set_threads"]
