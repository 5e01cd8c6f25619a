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

Only torch, numpy and numba are needed to import rbdlib; the ``[notebooks]`` extra adds matplotlib
(``rbdlib.viz``, plots), ipywidgets, tqdm (progress bars; a plain fallback without it) and
scikit-learn (the offline ``digits`` dataset).
"""

# modules, not names: rbdlib.data, rbdlib.models, rbdlib.train (import order against torch does not matter:
# the CPU kernels run on torch's own OpenMP threads, see rbdlib/kernels/cpu.py)
from . import data, models, train  # noqa: F401
from .bases import RandomBases, philox4x32
from .footprint import footprint
from .kernels.cpu import set_threads
from .kernels.cuda import available as gpu_available
from .optim import FPD, NES, RBD, replay
from .subspace import FixedSubspace
from .successors import ApolloMini, Flora, GaLore, GoLore, MeZO
from .train import evaluate
from .train import train as fit

__version__ = "0.1.0"
__all__ = ["RBD", "FPD", "NES", "replay", "FixedSubspace", "RandomBases", "philox4x32", "fit", "evaluate",
           "footprint", "gpu_available", "set_threads", "Flora", "GaLore", "GoLore", "ApolloMini", "MeZO"]
