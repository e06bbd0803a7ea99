"""Runs tasks over one or more models: dataset -> encoder -> cached embeddings -> task -> report.

Each model is loaded, evaluated and released in turn; a model that cannot be loaded is recorded
with its one-line reason and the others still run, so nothing already computed is lost.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .cache import EmbeddingCache, NullCache
from .dataset import FaceDataset, display_name
from .embed import EmbeddingResult, embed_images, embed_texts
from .encoders.base import Encoder
from .errors import ClipfaceError
from .names import distractor_names
from .prompts import get_prompts
from .registry import create_encoder
from .report import versions
from .tasks.zeroshot import IdiaSettings, zeroshot_metrics

log = logging.getLogger("clipface")


@dataclass
class RunOptions:
    """How embeddings are computed: shared by every task."""

    cache: EmbeddingCache | NullCache = field(default_factory=NullCache)
    batch_size: int = 32
    workers: int | None = None
    device: str = "cpu"
    progress: bool = True
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local weights
    aligner: str | None = None  # face front end for every encoder (None: each model's default)
    on_no_face: str = "skip"
    face_select: str = "central"  # which face where a photo has several: central or largest
    flip: bool = False  # test-time augmentation: add the mirrored crop's embedding (Encoder.flip)
    backend: str = "torch"  # or "onnx" (ONNX Runtime)
    precision: str = "fp32"  # or "int8" (ONNX only)
    threads: int | None = None  # inference threads (default: physical cores)


def load_encoder(name: str, opts: RunOptions) -> Encoder:
    """Create ``name`` with the weights and front end chosen in ``opts``."""
    encoder = create_encoder(
        name, weights=opts.weights.get(name), device=opts.device, on_no_face=opts.on_no_face, select=opts.face_select
    )
    if opts.aligner is not None:
        from .align import get_aligner

        encoder.aligner = get_aligner(opts.aligner, on_no_face=opts.on_no_face, select=opts.face_select)
    from .encoders.backends import with_backend

    encoder = with_backend(encoder, opts.backend, opts.precision, opts.threads)
    encoder.flip = opts.flip
    return encoder


def embed_dataset(encoder: Encoder, dataset: FaceDataset, opts: RunOptions) -> tuple[EmbeddingResult, FaceDataset]:
    """Embed every image of ``dataset``; return the result and the dataset less unusable files."""
    result = embed_images(
        encoder, dataset.images, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress
    )
    return result, dataset.without(result.skipped)


def model_header(encoder: Encoder, result: EmbeddingResult, dataset: FaceDataset, seconds: float) -> dict[str, Any]:
    """Fields common to every task's per-model result."""
    return {
        "model": encoder.name,
        "is_test_model": encoder.is_test_model,
        "encoder": encoder.info(),
        "dataset": dataset.name or str(dataset.root),
        "embeddings": result.counts(),
        "skipped": [s.to_dict() for s in dataset.skipped],
        "seconds": round(seconds, 2),
    }


def zeroshot(
    encoder: Encoder,
    dataset: FaceDataset,
    opts: RunOptions,
    prompts: str | Sequence[str] = "paper",
    distractors: int = 0,
    seed: int = 0,
    idia: IdiaSettings = IdiaSettings(),
) -> dict[str, Any]:
    """Zero-shot name identification of ``dataset``'s people with ``encoder`` (needs a text tower)."""
    if not encoder.has_text:
        raise ClipfaceError(f"model {encoder.name} has no text tower: zero-shot name identification needs a CLIP model")
    start = time.perf_counter()
    templates = get_prompts(prompts)
    result, ds = embed_dataset(encoder, dataset, opts)
    people = sorted({im.identity for im in result.images})
    names = [display_name(p) for p in people]
    candidates = names + distractor_names(distractors, seed=seed, exclude=names)
    index = {p: i for i, p in enumerate(people)}
    labels = np.array([index[im.identity] for im in result.images], dtype=np.int64)
    texts = [t.format(n) for t in templates for n in candidates]
    text_emb, n_text = embed_texts(encoder, texts, opts.cache)
    text_emb = text_emb.reshape(len(templates), len(candidates), -1)
    metrics = zeroshot_metrics(result.embeddings, labels, text_emb, candidates, len(people), templates, idia)
    out = {"task": "zeroshot", **model_header(encoder, result, ds, time.perf_counter() - start)}
    out.update(metrics)
    out["prompts"] = list(templates)
    out["distractors"] = distractors
    out["seed"] = seed
    out["text_embeddings"] = {"computed": n_text, "cached": len(texts) - n_text}
    return out


