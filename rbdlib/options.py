"""The options that fix an RBD step, checked once for the optimizers and the records: the update rule's
(:class:`Rule`, what eqs. (4)-(6) of :mod:`rbdlib.step` do) and the bases' (seed, redraw, distribution, scale)."""

from __future__ import annotations

from dataclasses import dataclass

from . import checks, distributions
from . import philox as ref


@dataclass(frozen=True)
class Rule:
    """An update rule's options (the defaults: plain RBD), as :func:`check_rule` makes them."""
    momentum: float = 0.0
    nesterov: bool = False
    memory: str = "parameters"   # where the momentum is kept: "parameters" (D numbers) or "coordinates" (d_k)
    adaptive: float = 0.0        # beta of eq. (6); 0: off
    eps: float = 1e-8

    @property
    def per_compartment(self) -> bool:
        """Whether the rule keeps state per compartment (coordinate momentum, the adaptive scale)."""
        return bool(self.adaptive) or (bool(self.momentum) and self.memory == "coordinates")

    def options(self) -> dict:
        """The options set, as a configuration lists them: only those set, so plain RBD's is empty."""
        config = dict(momentum=self.momentum, nesterov=self.nesterov) if self.momentum else {}
        if self.memory != "parameters":
            config["memory"] = self.memory
        if self.adaptive:
            config.update(adaptive=self.adaptive, eps=self.eps)
        return config


PLAIN = Rule()


def check_rule(momentum=0.0, nesterov=False, memory="parameters", adaptive=0.0, eps=1e-8) -> Rule:
    """A :class:`Rule` from the options of :class:`rbdlib.RBD`, each checked, with an error naming a bad one."""
    momentum = checks.real("momentum", momentum, 0, 1, hint=" (0: plain RBD; 0.9 is usual)")
    if checks.flag("nesterov", nesterov) and momentum == 0:
        raise ValueError("nesterov=True needs a momentum in (0, 1), got momentum=0")
    checks.choice("memory", memory, ("parameters", "coordinates"), what='"parameters" or "coordinates"',
                  hint=" (where momentum is kept)")
    if memory == "coordinates" and not momentum:
        raise ValueError('memory="coordinates" keeps the momentum in the coordinates: give a momentum in (0, 1)')
    adaptive = checks.real("adaptive", adaptive, 0, 1,
                           hint=" (beta of the running mean square; 0: off, 0.999 is usual)")
    return Rule(momentum, nesterov, memory, adaptive, checks.real("eps", eps, low_open=True))


def check_bases(seed, redraw, distribution, scale, where: str = "") -> tuple[int, int | None, float | None]:
    """The options that fix the bases of every step (see :func:`rbdlib.step.basis`), each checked: a 64-bit
    ``seed``, a positive ``redraw`` or None, a declared ``distribution``, a positive ``scale`` or None
    (1/sqrt(D)). ``where`` prefixes the names ("the record's "). Returns (seed, redraw, scale)."""
    seed = checks.index(f"{where}seed", seed, ref.MAX_SEED)
    if redraw is not None and checks.index(f"{where}redraw", redraw, ref.MAX_INDEX) < 1:
        raise ValueError(f"{where}redraw must be a positive number of steps, or None for fixed bases")
    distributions.check(distribution)
    if scale is not None:
        scale = checks.real(f"{where}scale", scale, low_open=True, what="a positive finite number or None",
                            hint=" (1/sqrt(D))")
    return seed, None if redraw is None else int(redraw), scale
