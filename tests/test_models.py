"""rbdlib.models: the paper's parameter counts, Keras initialisation, output shapes."""

import doctest

import pytest
import torch
from torch import nn

from rbdlib import models
from rbdlib.models import build, cnn, count_parameters, fc, glorot_bound, resnet8


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("fc", (1, 28, 28), 101_770),
        ("fc", (3, 32, 32), 394_634),
        ("cnn", (1, 28, 28), 93_322),
        ("cnn", (3, 32, 32), 122_570),
        ("resnet8", (3, 32, 32), 77_850),
    ],
)
def test_parameter_counts_match_the_paper(name, shape, expected):
    assert count_parameters(build(name, shape)) == expected


def test_resnet8_plus_batchnorm_statistics_is_the_papers_78330():
    model = resnet8()
    running = ("running_mean", "running_var")
    statistics = sum(b.numel() for n, b in model.named_buffers() if n.endswith(running))
    assert (count_parameters(model), statistics) == (77_850, 480)
    assert count_parameters(model) + statistics == 78_330
    assert count_parameters(model, trainable_only=False) == 77_850  # buffers are not parameters


def test_cnn_layer_sizes_are_the_tensorflow_tutorials():
    sizes = [p.numel() for p in cnn((1, 28, 28)).parameters()]
    weights_and_biases = [sum(sizes[i : i + 2]) for i in range(0, len(sizes), 2)]
    assert weights_and_biases == [320, 18_496, 36_928, 36_928, 650]


@pytest.mark.parametrize("name, shape", [("fc", (1, 28, 28)), ("cnn", (3, 32, 32)), ("resnet8", (3, 32, 32))])
def test_keras_initialisation(name, shape):
    model = build(name, shape, seed=0)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight, bound = module.weight, glorot_bound(module.weight)
            assert weight.abs().max() <= bound
            if weight.numel() >= 2000:  # enough draws to see a uniform distribution on [-bound, bound]
                assert weight.abs().max() > 0.95 * bound
                assert abs(weight.std().item() - bound / 3**0.5) < 0.05 * bound
            if module.bias is not None:
                assert torch.all(module.bias == 0)
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


def test_glorot_bound_counts_the_receptive_field():
    assert glorot_bound(torch.empty(64, 32, 3, 3)) == pytest.approx((6 / (9 * 32 + 9 * 64)) ** 0.5)
    assert glorot_bound(torch.empty(10, 128)) == pytest.approx((6 / 138) ** 0.5)


@pytest.mark.parametrize(
    "name, dataset, shape",
    [("fc", "fashion-mnist", (1, 28, 28)), ("fc", "digits", (1, 8, 8)), ("cnn", "mnist", (1, 28, 28)),
     ("cnn", "cifar10", (3, 32, 32)), ("resnet8", "cifar10", (3, 32, 32))],
)  # fmt: skip
def test_forward_returns_logits_per_class(name, dataset, shape):
    model = build(name, dataset)
    model.eval()
    assert model(torch.randn(5, *shape)).shape == (5, 10)
    assert build(name, dataset, classes=3)(torch.randn(2, *shape)).shape == (2, 3)


def test_build_accepts_a_dataset_and_is_seeded_without_touching_global_rng():
    class Fake:
        train_x = torch.zeros(4, 1, 8, 8)

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build("fc", Fake(), seed=7), build("fc", (1, 8, 8), seed=7)
    assert torch.rand(1) == before  # seeding used a forked RNG
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(build("fc", (1, 8, 8), seed=8)[1].weight, a[1].weight)


def test_helpful_errors():
    with pytest.raises(ValueError, match="Unknown model 'mlp'; expected one of fc, cnn, resnet8"):
        build("mlp", "mnist")
    with pytest.raises(ValueError, match="too small.*Use fc"):
        build("cnn", "digits")
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
        build("fc", "svhn")
    with pytest.raises(ValueError, match=r"\(channels, height, width\), got \(28, 28\)"):
        fc((28, 28))


def test_docstring_examples():
    assert doctest.testmod(models).failed == 0
