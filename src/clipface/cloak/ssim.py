"""Differentiable SSIM and Fawkes' DSSIM in torch.

The definition is that of ``tf.image.ssim``, which Fawkes calls (``differentiator.py``,
``calc_dissim``: ``(1 - tf.image.ssim(a, b, max_val=255)) / 2``): an 11-tap Gaussian window of
sigma 1.5, ``k1 = 0.01``, ``k2 = 0.03``, each channel filtered separately with no padding
("valid"), SSIM = luminance x contrast-structure averaged over positions and channels. It
equals scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps centred on the middle one."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def gaussian_filter(x: torch.Tensor, size: int, sigma: float, padding: str = "valid") -> torch.Tensor:
    """Separable Gaussian filter of ``(N, C, H, W)``, channels apart; ``padding`` ``valid`` or ``reflect``."""
    c = x.shape[1]
    g = gaussian_kernel(size, sigma, x.dtype).to(x.device)
    if padding == "reflect":
        half = size // 2
        x = F.pad(x, (half, half, half, half), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Local SSIM of ``(N, C, H, W)`` images (``H, W >= 11``) at every valid window, ``(N, C, H - 10, W - 10)``."""
    if x.shape != y.shape:
        raise ValueError(f"ssim needs images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < WINDOW:
        raise ValueError(f"ssim needs images of at least {WINDOW}x{WINDOW} pixels, got {tuple(x.shape[-2:])}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    n = x.shape[0]
    stats = gaussian_filter(torch.cat([x, y, x * x, y * y, x * y]), WINDOW, SIGMA)
    mx, my, xx, yy, xy = stats.split(n)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return luminance * cs


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each pair of ``(N, C, H, W)`` images (``H, W >= 11``), shape ``(N,)``."""
    return ssim_map(x, y, data_range).mean(dim=(1, 2, 3))


def dssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Fawkes' structural dissimilarity ``(1 - SSIM) / 2`` of each pair, shape ``(N,)``."""
    return (1.0 - ssim(x, y, data_range)) / 2.0


def dssim_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """DSSIM of two ``H x W x 3`` uint8 images, computed in float64 on the 0-255 scale."""
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64)).permute(2, 0, 1)[None]
    return float(dssim(ta, tb, data_range=255.0)[0])
