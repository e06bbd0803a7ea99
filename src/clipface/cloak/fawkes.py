"""Fawkes-style cloak (Shan et al., USENIX Security 2020): a targeted feature-space perturbation.

The optimisation follows the Fawkes code (github.com/Shawn-Shan/fawkes):

* ``protection.py`` (v1.0) ``mode2param``: DSSIM threshold ``th``, ``max_step`` and ``lr`` per
  mode, low ``0.004 / 40 / 25``, mid ``0.012 / 75 / 20``, high ``0.017 / 150 / 15``; the penalty
  weight ``sd = 1e6`` (the ``--sd`` default of the command line, which ``run_protection`` receives).
* ``differentiator.py`` (v1.0, ``compute_batch``): the image lives in tanh space
  (``x = tanh(w) / (2 - 1e-6) + 0.5``), the modifier starts at ``U(-1, 1) * 1e-4`` and is trained
  with Adadelta (Keras defaults ``rho = 0.95``, ``eps = 1e-7``); after the first step it also moves
  by ``-0.01 * sign(grad)`` and, as a new TensorFlow variable, restarts the optimiser's state;
  the change of every pixel is clipped to +-15 of 255; the loss of each image is
  ``sd * max(dssim - th, 0)^2 + c * feature_loss`` where ``c`` doubles (up to 256) while DSSIM
  stays under ``0.9 th`` and halves (down to 1/256) above ``1.1 th``; the kept result is the
  iterate with the best feature loss among those with ``dssim <= 1.1 th``.
* The feature loss is the paper's targeted one (v0.3, ``mimic_img=True``): the squared distance
  from the cloak's features to those of an image of the target identity, divided by the norm of
  the target's features (1 here: embeddings are L2-normalised, as Fawkes' ``Extractor`` does),
  summed over the surrogate ensemble. (Fawkes v1.0 switched to maximising the distance from the
  original's features, untargeted: clipface's LowKey method covers that objective.)
* Target selection (``utils.py`` ``select_target_label``): the distance from each of the user's
  images to each candidate identity's feature centroid, minimum over the user's images;
  candidates sorted by it, farthest first; Fawkes picks at random among the 20 farthest of its
  bundled set. Here the candidates are other identities of the dataset (or a target folder) and
  ``target_top`` (default 1: the farthest) sets how many are drawn from, seeded. Each image is
  paired with one image of the target identity, drawn as Fawkes does (the list repeated until
  long enough, then sampled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

TANH_CONSTANT = 2 - 1e-6


@dataclass(frozen=True)
class FawkesParams:
    """Settings of the Fawkes optimisation (defaults: Fawkes v1.0, mode ``high``)."""

    th: float = 0.017
    max_step: int = 150
    lr: float = 15.0
    sd: float = 1e6
    linf: float = 15.0  # largest change of a pixel, on the 0-255 scale
    target_top: int = 1


#: Fawkes v1.0 ``mode2param``: (th, max_step, lr).
MODE_PARAMS: dict[str, tuple[float, int, float]] = {
    "low": (0.004, 40, 25.0),
    "mid": (0.012, 75, 20.0),
    "high": (0.017, 150, 15.0),
}


def fawkes_params(mode: str, **overrides: float) -> FawkesParams:
    """The parameters of a Fawkes mode (``low``, ``mid``, ``high``), with optional overrides."""
    if mode not in MODE_PARAMS:
        raise ValueError(f"unknown Fawkes mode {mode!r}: choose one of {', '.join(MODE_PARAMS)}")
    th, max_step, lr = MODE_PARAMS[mode]
    return FawkesParams(**{"th": th, "max_step": max_step, "lr": lr, **overrides})  # type: ignore[arg-type]


def select_target(user: np.ndarray, candidates: dict[str, np.ndarray], top: int, rng: np.random.Generator) -> str:
    """The target identity: among the ``top`` candidates whose centroid is farthest from the user.

    ``user`` is ``(n, d)``; each candidate is ``(m, d)`` (features of its images). The distance
    of a candidate is the minimum over the user's images of the L2 distance to its centroid.
    """
    if not candidates:
        raise ValueError("no candidate target identities")
    names = sorted(candidates)
    centroids = np.stack([candidates[n].mean(axis=0) for n in names])
    dist = np.linalg.norm(user[:, None, :] - centroids[None, :, :], axis=-1).min(axis=0)
    order = np.argsort(-dist, kind="stable")
    return names[int(order[int(rng.integers(min(top, len(names))))])]


def pair_targets(n: int, n_target_images: int, rng: np.random.Generator) -> list[int]:
    """Indices of the target images paired with ``n`` user images (Fawkes: repeat, then sample)."""
    pool = list(range(n_target_images))
    while len(pool) < n:
        pool += pool
    return [int(i) for i in rng.choice(pool, size=n, replace=False)]


def optimise(
    originals: Sequence[torch.Tensor],
    embed: Callable[[list[torch.Tensor], None], list[torch.Tensor]],
    targets: Sequence[torch.Tensor],
    dissim: Callable[[list[torch.Tensor]], torch.Tensor],
    params: FawkesParams,
    generators: Sequence[torch.Generator],
) -> list[torch.Tensor]:
    """Cloak a batch; return each image's perturbation (same shape as the image, in [0, 1] units).

    ``originals``: ``(3, H_i, W_i)`` images in [0, 1] (sizes may differ); ``embed(images, None)``
    maps a list of such images to one ``(n, d_s)`` embedding tensor per surrogate; ``targets`` gives the target
    embeddings per surrogate; ``dissim`` maps the list of cloaked images to their ``(n,)`` DSSIM
    from the originals; ``generators`` seed each image's initial modifier.
    """
    n = len(originals)
    w0 = [torch.atanh((x - 0.5) * TANH_CONSTANT) for x in originals]
    mods = [
        (torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1).mul_(1e-4).to(x.device)
        for x, g in zip(originals, generators)
    ]
    for m in mods:
        m.requires_grad_(True)
    limit = params.linf / 255.0

    def new_optimizer() -> torch.optim.Optimizer:
        return torch.optim.Adadelta(mods, lr=params.lr, rho=0.95, eps=1e-7)

    optimizer = new_optimizer()
    const = np.ones(n)
    outside = np.ones(n)
    best_loss = [np.inf] * n
    best: list[torch.Tensor | None] = [None] * n
    cloaks: list[torch.Tensor] = list(originals)
    for step in range(1, params.max_step + 1):
        cloaks = [
            x + (torch.tanh(w + m) / TANH_CONSTANT + 0.5 - x).clamp(-limit, limit)
            for x, w, m in zip(originals, w0, mods)
        ]
        feats = embed(cloaks, None)
        feature_loss = sum(((f - t) ** 2).sum(dim=1) / t.norm(dim=1) for f, t in zip(feats, targets))
        dist = dissim(cloaks)
        weight = torch.as_tensor(const, dtype=dist.dtype, device=dist.device)
        loss = (params.sd * torch.relu(dist - params.th) ** 2 + weight * feature_loss).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1:
            with torch.no_grad():
                for m in mods:
                    m -= 0.01 * torch.sign(m.grad)
            optimizer = new_optimizer()
        d, fl = dist.detach().cpu().numpy(), feature_loss.detach().cpu().numpy()
        for e in range(n):
            if d[e] <= params.th * 0.9 and const[e] <= 129:
                const[e] = 1.0 if outside[e] == -1 else const[e] * 2
                outside[e] = 1
            elif d[e] >= params.th * 1.1 and const[e] >= 1 / 129:
                const[e] = 1.0 if outside[e] == 1 else const[e] / 2
                outside[e] = -1
            else:
                const[e], outside[e] = 1.0, 0
            if d[e] <= params.th * 1.1 and fl[e] < best_loss[e]:
                best_loss[e], best[e] = float(fl[e]), cloaks[e].detach()
    return [(b if b is not None else c.detach()) - x for b, c, x in zip(best, cloaks, originals)]
