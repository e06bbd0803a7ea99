"""From a folder, a dataset or a list of files to described, de-duplicated, embedded images ready to index."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from ..data.dataset import FaceDataset, FaceImage, SkippedFile, list_images, resolve_dataset_path
from ..data.images import file_sha256, probe_image
from ..embed.cache import EmbeddingCache, NullCache
from ..embed.pipeline import default_workers, embed_images
from ..errors import ImageError
from ..models.base import Encoder
from .records import ImageRecord

__all__ = ["Embedded", "ImageSource", "SourceImage", "collect_images", "describe_image", "embed_source"]

#: What can be indexed: a folder (identity sub-folders or a flat folder), a dataset, or files.
ImageSource = Union[str, Path, FaceDataset, Sequence[Union[str, Path]]]


@dataclass(frozen=True)
class SourceImage:
    """An image file to index, with its path relative to the indexed folder and its identity."""

    path: Path
    relpath: str
    identity: str | None


def collect_images(source: ImageSource) -> tuple[list[SourceImage], list[SkippedFile]]:
    """Image files of ``source`` with their identity: a folder (``bundled:NAME`` too), a dataset or a list of files.

    In a folder, an image's identity is its parent folder's name; images lying directly in the
    folder have none. Listed files have none either.
    """
    if isinstance(source, FaceDataset):
        entries = [SourceImage(im.path, _rel(im.path, source.root), im.identity) for im in source.images]
        return entries, list(source.skipped)
    if isinstance(source, (str, Path)):
        root = resolve_dataset_path(source)
        files, skipped = list_images(root)
        return [SourceImage(p, _rel(p, root), p.parent.name if p.parent != root else None) for p in files], skipped
    return [SourceImage(Path(p), str(p), None) for p in source], []


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def describe_image(entry: SourceImage) -> ImageRecord | SkippedFile:
    """Size (from the header) and SHA-256 of an image file, or why it cannot be used."""
    try:
        width, height = probe_image(entry.path)
        sha = file_sha256(entry.path)
    except ImageError as exc:
        return SkippedFile(str(entry.path), exc.reason)
    except OSError as exc:
        return SkippedFile(str(entry.path), f"cannot read file ({exc.strerror or exc})")
    path = str(Path(entry.path).resolve())
    return ImageRecord(path, entry.relpath, entry.identity, int(width), int(height), sha)


@dataclass
class Embedded:
    records: list[ImageRecord]
    vectors: np.ndarray
    skipped: list[SkippedFile]
    duplicates: int
    computed: int
    cached: int
    faces: dict[str, Any] | None = None  # the faces of the records by SHA-256, for an index that keeps faces
    second_faces: dict[str, Any] | None = None  # the same, by the second face model


def embed_source(
    encoder: Encoder,
    source: ImageSource,
    known: Callable[[list[str]], set[str]],
    cache: EmbeddingCache | NullCache,
    batch_size: int,
    workers: int | None,
    progress: bool,
) -> Embedded:
    """Describe, de-duplicate (against ``known`` SHA-256s and within the source) and embed."""
    entries, skipped = collect_images(source)
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        described = list(pool.map(describe_image, entries))
    skipped += [d for d in described if isinstance(d, SkippedFile)]
    records = [d for d in described if isinstance(d, ImageRecord)]
    seen = known([r.sha256 for r in records])
    fresh: list[ImageRecord] = []
    for r in records:
        if r.sha256 not in seen:
            seen.add(r.sha256)
            fresh.append(r)
    by_path = {r.path: r for r in fresh}
    result = embed_images(
        encoder,
        [FaceImage(Path(r.path), r.identity or "") for r in fresh],
        cache,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    return Embedded(
        records=[by_path[str(im.path)] for im in result.images],
        vectors=result.embeddings,
        skipped=skipped + result.skipped,
        duplicates=len(records) - len(fresh),
        computed=result.computed,
        cached=result.cached,
    )