TaskFn = Callable[[Encoder, FaceDataset, RunOptions], dict[str, Any]]


def each_model(
    models: Sequence[str],
    opts: RunOptions,
    fn: Callable[[Encoder], dict[str, Any] | list[dict[str, Any]]],
    on_error: Callable[[str], None] | None = None,
    after: Callable[[list[dict[str, Any]], list[dict[str, str]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Load each of ``models`` in turn and collect ``fn(encoder)``'s result (one dict or a list).

    A model that fails (loading or in ``fn``) is recorded in the errors, with its one-line reason
    passed to ``on_error``, and the others still run. Each model is released before the next is
    loaded; ``after(results, errors)`` runs after every model (e.g. to save partial results).
    """
    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name in models:
        try:
            out = fn(load_encoder(name, opts))  # the encoder lives only as long as this call
            results.extend(out if isinstance(out, list) else [out])
        except ClipfaceError as exc:
            (on_error or log.error)(str(exc))
            errors.append({"model": name, "error": str(exc)})
        finally:
            gc.collect()
        if after is not None:
            after(results, errors)
    return results, errors


def run_models(
    task: str,
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    fn: TaskFn,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``fn`` for each model (see :func:`each_model`) and return the ``results.json`` document."""
    after = (lambda r, e: on_result(payload(task, dataset, r, e))) if on_result is not None else None
    results, errors = each_model(models, opts, lambda enc: fn(enc, dataset, opts), on_error, after)
    return payload(task, dataset, results, errors)


def payload(task: str, dataset: FaceDataset, results: list[dict[str, Any]], errors: list[dict[str, str]]) -> dict[str, Any]:
    """The ``results.json`` document: one entry per model in ``results``; with one model its fields also at top level."""
    doc: dict[str, Any] = {"task": task, "dataset": dataset.name or str(dataset.root)}
    if len(results) == 1 and not errors:
        doc.update(results[0])
    doc["results"] = results
    doc["errors"] = errors
    doc["versions"] = versions()
    return doc



def verification(
    encoder: Encoder,
    dataset: FaceDataset,
    opts: RunOptions,
    pairs_file: Path | None = None,
    keep: list[Any] | None = None,
) -> dict[str, Any]:
    """The LFW verification protocol on ``dataset.root`` with its ``pairs.txt`` (or ``pairs_file``).

    Only the images named in the pairs are embedded. ``keep`` receives the full
    :class:`~clipface.tasks.verification.VerificationResult` (for ROC plots).
    """
    from .dataset import FaceImage
    from .tasks.verification import pair_similarities, parse_pairs, resolve_pairs, verify

    start = time.perf_counter()
    root = dataset.root
    pairs_path = Path(pairs_file) if pairs_file else root / "pairs.txt"
    if not pairs_path.is_file():
        raise ClipfaceError(f"{pairs_path}: pairs file not found (pass --pairs FILE)")
    pairs = parse_pairs(pairs_path)
    resolved = resolve_pairs(root, pairs)
    missing = set(resolved.missing)
    rels = sorted({p for pair in pairs if pair not in missing for p in (pair.path_a, pair.path_b)})
    images = [FaceImage(path=root / rel, identity=Path(rel).parent.name) for rel in rels]
    sub = FaceDataset(root=root, images=images, name=dataset.name)
    result, used = embed_dataset(encoder, sub, opts)
    by_rel = {str(im.path.relative_to(root)): e for im, e in zip(result.images, result.embeddings)}
    sims = pair_similarities(pairs, by_rel)
    vr = verify(sims, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    if keep is not None:
        keep.append((encoder.name, vr))
    out = {"task": "verify", **model_header(encoder, result, used, time.perf_counter() - start)}
    out.update(vr.to_dict())
    out["pairs_file"] = str(pairs_path)
    out["n_pairs_missing_files"] = len(resolved.missing)
    return out


def search(
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
    from .tasks.search import identify, split_gallery

    start = time.perf_counter()
    result, used = embed_dataset(encoder, dataset, opts)
    labels = [im.identity for im in result.images]
    split = split_gallery(labels, n_gallery=n_gallery, seed=seed, n_unknown_identities=unknown)
    emb = result.embeddings
    if len(split.probe_idx) == 0:
        raise ClipfaceError(f"{dataset.root}: no probes: every person has at most {n_gallery} usable images (try --min-images {n_gallery + 1})")
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
