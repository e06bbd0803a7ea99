"""LowKey-style cloak (Cherepanova et al., ICLR 2021): an untargeted feature-space perturbation.

Defaults from the LowKey attack as released with the paper (OpenReview hJmtwocEqzc), in the
batch script that FaceCure runs (github.com/ftramer/FaceCure ``lowkey_attack.py`` and LowKey's
``util/attack_utils.py``): 50 iterations of signed gradient ascent with step 0.0025 on pixels in
[0, 1], starting from the image plus ``U(-0.005, 0.005)`` noise, one start; the loss is the
squared distance of the features of the cloak, and of a Gaussian-smoothed copy of it (kernel 7,
sigma 3, applied to the model's input face), from the original's features, divided by the
norm of the original's features and averaged over models and dimensions, minus ``c_sim = 0.05``
times a perceptual distance; the result is clipped to [0, 1] at the end only.

Differences: the perceptual term is Fawkes' DSSIM instead of LPIPS (LPIPS needs downloaded
AlexNet weights), so ``c_sim`` weighs a quantity of another scale; and the cloak can be held to a
hard DSSIM budget afterwards (see :func:`clipface.cloak.fit_budget`), as LowKey itself has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .ssim import gaussian_filter

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LowKeyParams:
    """Settings of the LowKey optimisation (defaults: LowKey's released attack)."""

    steps: int = 50
    lr: float = 0.0025
    c_sim: float = 0.05
    noise: float = 0.005
    blur_kernel: int = 7
    blur_sigma: float = 3.0

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """LowKey's smoothing of a model input ``(N, 3, S, S)`` (same size, reflected borders)."""
        return gaussian_filter(x, self.blur_kernel, self.blur_sigma, padding="reflect")


def optimise(
    originals: Sequence[torch.Tensor],
    embed: Callable[[list[torch.Tensor], Transform | None], list[torch.Tensor]],
    clean: Sequence[torch.Tensor],
    dissim: Callable[[list[torch.Tensor]], torch.Tensor],
    params: LowKeyParams,
    generators: Sequence[torch.Generator],
) -> list[torch.Tensor]:
    """Cloak a batch; return each image's perturbation (same shape as the image, in [0, 1] units).

    ``embed(images, transform)`` gives one ``(n, d_s)`` embedding tensor per surrogate, with
    ``transform`` applied to each surrogate's input; ``clean`` holds the originals' embeddings
    per surrogate; the other arguments are as in :func:`clipface.cloak.fawkes.optimise`.
    """
    cloaks = [
        x + (torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1).mul_(params.noise).to(x.device)
        for x, g in zip(originals, generators)
    ]
    for _ in range(params.steps):
        for c in cloaks:
            c.requires_grad_(True)
        terms = []
        for transform in (None, params.blur):
            for f, o in zip(embed(cloaks, transform), clean):
                terms.append(((f - o) ** 2 / o.norm(dim=1, keepdim=True)).mean(dim=1))
        loss = (torch.stack(terms).mean(dim=0) - params.c_sim * dissim(cloaks)).sum()
        grads = torch.autograd.grad(loss, cloaks)
        cloaks = [(c + params.lr * g.sign()).detach() for c, g in zip(cloaks, grads)]
    return [c.clamp(0, 1) - x for c, x in zip(cloaks, originals)]
