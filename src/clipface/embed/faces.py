"""Every face of an image (or its central one) with a box, embedded by a face recogniser and cached.

A search index keeps these next to its image vectors (``clipface index build --face-model dlib``):
the face opt-out of the server and the search by face of group photos use them. Per image the
result is a :class:`Faces`: ``(n, 4)`` boxes (left, top, right, bottom, source pixels), ``(n,)``
detector scores (:data:`NO_SCORE` where the front end has no detector) and ``(n, dim)`` unit vectors; ``n`` is
0 where no face is found (not an error: the image is still indexed by its other vectors).

``mode``: ``"central"`` keeps the face the model's front end would choose (one per image, the
rule of :mod:`clipface.models.align`), ``"all"`` every detected face, chosen one first.

Cached in the embedding cache under the encoder's fingerprint, its preparation plus
``|faces-MODE``, and the file's SHA-256, one row per image (``[n, boxes, scores, vectors]``
flattened), so an interrupted build resumes and a second build computes nothing. Detection
runs in worker processes where the front end holds Python's lock (dlib), as in
:mod:`clipface.embed.prepare`.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.images import load_image
from ..errors import ImageError, NoFaceError
from ..models.align import faces_of
from ..models.base import Aligner, Encoder
from . import prepare as _prepare
from .cache import EmbeddingCache, NullCache, embedding_key
from .prepare import _START_METHOD, CHUNK, process_count

__all__ = ["FACE_MODES", "NO_SCORE", "Faces", "embed_faces", "faces_key"]

FACE_MODES = ("central", "all")
#: The score of a "face" no detector found (a centre crop); the cache keeps finite values only.
NO_SCORE = -1000.0


@dataclass(frozen=True)
class Faces:
    """The faces of one image: boxes ``(n, 4)``, scores ``(n,)``, unit vectors ``(n, dim)``."""

    boxes: np.ndarray
    scores: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def none(cls, dim: int) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, dim), np.float32))

    def pack(self) -> np.ndarray:
        n = len(self)
        return np.concatenate([[float(n)], self.boxes.ravel(), self.scores, self.vectors.ravel()]).astype(np.float32)

    @classmethod
    def unpack(cls, flat: np.ndarray, dim: int) -> Faces | None:
        """From :meth:`pack`'s row, or ``None`` where it does not decode (a damaged row is recomputed)."""
        if len(flat) < 1 or flat[0] != int(flat[0]) or flat[0] < 0:
            return None
        n = int(flat[0])
        if len(flat) != 1 + n * (5 + dim):
            return None
        boxes = flat[1 : 1 + 4 * n].reshape(n, 4)
        scores = flat[1 + 4 * n : 1 + 5 * n]
        return cls(boxes.copy(), scores.copy(), flat[1 + 5 * n :].reshape(n, dim).copy())


def faces_key(encoder: Encoder, mode: str, sha256: str) -> str:
    """The cache key of one image's faces under ``encoder`` and ``mode``."""
    return embedding_key(encoder.fingerprint, f"{encoder.preprocess_id}|faces-{mode}", sha256)


Detected = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes, scores, crops


def _detect(aligner: Aligner | None, path: str, size: int, mode: str) -> Detected | None:
    """Boxes, scores and aligned crops of the faces in one file (``None``: the file cannot be read)."""
    try:
        image = load_image(path)
    except ImageError:
        return None
    try:
        crops = faces_of(aligner, image, size)
    except NoFaceError:
        crops = []
    if mode == "central":
        crops = crops[:1]
    boxes = np.array([c.box for c in crops], np.float32).reshape(-1, 4)
    scores = np.array([NO_SCORE if c.score is None else c.score for c in crops], np.float32)
    stack = np.stack([c.crop for c in crops]) if crops else np.zeros((0, size, size, 3), np.uint8)
    return boxes, scores, stack


def _detect_chunk(paths: Sequence[str], size: int, mode: str) -> list[Detected | None]:
    return [_detect(_prepare._worker_aligner, p, size, mode) for p in paths]


def embed_faces(
    encoder: Encoder,
    items: Sequence[tuple[str, str]],
    cache: EmbeddingCache | NullCache | None = None,
    mode: str = "central",
    *,
    batch_size: int = 32,
    workers: int = 2,
    processes: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Faces], int, int]:
    """The faces of each ``(path, sha256)`` item, by SHA-256; and how many images were computed and cached.

    An unreadable file gets no entry (its image is skipped elsewhere); an image without a face
    gets an empty :class:`Faces`.
    """
    if mode not in FACE_MODES:
        raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}, not {mode!r}")
    cache = cache if cache is not None else NullCache()
    items = list(dict((sha, path) for path, sha in items).items())  # one per content
    keys = {sha: faces_key(encoder, mode, sha) for sha, _ in items}
    found: dict[str, Faces] = {}
    hits = cache.get_many(list(keys.values()))
    for sha, _ in items:
        flat = hits.get(keys[sha])
        faces = Faces.unpack(flat, encoder.dim) if flat is not None else None
        if faces is not None:
            found[sha] = faces
    n_cached = len(found)
    todo = [(sha, path) for sha, path in items if sha not in found]
    n_proc = process_count(encoder, len(todo), processes)
    size = encoder.image_size
    bar = tqdm(total=len(todo), desc=f"faces {encoder.name}", unit="img", disable=not progress or not todo)
    pool: Any
    if n_proc:
        ctx = multiprocessing.get_context(_START_METHOD)
        pool = ProcessPoolExecutor(
            n_proc, mp_context=ctx, initializer=_prepare._init_worker, initargs=(encoder.aligner,)
        )
    else:
        pool = ThreadPoolExecutor(workers)
    try:
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]

        def submit(batch: list[tuple[str, str]]) -> list[Any]:
            paths = [p for _, p in batch]
            if n_proc:
                return [
                    pool.submit(_detect_chunk, paths[i : i + CHUNK], size, mode) for i in range(0, len(paths), CHUNK)
                ]
            return [pool.submit(_detect, encoder.aligner, p, size, mode) for p in paths]

        ahead = 2 + (n_proc * 4 * CHUNK) // batch_size
        pending = [submit(b) for b in batches[:ahead]]
        for n, batch in enumerate(batches):
            futures, pending[n] = pending[n], []
            detected = [d for f in futures for d in f.result()] if n_proc else [f.result() for f in futures]
            if n + ahead < len(batches):
                pending.append(submit(batches[n + ahead]))
            ok = [(sha, d) for (sha, _), d in zip(batch, detected) if d is not None]
            crops = [d[2] for _, d in ok if len(d[2])]
            emb = encoder.embed_prepared(np.concatenate(crops)) if crops else np.zeros((0, encoder.dim), np.float32)
            at, fresh = 0, {}
            for sha, (boxes, scores, stack) in ok:
                vecs = np.asarray(emb[at : at + len(stack)], np.float32).reshape(-1, encoder.dim)
                at += len(stack)
                fresh[sha] = Faces(boxes, scores, vecs)
            cache.put_many({keys[sha]: f.pack() for sha, f in fresh.items()})
            found.update(fresh)
            bar.update(len(batch))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return found, len(found) - n_cached, n_cached
