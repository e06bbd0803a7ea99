"""dlib's face-recognition ResNet (``anet_type``, see :mod:`.network`) as a PyTorch module.

Every operation reproduces dlib's CPU code (``dlib/cuda/cpu_dlib.cpp``, ``dlib/dnn/layers.h``):

* input (``input_rgb_image_sized``): ``(pixel - mean_c) / 256`` in RGB order, the means read
  from the file (122.782, 117.001, 104.298). The module takes pixels in [0, 1] and scales them
  itself, so it is differentiable from the image.
* convolutions are cross-correlations with biases; a stride-2 conv has no padding, a stride-1
  3x3 conv pads 1 (dlib's default ``stride != 1 ? 0 : size / 2``). The same rule for the pools.
* ``affine_``: batch norm folded into a per-channel scale and shift.
* ``add_prev``: the output has the larger size in every dimension and a missing element counts
  as zero (channels appended at the end, rows and columns at the bottom and right). It happens
  in every down-sampling block (2C block channels + C skip channels) and in the last two levels
  (block 3x3 + skip 4x4; block 1x1 + skip 2x2).
* the skip of a down-sampling block is ``avg_pool<2,2,2,2>`` of its input.
* ``fc_no_bias``: ``out = in W`` with ``W`` stored (in, out), so ``Linear.weight`` is its transpose.

The descriptor is raw (norm about 1.4), as ``compute_face_descriptor`` returns it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (channels, blocks, first block down-samples) of alevel4 ... alevel0, input to output.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
#: dlib's default channel means (the file's own values are loaded into the ``mean`` buffer).
DEFAULT_MEAN = (122.782, 117.001, 104.298)


class Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``x * gamma + beta`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta.view(1, -1, 1, 1), x, self.gamma.view(1, -1, 1, 1))


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add``: the larger size in every dimension, missing elements zero (at the end of each axis)."""
    if a.shape == b.shape:
        return a + b
    k, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, k - t.shape[1]))

    return pad(a) + pad(b)


class Block(nn.Module):
    """``ares<N>`` (identity skip) or ``ares_down<N>`` (stride-2 block, 2x2 average-pooled skip)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """150 x 150 RGB chips in [0, 1], ``(N, 3, 150, 150)``, to raw 128-d descriptors."""

    image_size = 150

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(DEFAULT_MEAN).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.aff = Affine(32)
        blocks, cin = [], 32
        for cout, n, down in LEVELS:
            for i in range(n):
                blocks.append(Block(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x = (x01 * 255.0 - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc over k * nr * nc = 256
