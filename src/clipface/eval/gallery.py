"""Gallery identification task, the search-engine setting: enrol a few photos per person, probe with the rest."""

from __future__ import annotations

import time
from typing import Any

from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..errors import ClipfaceError, check_float, check_int
from ..models.base import Encoder
from .metrics.gallery import identify, split_gallery
from .runner import embed_dataset, model_header

__all__ = ["check_gallery_args", "gallery", "search"]


def check_gallery_args(n_gallery: int, unknown: float) -> None:
    """:class:`~clipface.errors.UsageError` for a gallery size below 1 or an unknown share outside [0, 1)."""
    check_int("gallery", n_gallery, 1, allow_none=False)
    check_float("unknown", unknown, 0.0, 1.0, high_open=True)


def gallery(
    encoder: Encoder,
    dataset: FaceDataset,
    opts: RunOptions,
    n_gallery: int = 5,
    unknown: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Gallery identification (the search-engine setting): ``n_gallery`` photos per person enrolled.

    A share ``unknown`` of the people is held out of the gallery entirely, as open-set probes.
    """
    check_gallery_args(n_gallery, unknown)
    start = time.perf_counter()
    result, used = embed_dataset(encoder, dataset, opts)
    labels = [im.identity for im in result.images]
    split = split_gallery(labels, n_gallery=n_gallery, seed=seed, n_unknown_identities=unknown)
    emb = result.embeddings
    if len(split.probe_idx) == 0:
        raise ClipfaceError(
            f"{dataset.root}: no probes: every person has at most {n_gallery} usable images (try --min-images "
            f"{n_gallery + 1})"
        )
    sr = identify(
        emb[split.gallery_idx],
        split.gallery_labels,
        emb[split.probe_idx],
        split.probe_labels,
        unknown_probe_emb=emb[split.unknown_idx] if len(split.unknown_idx) else None,
    )
    out = {"task": "search", **model_header(encoder, result, used, time.perf_counter() - start)}
    out.update(sr.to_dict())
    out["n_gallery_per_identity"] = n_gallery
    out["unknown_share"] = unknown
    out["seed"] = seed
    return out


#: The task's name in the CLI and in ``results.json`` (``eval search``).
search = gallery
