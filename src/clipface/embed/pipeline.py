"""Embedding pipeline: dataset images to cached embeddings, with preparation in parallel to inference.

Images are hashed in threads, looked up in the cache, and the missing ones prepared ahead of
inference (:mod:`clipface.embed.prepare`: threads, or one process per core where the face front
end holds Python's lock, dlib's) while the model embeds the batch before.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.dataset import FaceImage, SkippedFile
from ..errors import check_int
from ..files import file_sha256
from ..models.base import Encoder
from .cache import EmbeddingCache, NullCache, embedding_key, text_key
from .prepare import CHUNK, Preparer, inference_threads, process_count

if TYPE_CHECKING:
    from .options import RunOptions


@dataclass
class EmbeddingResult:
    """Embeddings of the images that could be used, aligned with :attr:`images`."""

    images: list[FaceImage]
    embeddings: np.ndarray
    skipped: list[SkippedFile] = field(default_factory=list)
    computed: int = 0
    cached: int = 0

    def counts(self) -> dict[str, int]:
        return {"computed": self.computed, "cached": self.cached}


def default_workers() -> int:
    """Threads for decoding and preparing images."""
    return max(1, min(8, (os.cpu_count() or 2)))


def _hashes(images: Sequence[FaceImage], pool: ThreadPoolExecutor) -> list[str | BaseException]:
    def one(im: FaceImage) -> str | BaseException:
        try:
            return file_sha256(im.path)
        except OSError as exc:
            return exc

    return list(pool.map(one, images))


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def embed_images(
    encoder: Encoder,
    images: Sequence[FaceImage],
    cache: EmbeddingCache | NullCache | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    processes: int | None = None,
) -> EmbeddingResult:
    """Embed ``images`` with ``encoder``, reading and writing ``cache``.

    Unreadable, truncated or face-less files are returned in ``skipped``; every finished batch
    is in the cache before the next starts, so an interrupted run resumes where it stopped.
    ``processes``: worker processes preparing images (default: see
    :func:`~clipface.embed.prepare.process_count`; ``0``: threads only).
    """
    check_int("batch_size", batch_size, 1, allow_none=False)
    check_int("workers", workers, 1)
    check_int("processes", processes, 0, 256)
    cache = cache if cache is not None else NullCache()
    images = list(images)
    workers = workers or default_workers()
    vectors: dict[int, np.ndarray] = {}
    skipped: list[SkippedFile] = []
    with ThreadPoolExecutor(workers) as pool:
        digests = _hashes(images, pool)
        keys: dict[int, str] = {}
        for i, d in enumerate(digests):
            if isinstance(d, BaseException):
                skipped.append(SkippedFile(str(images[i].path), f"cannot read file ({d})"))
            else:
                keys[i] = embedding_key(encoder.fingerprint, encoder.preprocess_id, d)
        hits = cache.get_many(keys.values(), dim=encoder.dim)
        todo = []
        for i, k in keys.items():
            if k in hits:
                vectors[i] = hits[k]
            else:
                todo.append(i)
        n_cached = len(vectors)
        bar = tqdm(total=len(todo), desc=f"embed {encoder.name}", unit="img", disable=not progress or not todo)
        # Prepare the next batches while the model encodes this one.
        batches = list(_batches(todo, batch_size))
        with Preparer(encoder, pool, process_count(encoder, len(todo), processes)) as prep, inference_threads(prep):
            ahead = 2 + (prep.processes * 4 * CHUNK) // batch_size  # keep every worker process busy
            pending = [prep.submit([images[i] for i in b]) for b in batches[:ahead]]
            for n, batch in enumerate(batches):
                prepared = prep.collect(pending[n])
                pending[n] = []
                if n + ahead < len(batches):
                    pending.append(prep.submit([images[i] for i in batches[n + ahead]]))
                ok = [(i, p) for i, p in zip(batch, prepared) if isinstance(p, np.ndarray)]
                skipped.extend(p for p in prepared if isinstance(p, SkippedFile))
                if ok:
                    emb = encoder.embed_prepared(np.stack([p for _, p in ok]))
                    cache.put_many({keys[i]: e for (i, _), e in zip(ok, emb)})
                    vectors.update({i: e for (i, _), e in zip(ok, emb)})
                bar.update(len(batch))
        bar.close()
    order = sorted(vectors)
    emb = np.stack([vectors[i] for i in order]).astype(np.float32) if order else np.zeros((0, encoder.dim), np.float32)
    return EmbeddingResult(
        images=[images[i] for i in order],
        embeddings=emb,
        skipped=skipped,
        computed=len(vectors) - n_cached,
        cached=n_cached,
    )


def embed_texts(
    encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | NullCache | None = None
) -> tuple[np.ndarray, int]:
    """Text embeddings ``(len(texts), dim)`` through the cache; returns them and the number computed."""
    cache = cache if cache is not None else NullCache()
    keys = [text_key(encoder.fingerprint, t) for t in texts]
    hits = cache.get_many(keys, dim=encoder.dim)
    missing = [i for i, k in enumerate(keys) if k not in hits]
    if missing:
        emb = encoder.encode_text([texts[i] for i in missing])
        new = {keys[i]: e for i, e in zip(missing, emb)}
        cache.put_many(new)
        hits.update(new)
    out = np.stack([hits[k] for k in keys]) if keys else np.zeros((0, encoder.dim), np.float32)
    return out.astype(np.float32), len(missing)


def embed_map(
    encoder: Encoder, images: Sequence[FaceImage], opts: RunOptions
) -> tuple[dict[Path, np.ndarray], EmbeddingResult]:
    """:func:`embed_images` with a run's options, and each embedded image's vector by its path."""
    res = embed_images(
        encoder, images, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress
    )
    return {im.path: e for im, e in zip(res.images, res.embeddings)}, res
