"""The DSSIM budget: scale a perturbation until the saved 8-bit cloak is within it, and measure cloaks."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .ssim import dssim_uint8
from .views import Box

__all__ = ["budget_measure", "fit_budget", "image_stats", "within_budget"]


def _crop(a: np.ndarray, box: Box | None) -> np.ndarray:
    return a if box is None else a[box[1] : box[3], box[0] : box[2]]


def fit_budget(
    original: np.ndarray, delta: np.ndarray, budget: float | None, box: Box | None = None, iterations: int = 20
) -> tuple[np.ndarray, float, float]:
    """The uint8 cloak ``original + s * delta`` with the largest ``s`` in [0, 1] within ``budget``.

    ``original`` is ``H x W x 3`` uint8, ``delta`` the perturbation on the 0-255 scale. The DSSIM
    is that of the rounded, clipped uint8 pixels that are saved, over ``box`` (the whole image
    if ``None``); ``s = 1`` is kept when within the budget (or when ``budget`` is ``None``), else
    ``s`` is bisected and only a measured, feasible ``s`` is returned (``s = 0`` is the original).
    Returns ``(cloak, s, dssim)``.
    """
    base = original.astype(np.float32)

    def make(s: float) -> np.ndarray:
        return np.clip(np.rint(base + s * delta), 0, 255).astype(np.uint8)

    def measure(img: np.ndarray) -> float:
        return dssim_uint8(_crop(original, box), _crop(img, box))

    full = make(1.0)
    value = measure(full)
    if budget is None or value <= budget:
        return full, 1.0, value
    lo, hi, best, best_value = 0.0, 1.0, original.copy(), 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        img = make(mid)
        v = measure(img)
        if v <= budget:
            lo, best, best_value = mid, img, v
        else:
            hi = mid
    return best, lo, best_value


def image_stats(original: np.ndarray, cloak: np.ndarray, crop: Box | None = None) -> dict[str, float | None]:
    """DSSIM (whole image and over ``crop``), L-inf (0-255) and PSNR (dB, ``None`` if identical)."""
    diff = cloak.astype(np.int16) - original.astype(np.int16)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "dssim": dssim_uint8(original, cloak),
        "dssim_crop": dssim_uint8(_crop(original, crop), _crop(cloak, crop)) if crop is not None else None,
        "linf": int(np.abs(diff).max()),
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
