"""cos(RBD step, gradient) per compartment scheme, measured over many basis draws, against
``rbdlib.theory.predicted_cosine`` (notebook 05's equation 2 and its first-order spread).

The measurement is the optimizer's own ``last_cosine`` at ``lr=0`` (fresh bases every step, nothing moves),
checked once against the cosine of the step built from materialized bases. The gradient is deliberately
uneven across tensors, so that the schemes differ and a prediction that ignored |g_k|^2 would fail.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import rbdlib
from rbdlib.theory import predicted_cosine

SIZES, SCALES = [4000, 64, 640, 10], [0.3, 3.0, 4.0, 10.0]   # 3 % of the parameters hold 97 % of |g|^2
SCHEMES = [("network", False), ("tensor", True), ("tensor", False), (1000, False), (1000, True)]
DRAWS = 300


def uneven_params(seed=1):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in SIZES]
    for p, s in zip(params, SCALES):
        p.grad = s * torch.randn(p.numel(), generator=gen)
    return params


def measured(params, cut, split, distribution, dim=32):
    opt = rbdlib.RBD(params, lr=0.0, dim=dim, compartments=cut, split_dim=split, distribution=distribution, seed=3)
    cosines = []
    for _ in range(DRAWS):
        opt.step()
        cosines.append(opt.last_cosine)
    return opt, statistics.mean(cosines), statistics.stdev(cosines)


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
@pytest.mark.parametrize("cut, split", SCHEMES)
def test_measured_cosine_matches_theory(cut, split, distribution):
    params = uneven_params()
    opt, mean, sd = measured(params, cut, split, distribution)
    pred_mean, pred_sd = predicted_cosine(opt.gradient(), opt.dims, distribution)
    # the standard error of the mean is sd / sqrt(300), at most 1.5 % of the mean here: 5 % is > 3 of them
    assert abs(mean - pred_mean) < 0.05 * pred_mean, (opt.dims, mean, pred_mean)
    # the sd of 300 draws is known to about 4 %; the first-order spread neglects O(d_k / D_k) terms
    assert abs(sd - pred_sd) < 0.15 * pred_sd, (opt.dims, sd, pred_sd)


def test_the_tolerance_separates_the_schemes():
    """The uneven gradient makes equation (2) differ from the even-gradient guess sqrt(sum d_k / D) by more
    than the tolerance above, so the test above checks the |g_k|^2 weighting, not just the scale."""
    params = uneven_params()
    for split in (True, False):
        opt = rbdlib.RBD(params, lr=0.0, dim=32, compartments="tensor", split_dim=split)
        pred, _ = predicted_cosine(opt.gradient(), opt.dims, "rademacher")
        even = math.sqrt(sum(opt.dims) / sum(SIZES))
        assert abs(pred - even) > 0.2 * pred


def test_last_cosine_is_the_cosine_of_the_materialized_step():
    params = uneven_params()
    opt = rbdlib.RBD(params, lr=0.0, dim=8, compartments=1000, distribution="rademacher", seed=5)
    grads = [g.double() for g in opt.gradient()]
    bases = [opt.bases(k).materialize().double() for k in range(len(opt.dims))]   # d_k x D_k, scaled
    step = torch.cat([P.T @ (P @ g) for P, g in zip(bases, grads)])
    g = torch.cat(grads)
    opt.step()
    assert opt.last_cosine == pytest.approx(float(step @ g / (step.norm() * g.norm())), rel=1e-5)


def test_predicted_cosine_checks_its_arguments():
    with pytest.raises(ValueError, match="dims"):
        predicted_cosine([torch.ones(3)], [1, 2])
    with pytest.raises(ValueError, match="distribution"):
        predicted_cosine([torch.ones(3)], [1], "cauchy")
