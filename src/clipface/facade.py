"""One-call functions for a photo or two, as deepface's and face_recognition's: represent, verify, find.

Images may be paths, encoded bytes, PIL images or arrays. A photo without a face is never an
``IndexError``: :func:`represent` returns an empty list, and :func:`verify` and :func:`find`
raise :class:`~clipface.errors.NoFaceError` (a :class:`~clipface.errors.ClipfaceError`) naming
the image. Encoders are loaded once per process and model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from .data.dataset import FaceImage
from .data.images import ImageSource, as_image
from .embed.cache import EmbeddingCache, NullCache
from .embed.pipeline import embed_images
from .errors import NoFaceError, UsageError, check_int
from .index.ingest import collect_images
from .models.align import faces_of, image_label
from .models.base import Encoder
from .models.registry import get_spec
from .models.runtime import LoadOptions, load_encoder

__all__ = ["Face", "Match", "Verification", "find", "represent", "verify"]

#: What the one-call functions accept as an image.
ImageInput = Union[ImageSource, Image.Image, np.ndarray]

_ENCODERS: dict[tuple[str, bool], Encoder] = {}
_LOCK = threading.Lock()


def _encoder(model: str | Encoder, flip: bool = False) -> Encoder:
    if isinstance(model, Encoder):
        return model
    key = (model, flip)
    with _LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = load_encoder(model, LoadOptions(flip=flip))
        return _ENCODERS[key]


@dataclass(frozen=True)
class Face:
    """One face in a photo: its L2-normalised embedding, box (left, top, right, bottom) and detector score."""

    embedding: np.ndarray
    box: tuple[float, float, float, float]
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"embedding": self.embedding.tolist(), "box": list(self.box), "score": self.score}


def represent(image: ImageInput, model: str | Encoder = "dlib") -> list[Face]:
    """Every face in ``image`` with its embedding, the chosen (central) face first; ``[]`` where there is none.

    CLIP models have no face detector: their one "face" is the centre crop, with no score.
    """
    encoder = _encoder(model)
    img = as_image(image)
    try:
        crops = faces_of(encoder.aligner, img, encoder.image_size)
    except NoFaceError:
        return []
    emb = encoder.embed_prepared(np.stack([c.crop for c in crops]))
    return [Face(e, c.box, c.score) for e, c in zip(emb, crops)]


@dataclass(frozen=True)
class Verification:
    """The answer of :func:`verify`."""

    verified: bool
    similarity: float
    threshold: float
    threshold_source: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _embed_one(encoder: Encoder, image: ImageInput) -> np.ndarray:
    img = as_image(image)
    try:
        prepared = encoder.prepare(img)
    except NoFaceError:
        raise NoFaceError(
            image_label(img) if not isinstance(image, (str, Path)) else str(image),
            f"no face found by {encoder.name}'s front end",
        ) from None
    return encoder.embed_prepared(prepared[None])[0]


def verify(
    image_a: ImageInput, image_b: ImageInput, model: str = "dlib", threshold: float | None = None
) -> Verification:
    """Whether two photos show the same person: cosine similarity of their central faces against a threshold.

    The default threshold is the model's on LFW at a false accept rate of 1e-3, recorded from our
    own run of ``clipface eval verify`` (see ``threshold_source``); faces are embedded as in that
    run (with the mirrored crop added). Models without a recorded threshold need ``threshold``.
    """
    spec = get_spec(model)
    if threshold is None:
        if spec.verify_threshold is None:
            raise UsageError("threshold", None, f"no LFW threshold is recorded for {spec.name}: pass threshold=")
        threshold, source = spec.verify_threshold, spec.verify_threshold_source
    else:
        source = "given"
    encoder = _encoder(spec.name, flip=True)
    a, b = _embed_one(encoder, image_a), _embed_one(encoder, image_b)
    similarity = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    return Verification(similarity >= threshold, similarity, float(threshold), source, spec.name)


@dataclass(frozen=True)
class Match:
    """One gallery photo in the answer of :func:`find`."""

    rank: int
    path: str
    identity: str | None
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def find(
    image: ImageInput,
    gallery_dir: str | Path,
    model: str | Encoder = "dlib",
    k: int = 10,
    cache: EmbeddingCache | NullCache | None = None,
) -> list[Match]:
    """The ``k`` gallery photos most similar to the central face of ``image``, best first.

    ``gallery_dir`` is a folder of photos (identity sub-folders name the people, as in LFW; a flat
    folder works too). Gallery embeddings go through the embedding cache (default: the on-disk
    one), so a second search over the same folder embeds nothing; photos without a usable face are
    left out.
    """
    check_int("k", k, 1, allow_none=False)
    encoder = _encoder(model)
    query = _embed_one(encoder, image)
    entries, _ = collect_images(gallery_dir)
    images = [FaceImage(e.path, e.identity or "") for e in entries]
    result = embed_images(encoder, images, cache if cache is not None else EmbeddingCache(), progress=False)
    if not len(result.images):
        return []
    sims = result.embeddings.astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-sims, kind="stable")[:k]
    return [
        Match(rank + 1, str(result.images[i].path), result.images[i].identity or None, float(sims[i]))
        for rank, i in enumerate(order)
    ]
