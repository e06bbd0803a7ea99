"""Direction-of-effect checks for cloaks: random noise of the same DSSIM, and similarity to a set of photos."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from clipface.cloak.ssim import dssim_uint8


def noise_at_dssim(original: np.ndarray, cloak: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian noise in the box that ``cloak`` changed, scaled by bisection to (just under) the cloak's DSSIM."""
    changed = np.abs(original.astype(np.int16) - cloak.astype(np.int16)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    target = dssim_uint8(original, cloak)
    noise = np.random.default_rng(seed).standard_normal(original[box].shape)

    def apply(scale: float) -> np.ndarray:
        out = original.copy()
        out[box] = np.clip(np.rint(original[box] + scale * noise), 0, 255).astype(np.uint8)
        return out

    lo, hi = 0.0, 255.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dssim_uint8(original, apply(mid)) <= target else (lo, mid)
    return apply(lo)


def shift(encoder, a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between the embeddings of two uint8 photos through ``encoder``'s own pipeline."""
    x, y = encoder.encode_images([Image.fromarray(a), Image.fromarray(b)])
    return float(1.0 - x @ y)


def mean_similarity(encoder, image: np.ndarray, photos: Sequence[Path]) -> float:
    """Mean cosine similarity of ``image`` to ``photos`` (for example the person's other photos)."""
    refs = encoder.encode_images([Image.open(p) for p in photos])
    return float(np.mean(refs @ encoder.encode_images([Image.fromarray(image)])[0]))


def rgb_of(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))
