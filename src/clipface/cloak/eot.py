"""Expectation over transformations: what photo sites and face detectors do to a cloak, applied while optimising.

A cloak is optimised against a fixed face crop, but the person it protects posts it where it is
resized and re-encoded, and the recogniser detects the face again, a few pixels off. Averaging
the loss over random versions of such changes makes the cloak survive them (EOT, Athalye et al.,
"Synthesizing Robust Adversarial Examples", ICML 2018; FaceCure's finding that cloaks rarely
survive such changes motivates it here):

* ``jitter`` (in :class:`~clipface.cloak.views.View`): each edge of the face box moves by a few pixels;
* ``resize``: the model's input is scaled down by a random factor in [0.5, 1] and back up
  (bilinear, antialiased), as a site's downscaled copy is;
* ``jpeg``: the input is JPEG-encoded at a random quality in [60, 95]; JPEG has no gradient, so
  the backward pass treats it as the identity (BPDA, Athalye et al., ICML 2018).
"""

from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["EOT_TRANSFORMS", "apply_eot", "jpeg_bpda", "random_resize"]

#: Transformations the optimisation can average over (besides the face-box jitter).
EOT_TRANSFORMS = ("resize", "jpeg")
RESIZE_RANGE = (0.5, 1.0)
JPEG_QUALITIES = (60, 95)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=generator))


def random_resize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(N, 3, S, S)`` pixels scaled down by a random factor and back up (differentiable)."""
    factor = _uniform(generator, *RESIZE_RANGE)
    size = x.shape[-2:]
    small = (max(8, round(size[0] * factor)), max(8, round(size[1] * factor)))
    down = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(down, size=size, mode="bilinear", align_corners=False)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def jpeg_bpda(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(N, 3, S, S)`` pixels in [0, 1] JPEG-encoded at a random quality; the gradient passes through unchanged."""
    quality = int(round(_uniform(generator, *JPEG_QUALITIES)))
    with torch.no_grad():
        pixels = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        coded = np.stack([_jpeg(p, quality) for p in pixels])
        y = torch.from_numpy(coded).to(x.device, x.dtype).permute(0, 3, 1, 2) / 255.0
    return x + (y - x).detach()


_TRANSFORMS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "resize": random_resize,
    "jpeg": jpeg_bpda,
}


def apply_eot(x: torch.Tensor, names: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """``x`` through each transformation of ``names``, in the order resize, then JPEG (as a site would)."""
    for name in EOT_TRANSFORMS:
        if name in names:
            x = _TRANSFORMS[name](x, generator)
    return x
