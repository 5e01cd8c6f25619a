"""Fixed projection descent: :func:`FPD`, RBD whose bases are drawn once (Li et al. 2018), and
:class:`StaleFPD`, FPD as the reference code runs it, kept as an ablation (``FPD(..., reset_coords=False)``)."""

from __future__ import annotations

import torch

from . import checks
from . import step as core
from .conventions import eager
from .optim import RBD


def FPD(params, lr: float, dim: int, reset_coords: bool = True, **kwargs) -> RBD:
    """Fixed projection descent: RBD whose bases are drawn once (``redraw=None``), as in Li et al.

    ``reset_coords=False`` gives :class:`StaleFPD`, the reference code's variant (an ablation)."""
    if "redraw" in kwargs:
        raise TypeError("FPD fixes the bases; use RBD(..., redraw=N) to choose how often they change")
    if not checks.flag("reset_coords", reset_coords):
        return StaleFPD(params, lr, dim, **kwargs)
    return RBD(params, lr, dim, redraw=None, **kwargs)


class StaleFPD(RBD):
    """FPD as the reference code runs it, kept to measure what that costs (``FPD(..., reset_coords=False)``).

    The reference re-parameterises every weight as theta + P c and computes c = P^T g by back-propagation.
    For FPD it never resets c to 0 (``reset_coordinates_each_step: False``), so each gradient is taken at
    theta_t + P c_{t-1}, where c_{t-1} = P^T g_{t-1} are the previous step's coordinates, while the update
    theta <- theta - lr P c_t and the validation use theta itself. ``step(closure)`` therefore needs a
    closure (the training loop passes one): it moves to theta + P c_{t-1}, evaluates the closure there,
    puts every parameter back bit for bit, and steps. Fixed bases only; not recordable (``replay`` knows
    the plain methods only) and not distributed.
    """

    needs_closure = True

    def __init__(self, params, lr: float, dim: int, **kwargs):
        if "redraw" in kwargs or kwargs.get("record"):
            raise TypeError("StaleFPD has fixed bases (redraw=None) and does not record")
        super().__init__(params, lr, dim, redraw=None, **kwargs)
        self.stale = None  # the previous step's coordinates, one tensor per compartment

    @eager
    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise TypeError("StaleFPD.step needs a closure that computes the loss and its gradients: the "
                            "gradient is taken at theta + P c_prev (rbdlib.train.train passes one)")
        self.check()
        saved = None
        if self.stale is not None:
            saved = [p.detach().clone() for p in self.params]
            # theta + P c_prev, whatever the learning rates: a displacement, not an update (no rule, no state)
            core.move(self.params, self.layout, [b.expand(c) for b, c in zip(
                core.bases(self._plan(), self.steps), self.stale)], [1.0] * len(self.params))
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            for p, s in zip(self.params, saved or ()):
                p.copy_(s)
        coords = self.update()
        if coords is not None:
            self.stale = [c.clone() for c in coords]
        return loss

    def state_dict(self):
        state = super().state_dict()
        state["rbd"]["stale"] = None if self.stale is None else [c.clone() for c in self.stale]
        return state

    def load_state_dict(self, state_dict):
        """As :meth:`RBD.load_state_dict`, plus the previous coordinates (checked first)."""
        extra = state_dict.get("rbd") if isinstance(state_dict, dict) else None
        if not isinstance(extra, dict) or "stale" not in extra:
            raise ValueError("the state has no 'stale' coordinates: it was not saved by a StaleFPD")
        stale = extra["stale"]
        if stale is not None and (not isinstance(stale, list) or len(stale) != len(self.dims) or not all(
                isinstance(c, torch.Tensor) and c.dtype == torch.float32 and c.shape == (n,)
                and bool(torch.isfinite(c).all()) for c, n in zip(stale, self.dims))):
            raise ValueError(f"the saved stale coordinates must be None or finite float32 tensors of the "
                             f"shapes {[(n,) for n in self.dims]}")
        super().load_state_dict(dict(state_dict, rbd={k: v for k, v in extra.items() if k != "stale"}))
        self.stale = None if stale is None else [c.to(self.params[0].device).clone() for c in stale]
