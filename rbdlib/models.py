"""The paper's networks, initialised as Keras does (Glorot-uniform weights, zero biases); outputs are logits.

| network | input | parameters D |
|---|---|---|
| ``fc``      | 1x28x28 / 3x32x32 | 101,770 / 394,634 |
| ``cnn``     | 1x28x28 / 3x32x32 | 93,322 / 122,570 |
| ``resnet8`` | 3x32x32           | 77,850 trainable (+480 BatchNorm statistics = the paper's 78,330) |

Beside them, for the comparison with RBD's successors (issue 27), ``CharTransformer``: a character-level language
model of 829,568 parameters at its defaults (the Jargon File's 155 characters, :mod:`rbdlib.text`).

>>> count_parameters(fc()), count_parameters(cnn()), count_parameters(resnet8())
(101770, 93322, 77850)
>>> build("cnn", "cifar10")(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checks

__all__ = ["fc", "cnn", "resnet8", "build", "count_parameters", "keras_init_", "glorot_bound", "input_shape"]
__all__ += ["BasicBlock", "MODELS", "CharTransformer", "TransformerBlock"]

MODELS = ("fc", "cnn", "resnet8")
_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "digits": (1, 8, 8)}


def keras_init_(model: nn.Module) -> nn.Module:
    """Re-initialise in place as Keras defaults: Glorot-uniform kernels, zero biases, BatchNorm 1 and 0.

    >>> layer = keras_init_(nn.Linear(3, 2))
    >>> layer.bias.abs().sum().item()
    0.0
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw the initial weights from ``seed`` without disturbing the global random state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_shape(in_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"{who}: in_shape must be (channels, height, width), got {tuple(in_shape)}.")
    return tuple(int(s) for s in in_shape)  # type: ignore[return-value]


def fc(in_shape: Sequence[int] = (1, 28, 28), classes: int = 10, seed: int | None = None,
       hidden: int = 128) -> nn.Sequential:
    """The paper's fully connected network: Flatten, Dense ``hidden`` (the paper: 128) ReLU, Dense ``classes``.

    >>> count_parameters(fc((3, 32, 32))), count_parameters(fc(hidden=512))
    (394634, 407050)
    """
    c, h, w = _check_shape(in_shape, "fc")
    checks.whole("hidden", hidden, low=1, what="a positive number of units")
    with _seeded(seed):
        model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        return keras_init_(model)


def cnn(in_shape: Sequence[int] = (1, 28, 28), classes: int = 10, seed: int | None = None) -> nn.Sequential:
    """The TensorFlow tutorial CNN used in the paper (valid 3x3 convolutions, 2x2 max pooling).

    Conv 32 ReLU, MaxPool, Conv 64 ReLU, MaxPool, Conv 64 ReLU, Flatten, Dense 64 ReLU, Dense ``classes``.

    >>> count_parameters(cnn((3, 32, 32)))
    122570
    """
    c, h, w = _check_shape(in_shape, "cnn")
    side_h, side_w = ((h - 2) // 2 - 2) // 2 - 2, ((w - 2) // 2 - 2) // 2 - 2
    if min(side_h, side_w) < 1:
        raise ValueError(
            f"cnn: a {h}x{w} input is too small for three valid 3x3 convolutions and two poolings; "
            "it needs at least 18x18. Use fc for the 8x8 digits."
        )
    with _seeded(seed):
        model = nn.Sequential(
            nn.Conv2d(c, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * side_h * side_w, 64), nn.ReLU(), nn.Linear(64, classes),
        )  # fmt: skip
        return keras_init_(model)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU.

    The shortcut is the identity, or a bias-free 1x1 convolution (no BatchNorm) when the shape changes.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = _batchnorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = _batchnorm(channels)
        reshape = stride != 1 or in_channels != channels
        self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False) if reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # Keras defaults (momentum 0.99 = 1 - 0.01)


