"""rbdlib: train neural networks in low-dimensional random subspaces.

>>> import torch, rbdlib
>>> model = torch.nn.Linear(4, 2)
>>> opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=3, seed=0)
>>> model(torch.ones(1, 4)).sum().backward(); opt.step(); opt.zero_grad()

``__all__`` lists the optimizers, bases and functions. Modules stay modules: ``rbdlib.data``,
``rbdlib.models``, ``rbdlib.train`` (the training loop's module), ``rbdlib.distributed``, ... The
training loop itself is the function ``rbdlib.fit`` (the same object as ``rbdlib.train.train``, so
``from rbdlib.train import train`` keeps working): a package attribute named ``train`` would be
replaced by the submodule of that name the moment anything imports ``rbdlib.train``.

``import rbdlib`` loads the optimizers and their kernels only; ``data``, ``models``, ``train``, ``fit`` and
``evaluate`` are imported the first time they are used. Only torch, numpy and numba are needed to import
rbdlib; the ``[notebooks]`` extra adds matplotlib (``rbdlib.viz``, plots), ipywidgets, tqdm (progress bars; a
plain fallback without it) and scikit-learn (the offline ``digits`` dataset).
"""

import importlib

from .bases import RandomBases, philox4x32
from .footprint import footprint
from .fpd import FPD
from .kernels.cpu import set_threads
from .kernels.cuda import available as gpu_available
from .nes import NES
from .optim import RBD
from .record import replay
from .subspace import FixedSubspace
from .successors import ApolloMini, Flora, GaLore, GoLore, MeZO

__version__ = "0.1.0"
__all__ = ["RBD", "FPD", "NES", "replay", "FixedSubspace", "RandomBases", "philox4x32", "fit", "evaluate",
           "footprint", "gpu_available", "set_threads", "Flora", "GaLore", "GoLore", "ApolloMini", "MeZO"]

# What the study needs (datasets, networks, the training loop) is imported on first use, not with the optimizers:
# ``rbdlib.data``, ``rbdlib.models``, ``rbdlib.text`` and ``rbdlib.train`` as modules, ``fit`` and ``evaluate``
# from the last.
_MODULES = ("data", "models", "text", "train")
_NAMES = {"fit": ("train", "train"), "evaluate": ("train", "evaluate")}


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        module, attribute = _NAMES[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES) | set(_NAMES))
