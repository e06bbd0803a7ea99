"""LFW verification task: the pairs of a pairs file embedded and scored by the 10-fold protocol."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import FaceDataset, FaceImage
from ..data.lfw_pairs import Pair, parse_pairs, resolve_pairs
from ..embed.options import RunOptions
from ..errors import ClipfaceError, UsageError
from ..models.base import Encoder
from .metrics.verification import pair_similarities, verify
from .runner import embed_dataset, model_header

__all__ = ["load_pairs", "pairs_path_of", "verification"]


def verification(
    encoder: Encoder,
    dataset: FaceDataset,
    opts: RunOptions,
    pairs_file: Path | None = None,
) -> dict[str, Any]:
    """The LFW verification protocol on ``dataset.root`` with its ``pairs.txt`` (or ``pairs_file``).

    Only the images named in the pairs are embedded. The result holds the ROC points
    (``roc``) for plots and the thresholds at each FAR target (``tar_thresholds``).
    """
    start = time.perf_counter()
    root = dataset.root
    pairs_path = pairs_path_of(dataset, pairs_file)
    pairs = load_pairs(pairs_path)
    resolved = resolve_pairs(root, pairs)
    missing = set(resolved.missing)
    for same, kind in ((True, "same-person"), (False, "different-person")):
        if not any(p.same == same and p not in missing for p in pairs):
            raise ClipfaceError(
                f"{pairs_path}: no {kind} pair with both images under {root}: verification needs both kinds"
            )
    rels = sorted({p for pair in pairs if pair not in missing for p in (pair.path_a, pair.path_b)})
    images = [FaceImage(path=root / rel, identity=Path(rel).parent.name) for rel in rels]
    sub = FaceDataset(root=root, images=images, name=dataset.name)
    result, used = embed_dataset(encoder, sub, opts)
    by_rel = {im.path.relative_to(root).as_posix(): e for im, e in zip(result.images, result.embeddings)}
    sims = pair_similarities(pairs, by_rel)
    vr = verify(sims, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    out = {"task": "verify", **model_header(encoder, result, used, time.perf_counter() - start)}
    out.update(vr.to_dict())
    out["pairs_file"] = str(pairs_path)
    out["n_pairs_missing_files"] = len(resolved.missing)
    return out


def pairs_path_of(dataset: FaceDataset, pairs_file: str | Path | None = None) -> Path:
    """``pairs_file``, or ``pairs.txt`` in the dataset folder."""
    return Path(pairs_file) if pairs_file else dataset.root / "pairs.txt"


def load_pairs(path: Path) -> list[Pair]:
    """Parse and check a pairs file: it must hold same-person and different-person pairs."""
    if not path.is_file():
        raise UsageError("pairs", str(path), "pairs file not found (pass --pairs FILE)")
    pairs = parse_pairs(path)
    if not any(p.same for p in pairs):
        raise UsageError("pairs", str(path), "the pairs file holds no same-person pair")
    if all(p.same for p in pairs):
        raise UsageError("pairs", str(path), "the pairs file holds no different-person pair")
    return pairs
