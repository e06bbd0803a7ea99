"""Runs a task over one or more models: dataset -> encoder -> cached embeddings -> task -> results document.

Each model is loaded, evaluated and released in turn; a model that cannot be loaded is recorded
with its one-line reason and the others still run, so nothing already computed is lost.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Callable, Sequence

from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..embed.pipeline import EmbeddingResult, embed_images
from ..errors import ClipfaceError
from ..models.base import Encoder
from ..models.runtime import load_encoder
from ..versions import versions

__all__ = ["TaskFn", "each_model", "embed_dataset", "model_header", "payload", "run_models"]

log = logging.getLogger("clipface")


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


def payload(
    task: str, dataset: FaceDataset, results: list[dict[str, Any]], errors: list[dict[str, str]]
) -> dict[str, Any]:
    """The ``results.json`` document: one entry per model in ``results``; with one model its fields also at top
    level."""
    doc: dict[str, Any] = {"task": task, "dataset": dataset.name or str(dataset.root)}
    if len(results) == 1 and not errors:
        doc.update(results[0])
    doc["results"] = results
    doc["errors"] = errors
    doc["versions"] = versions()
    return doc