def resnet8(classes: int = 10, in_channels: int = 3, seed: int | None = None) -> nn.Sequential:
    """ResNet-8 for CIFAR-10: conv 16, then one basic block per stage [16], [32, stride 2], [64, stride 2].

    77,850 trainable parameters. The paper's D = 78,330 is Keras' ``count_params``, which also counts
    the 480 BatchNorm running means and variances (240 channels); here those are buffers, not parameters.

    >>> model = resnet8()
    >>> count_parameters(model), sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    (77850, 480)
    """
    with _seeded(seed):
        model = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), _batchnorm(16), nn.ReLU(),
            BasicBlock(16, 16), BasicBlock(16, 32, stride=2), BasicBlock(32, 64, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
        )  # fmt: skip
        return keras_init_(model)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``; causal multi-head self-attention
    through ``F.scaled_dot_product_attention(..., is_causal=True)`` and a 4x GELU MLP, no dropout."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # b x heads x t x width/heads
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, width))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A character-level GPT: token and learned position embeddings, ``layers`` :class:`TransformerBlock`, a final
    LayerNorm, and a head tied to the token embedding (logits ``h E^T``: one ``vocab x width`` matrix, read at the
    input and written at the output, as GPT-2; it saves ``vocab x width`` parameters, 19,840 at the defaults).

    Initialised as GPT-2: weights N(0, 0.02), the two projections that write into the residual stream
    N(0, 0.02 / sqrt(2 layers)), biases 0, LayerNorm 1 and 0. Input: token ids ``batch x t`` with ``t <= context``;
    output: logits ``batch x t x vocab``, position i seeing tokens 0..i only.

    >>> model = CharTransformer(vocab=155, seed=0)
    >>> count_parameters(model), model(torch.zeros(2, 16, dtype=torch.long)).shape
    (829568, torch.Size([2, 16, 155]))
    """

    def __init__(self, vocab: int, context: int = 128, width: int = 128, layers: int = 4, heads: int = 4,
                 seed: int | None = None):
        super().__init__()
        for name, value in (("vocab", vocab), ("context", context), ("width", width), ("layers", layers),
                            ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CharTransformer: {name} must be a positive integer, got {value!r}")
        if width % heads:
            raise ValueError(f"CharTransformer: width {width} must be a multiple of heads {heads}")
        self.context = context
        with _seeded(seed):
            self.embed, self.position = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.blocks = nn.ModuleList(TransformerBlock(width, heads) for _ in range(layers))
            self.ln = nn.LayerNorm(width)
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)
            for block in self.blocks:
                for residual in (block.proj, block.mlp[2]):
                    nn.init.normal_(residual.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.context:
            raise ValueError(f"CharTransformer takes token ids batch x t with t <= context {self.context}, "
                             f"got shape {tuple(tokens.shape)}")
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.embed.weight.T


def input_shape(dataset: object) -> tuple[int, int, int]:
    """``(C, H, W)`` for a dataset name, a shape, or anything with ``train_x`` (a ``Dataset``).

    >>> input_shape("cifar10"), input_shape((1, 8, 8))
    ((3, 32, 32), (1, 8, 8))
    """
    if isinstance(dataset, str):
        if dataset not in _SHAPES:
            raise ValueError(f"Unknown dataset {dataset!r}; expected one of {', '.join(_SHAPES)} or a shape.")
        return _SHAPES[dataset]
    if hasattr(dataset, "train_x"):
        return _check_shape(dataset.train_x.shape[1:], "input_shape")
    return _check_shape(dataset, "input_shape")  # type: ignore[arg-type]


def build(
    name: str, dataset: object = "fashion-mnist", classes: int = 10, seed: int | None = None,
    width: int | None = None,
) -> nn.Module:
    """Build network ``name`` ("fc", "cnn" or "resnet8") for a dataset name, ``(C, H, W)`` or ``Dataset``;
    ``width`` sets the FC network's hidden units (default the paper's 128).

    >>> count_parameters(build("fc", "mnist", seed=0))
    101770
    """
    shape = input_shape(dataset)
    if width is not None and name != "fc":
        raise ValueError(f"width sets the hidden units of the fc network; {name!r} has no such option")
    if name == "fc":
        return fc(shape, classes, seed, 128 if width is None else width)
    if name == "cnn":
        return cnn(shape, classes, seed)
    if name == "resnet8":
        return resnet8(classes, shape[0], seed)
    raise ValueError(f"Unknown model {name!r}; expected one of {', '.join(MODELS)}.")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters D, the dimension the random bases live in.

    >>> count_parameters(nn.Linear(784, 128))
    100480
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def glorot_bound(weight: torch.Tensor) -> float:
    """Glorot-uniform limit ``sqrt(6 / (fan_in + fan_out))`` for a Linear or Conv weight."""
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return math.sqrt(6.0 / ((weight.shape[0] + weight.shape[1]) * receptive))
