"""Fawkes' targets: for each user a far identity (by the surrogates' features), one of its photos per photo."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.dataset import FaceImage
from ..embed.options import RunOptions
from ..embed.pipeline import embed_images
from ..errors import ClipfaceError
from ..models.base import TorchEncoder
from ..textsafe import key_bytes
from . import fawkes
from .settings import CloakSettings

__all__ = ["Target", "plan_targets", "seed_for"]


@dataclass
class Target:
    identity: str
    image: Path
    features: list[np.ndarray]  # one per surrogate


def seed_for(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key_bytes(key))) % (2**63)


def plan_targets(
    images: Sequence[FaceImage],
    candidates: dict[str, list[FaceImage]],
    surrogates: Sequence[TorchEncoder],
    settings: CloakSettings,
    opts: RunOptions,
) -> dict[Path, Target]:
    """Fawkes' target for each image: a far identity per user, one of its images per image."""
    assert isinstance(settings.params, fawkes.FawkesParams)
    pool = list({im.path: im for im in [*images, *(im for ims in candidates.values() for im in ims)]}.values())
    per_model = []
    for enc in surrogates:
        res = embed_images(enc, pool, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=False)
        per_model.append({im.path: e for im, e in zip(res.images, res.embeddings)})
    usable = {p for p in (im.path for im in pool) if all(p in m for m in per_model)}

    def feats(ims: Sequence[FaceImage]) -> np.ndarray:
        return np.stack([np.concatenate([m[im.path] for m in per_model]) for im in ims])

    users: dict[str, list[FaceImage]] = defaultdict(list)
    for im in images:
        users[im.identity].append(im)
    plan: dict[Path, Target] = {}
    for user, ims in users.items():
        mine = [im for im in ims if im.path in usable]
        cands = {c: [im for im in cims if im.path in usable] for c, cims in candidates.items() if c != user}
        cands = {c: cims for c, cims in cands.items() if cims}
        if not mine:
            continue  # every image of this user fails a front end: each is skipped later with its reason
        if not cands:
            raise ClipfaceError(f"no target identity for {user}: Fawkes needs images of other people (--target-dir)")
        rng = np.random.default_rng(seed_for(settings.seed, user))
        target = fawkes.select_target(
            feats(mine), {c: feats(cims) for c, cims in cands.items()}, settings.params.target_top, rng
        )
        timgs = cands[target]
        for im, j in zip(ims, fawkes.pair_targets(len(ims), len(timgs), rng)):
            plan[im.path] = Target(target, timgs[j].path, [m[timgs[j].path] for m in per_model])
    return plan
