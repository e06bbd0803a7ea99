"""Index poisoning task: rank-1 identification of clean probes as k poisons per person join the gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..cloak.sets import make_cloaks
from ..cloak.settings import CloakSettings
from ..data.dataset import FaceDataset, FaceImage
from ..embed.options import RunOptions
from ..embed.pipeline import embed_map
from ..errors import ClipfaceError
from ..models.base import Encoder
from ..versions import versions
from .metrics.protection import poison_gallery, poisoning_metrics, poisoning_split
from .runner import each_model

__all__ = ["evaluate_poisoning"]


def evaluate_poisoning(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    ks: Sequence[int],
    kinds: Sequence[str],
    n_gallery: int,
    settings: CloakSettings | None = None,
    surrogates: Sequence[str] = (),
    cloak_root: Path | None = None,
    batch_size: int = 4,
    on_error: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rank-1 identification of clean probes as ``k`` poisons per person are added to the gallery."""
    ks = sorted({int(k) for k in ks} | {0})
    images = list(dataset.images)
    labels = [im.identity for im in images]
    seed = settings.seed if settings is not None else 0
    gallery, pool, probes = poisoning_split(labels, n_gallery, max(ks), seed)
    if not probes:
        raise ClipfaceError(
            f"{dataset.root}: no person has {n_gallery + max(ks) + 1} photos (gallery + poisons + a probe); try "
            "--min-images"
        )
    cloak_info = None
    cloaks: list[tuple[int, FaceImage]] = []  # (index of the source photo, its cloak)
    if "cloak" in kinds:
        if settings is None or not surrogates or cloak_root is None:
            raise ClipfaceError("poisons of kind cloak need a cloak method and --surrogate")
        sources = [i for idx in pool.values() for i in idx]
        folder, run = make_cloaks(
            [images[i] for i in sources], dataset, surrogates, settings, opts, cloak_root, batch_size
        )
        by_source = {Path(r["source"]): Path(r["cloak"]) for r in run.records}
        cloaks = [(i, FaceImage(by_source[images[i].path], labels[i])) for i in sources if images[i].path in by_source]
        cloak_info = {"folder": str(folder), **{k: v for k, v in run.summary().items() if k != "settings"}}
    everything = images + [c for _, c in cloaks]
    all_labels = labels + [c.identity for _, c in cloaks]

    def per_model(encoder: Encoder) -> dict[str, Any]:
        emb_map, res = embed_map(encoder, everything, opts)
        usable = [i for i, im in enumerate(everything) if im.path in emb_map]
        emb = np.zeros((len(everything), encoder.dim), np.float32)
        emb[usable] = np.stack([emb_map[everything[i].path] for i in usable])
        ok = set(usable)
        cloak_of = {src: len(images) + j for j, (src, _) in enumerate(cloaks) if len(images) + j in ok}
        g = [i for i in gallery if i in ok]
        p = [i for i in probes if i in ok]
        usable_pool = {lab: [i for i in idx if i in ok] for lab, idx in pool.items()}
        rows = []
        for kind in kinds:
            for k in ks:
                poisons = [(i, lab) for i, lab in poison_gallery(kind, k, usable_pool, seed, cloak_of) if i in ok]
                rows.append(
                    {
                        "kind": kind,
                        "k": k,
                        "n_poisons": len(poisons),
                        **poisoning_metrics(emb, all_labels, g, p, poisons),
                    }
                )
        base = {r["kind"]: r["rank1"] for r in rows if r["k"] == 0}
        for r in rows:
            r["drop"] = base[r["kind"]] - r["rank1"]
        return {
            "model": encoder.name,
            "is_test_model": encoder.is_test_model,
            "encoder": encoder.info(),
            "n_identities": len(pool),
            "n_gallery": len(g),
            "n_probes": len(p),
            "curve": rows,
            "embeddings": res.counts(),
            "skipped": [s.to_dict() for s in [*dataset.skipped, *res.skipped]],
        }

    results, errors = each_model(models, opts, per_model, on_error)
    return {
        "task": "poisoning",
        "dataset": dataset.name or str(dataset.root),
        "protocol": {"ks": ks, "kinds": list(kinds), "n_gallery_per_identity": n_gallery, "seed": seed},
        "cloak": {**settings.to_dict(), "surrogates": list(surrogates), **(cloak_info or {})} if cloak_info else None,
        "results": results,
        "errors": errors,
        "versions": versions(),
    }
