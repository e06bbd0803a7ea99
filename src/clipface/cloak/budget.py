"""The DSSIM budget: scale a perturbation until the saved 8-bit cloak is within it, and measure cloaks.

A cloak changes only the pixels of a box (the surrogates' face crops). Every SSIM window that
does not touch that box sees the same pixels in the original and the cloak and has SSIM 1
exactly, so the DSSIM of the whole image follows from the windows that touch the box:
``(1 - (sum over them + number of the others) / number of windows) / 2``. Those windows are
computed in float64 bands of about a megapixel, so measuring a 36-megapixel photo holds a few
hundred MB at most, whatever the size of the face, and the result is the exact DSSIM of the
saved pixels (equal to :func:`~clipface.cloak.ssim.dssim_uint8` of the whole images, up to the
order of summation).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .ssim import WINDOW, ssim_map
from .views import Box

__all__ = [
    "budget_measure",
    "changed_box",
    "fit_budget",
    "fit_budget_region",
    "image_stats",
    "region_dssim",
    "within_budget",
]

#: Pixels per band when SSIM windows are summed (float64: about 300 MB of scratch at most).
BAND_PIXELS = 1 << 20


def _crop(a: np.ndarray, box: Box | None) -> np.ndarray:
    return a if box is None else a[box[1] : box[3], box[0] : box[2]]


def _grow(box: Box, margin: int, width: int, height: int) -> Box:
    return (max(0, box[0] - margin), max(0, box[1] - margin), min(width, box[2] + margin), min(height, box[3] + margin))


def ssim_sum(a: np.ndarray, b: np.ndarray, band_pixels: int = BAND_PIXELS) -> tuple[float, int]:
    """Sum and number of local SSIM values (every valid 11x11 window, every channel) of two ``H x W x 3`` uint8
    arrays."""
    h, w = a.shape[:2]
    if h < WINDOW or w < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW}x{WINDOW} pixels, got {w}x{h}")
    rows = max(1, band_pixels // max(1, w))
    total, count = 0.0, 0
    for top in range(0, h - WINDOW + 1, rows):
        bottom = min(h, top + rows + WINDOW - 1)
        ta = torch.from_numpy(np.ascontiguousarray(a[top:bottom], dtype=np.float64)).permute(2, 0, 1)[None]
        tb = torch.from_numpy(np.ascontiguousarray(b[top:bottom], dtype=np.float64)).permute(2, 0, 1)[None]
        local = ssim_map(ta, tb, data_range=255.0)
        total += float(local.sum())
        count += local.numel()
    return total, count


def region_dssim(original: np.ndarray, cloak_box: np.ndarray, box: Box) -> float:
    """DSSIM of the whole image when only ``box`` differs from ``original`` (``cloak_box`` holds the box's new
    pixels)."""
    h, w = original.shape[:2]
    grown = _grow(box, WINDOW - 1, w, h)
    before = _crop(original, grown)
    after = before.copy()
    left, top = box[0] - grown[0], box[1] - grown[1]
    after[top : top + cloak_box.shape[0], left : left + cloak_box.shape[1]] = cloak_box
    local_sum, local_count = ssim_sum(before, after)
    total = 3 * (h - WINDOW + 1) * (w - WINDOW + 1)
    return (1.0 - (local_sum + (total - local_count)) / total) / 2.0


def _box_dssim(original_box: np.ndarray, cloak_box: np.ndarray) -> float:
    local_sum, local_count = ssim_sum(original_box, cloak_box)
    return (1.0 - local_sum / local_count) / 2.0


def changed_box(delta: np.ndarray) -> Box:
    """The bounding box of the non-zero pixels of an ``H x W x 3`` perturbation (at least the SSIM window)."""
    h, w = delta.shape[:2]
    rows, cols = np.flatnonzero(np.any(delta != 0, axis=(1, 2))), np.flatnonzero(np.any(delta != 0, axis=(0, 2)))
    if rows.size == 0:
        return (0, 0, min(w, WINDOW), min(h, WINDOW))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def fit_budget_region(
    original: np.ndarray,
    delta: np.ndarray,
    box: Box,
    budget: float | None,
    face: bool = False,
    iterations: int = 20,
) -> tuple[np.ndarray, float, float]:
    """The cloak ``original + s * delta`` (uint8; ``delta`` covers ``box``), ``s`` in [0, 1] largest within ``budget``.

    The DSSIM is that of the rounded, clipped uint8 pixels that are saved: over the whole image, or
    over ``box`` with ``face``. ``s = 1`` is kept when within the budget (or when ``budget`` is
    ``None``), else ``s`` is bisected and only a measured, feasible ``s`` is returned (``s = 0`` is
    the original). Memory: the box in float32 and the full-size cloak once. Returns ``(cloak, s, dssim)``.
    """
    original_box = _crop(original, box)
    base = original_box.astype(np.float32)
    delta = np.asarray(delta, dtype=np.float32)
    if delta.shape != base.shape:
        raise ValueError(f"delta {delta.shape} does not match the box {base.shape}")

    def make(s: float) -> np.ndarray:
        return np.clip(np.rint(base + s * delta), 0, 255).astype(np.uint8)

    def measure(region: np.ndarray) -> float:
        return _box_dssim(original_box, region) if face else region_dssim(original, region, box)

    best = make(1.0)
    value = measure(best)
    scale = 1.0
    if budget is not None and value > budget:
        lo, hi, best, value = 0.0, 1.0, original_box.copy(), 0.0
        for _ in range(iterations):
            mid = (lo + hi) / 2
            region = make(mid)
            v = measure(region)
            if v <= budget:
                lo, best, value = mid, region, v
            else:
                hi = mid
        scale = lo
    cloak = original.copy()
    cloak[box[1] : box[3], box[0] : box[2]] = best
    return cloak, scale, value


def fit_budget(
    original: np.ndarray, delta: np.ndarray, budget: float | None, box: Box | None = None, iterations: int = 20
) -> tuple[np.ndarray, float, float]:
    """:func:`fit_budget_region` for a full-size ``delta``: the DSSIM over the whole image, or over ``box`` if given.

    Only the pixels where ``delta`` is non-zero are measured (with the SSIM windows around them).
    """
    h, w = original.shape[:2]
    if box is not None:
        region = (box[0], box[1], box[2], box[3])
        delta = np.where(_inside(region, h, w)[..., None], delta, 0.0)
        return fit_budget_region(original, _crop(delta, region), region, budget, face=True, iterations=iterations)
    region = changed_box(delta)
    return fit_budget_region(original, _crop(delta, region), region, budget, iterations=iterations)


def _inside(box: Box, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def image_stats(
    original: np.ndarray, cloak: np.ndarray, crop: Box | None = None, changed: Box | None = None
) -> dict[str, Any]:
    """DSSIM (whole image and over ``crop``), L-inf (0-255) and PSNR (dB, ``None`` if identical).

    ``changed``: a box outside which the two images are known to be equal (measured there only).
    """
    h, w = original.shape[:2]
    region = changed if changed is not None else (0, 0, w, h)
    diff = _crop(cloak, region).astype(np.int16) - _crop(original, region).astype(np.int16)
    sq = float(np.sum(diff.astype(np.float64) ** 2))
    mse = sq / original.size
    return {
        "dssim": region_dssim(original, _crop(cloak, region), region),
        "dssim_crop": _box_dssim(_crop(original, crop), _crop(cloak, crop)) if crop is not None else None,
        "linf": int(np.abs(diff).max()) if diff.size else 0,
        "psnr": 10 * math.log10(255.0**2 / mse) if mse > 0 else None,
    }


def budget_measure(region: str) -> str:
    """The record field that the budget bounds: ``dssim`` (whole image) or ``dssim_crop`` (the surrogates' crops)."""
    return "dssim_crop" if region == "face" else "dssim"


def within_budget(records: Sequence[dict[str, Any]], budget: float | None) -> bool | None:
    """Whether every cloak record is within ``budget`` on its budgeted measure (``None`` without a budget or
    records)."""
    if budget is None or not records:
        return None
    return all(r[budget_measure(r["region"])] <= budget for r in records)
