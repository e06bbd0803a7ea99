"""How well cloaks protect people against face recognisers and CLIP models: the protection task.

Each user's gallery photos are cloaked by :mod:`clipface.cloak` once per surrogate set (or read
from a folder made elsewhere) and reused from their folder on later runs; every target model is
then scored by FaceCure's protocol (:mod:`.metrics.protection`), linkability, and zero-shot names
on originals versus cloaks (:func:`clipface.eval.zeroshot.zeroshot`) for CLIP targets.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..cloak.budget import budget_measure, within_budget
from ..cloak.io import CloakedTriple
from ..cloak.sets import make_cloaks
from ..cloak.settings import CloakSettings
from ..data.dataset import FaceDataset, FaceImage
from ..embed.options import RunOptions
from ..embed.pipeline import embed_map
from ..errors import UsageError
from ..files import atomic_write_bytes
from ..models.base import Encoder
from ..versions import versions
from .metrics.protection import TEST_FRAC, facecure_split, link_stats, protection_metrics
from .runner import each_model
from .zeroshot import zeroshot

__all__ = ["evaluate_protection"]


def repost(cloaks: dict[Path, Path], folder: Path, quality: int) -> dict[Path, Path]:
    """Each cloak re-encoded as a JPEG of ``quality`` in ``folder`` (kept for later runs); source -> JPEG."""
    from ..data.images import load_image

    out = {}
    for source, cloak in cloaks.items():
        digest = hashlib.sha256(str(Path(cloak).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        dest = folder / f"{Path(cloak).stem}-{digest}.jpg"
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            load_image(Path(cloak)).save(buf, format="JPEG", quality=quality)
            atomic_write_bytes(dest, buf.getvalue())
        out[source] = dest
    return out


def _zeroshot_pair(
    encoder: Encoder, dataset: FaceDataset, pairs: list[tuple[FaceImage, Path]], opts: RunOptions
) -> dict[str, Any]:
    quiet = replace(opts, progress=False)
    orig = FaceDataset(root=dataset.root, images=[im for im, _ in pairs], name="originals of the cloaks")
    clk = FaceDataset(root=dataset.root, images=[FaceImage(c, im.identity) for im, c in pairs], name="cloaks")
    a, b = zeroshot(encoder, orig, quiet), zeroshot(encoder, clk, quiet)
    return {
        "top1_original": a["top1"],
        "top1_cloaked": b["top1"],
        "n_original": a["n_images"],
        "n_cloaked": b["n_images"],
    }


def evaluate_protection(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    settings: CloakSettings,
    surrogate_sets: Sequence[Sequence[str]],
    cloak_root: Path,
    users: Sequence[str] | None = None,
    test_frac: float = TEST_FRAC,
    batch_size: int = 4,
    external: Sequence[CloakedTriple] | None = None,
    on_error: Callable[[str], None] | None = None,
    repost_quality: int | None = None,
) -> dict[str, Any]:
    """Cloak each user's gallery photos with each surrogate set (or take ``external`` cloaks); measure every target.

    Returns the ``results.json`` document: one entry per (surrogate set, target model) in
    ``results``, the cloak settings and the achieved budget with per-image statistics.
    ``repost_quality``: the targets see each cloak after JPEG re-encoding at this quality, as a
    photo site would serve it (:func:`repost`); the budget figures stay those of the saved cloaks.
    """
    images = list(dataset.images)
    known = set(dataset.identities)
    users = list(users) if users else sorted(known)
    missing = [u for u in users if u not in known]
    if missing:
        raise UsageError(
            "user",
            missing[0],
            f"the protected user {missing[0]!r} is not in the dataset {dataset.root} (after filtering)",
        )
    is_probe = facecure_split([im.identity for im in images], test_frac, settings.seed)
    to_cloak = [im for im, p in zip(images, is_probe) if not p and im.identity in users]

    rows: list[dict[str, Any]] = []
    if external is not None:
        by_source = {t.original.resolve(): t.cloaked for t in external}
        found = {im.path: by_source[im.path.resolve()] for im in to_cloak if im.path.resolve() in by_source}
        rows.append({"surrogates": ["external"], "cloaks": found, "records": []})
    else:
        for names in surrogate_sets:
            folder, run = make_cloaks(to_cloak, dataset, names, settings, opts, cloak_root, batch_size)
            records = sorted(run.records, key=lambda r: r["source"])
            rows.append(
                {
                    "surrogates": list(names),
                    "folder": str(folder),
                    "cloaks": {Path(r["source"]): Path(r["cloak"]) for r in records},
                    "records": records,
                    "summary": {k: v for k, v in run.summary().items() if k != "settings"},
                }
            )

    if repost_quality is not None:
        for row in rows:
            row["cloaks"] = repost(row["cloaks"], cloak_root / f"reposted-jpeg{repost_quality}", repost_quality)

    def per_model(encoder: Encoder) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        start = time.perf_counter()
        original, res = embed_map(encoder, images, opts)
        all_paths = [im.path for im in images if im.path in original]
        orig_matrix = np.stack([original[p] for p in all_paths])
        row_of = {p: i for i, p in enumerate(all_paths)}
        for row in rows:
            pairs = [(im, row["cloaks"][im.path]) for im in to_cloak if im.path in row["cloaks"]]
            emb, cres = embed_map(encoder, [FaceImage(c, im.identity) for im, c in pairs], opts)
            cloaked = {im.path: emb[c] for im, c in pairs if c in emb}
            linked = [(row_of[src], v) for src, v in cloaked.items() if src in row_of]
            entry = {
                "model": encoder.name,
                "is_test_model": encoder.is_test_model,
                "encoder": encoder.info(),
                "surrogates": row["surrogates"],
                "white_box": encoder.name in row["surrogates"],
                **protection_metrics(images, is_probe, users, original, cloaked),
                "link": link_stats(orig_matrix, np.stack([v for _, v in linked]), [i for i, _ in linked])
                if linked
                else None,
                "zeroshot": _zeroshot_pair(encoder, dataset, pairs, opts) if encoder.has_text and pairs else None,
                "n_cloaks": len(pairs),
                "cloaks_unusable": [str(c) for _, c in pairs if c not in emb],
                "embeddings": {"computed": res.computed + cres.computed, "cached": res.cached + cres.cached},
                "skipped": [s.to_dict() for s in [*dataset.skipped, *res.skipped]],
                "seconds": round(time.perf_counter() - start, 2),
            }
            entries.append(entry)
        return entries

    results, errors = each_model(models, opts, per_model, on_error)

    records = [r for row in rows for r in row["records"]]
    dssims = [r["dssim"] for r in records]
    crops = [r["dssim_crop"] for r in records]
    doc: dict[str, Any] = {
        "task": "protection",
        "dataset": dataset.name or str(dataset.root),
        "protocol": {
            "test_frac": test_frac,
            "seed": settings.seed,
            "users": users,
            "classifier": "1-NN, cosine",
            "repost_jpeg_quality": repost_quality,
        },
        "cloak": {**settings.to_dict(), "source": "external" if external is not None else "clipface"},
        "budget": settings.budget if external is None else None,
        "budget_measure": budget_measure(settings.region),
        "dssim_max": max(dssims) if dssims else None,
        "dssim_mean": float(np.mean(dssims)) if dssims else None,
        "dssim_crop_max": max(crops) if crops else None,
        "dssim_crop_mean": float(np.mean(crops)) if crops else None,
        "within_budget": within_budget(records, settings.budget),
        "surrogate_sets": [{k: v for k, v in row.items() if k not in ("cloaks", "records")} for row in rows],
        "results": results,
        "errors": errors,
        "per_image": records,
        "versions": versions(),
    }
    return doc
