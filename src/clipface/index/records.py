"""What a face index stores and answers: image records, hits, the encoder identity, the manifest, errors."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..data.dataset import SkippedFile, display_name, identity_key
from ..errors import ClipfaceError
from ..models.base import Encoder

__all__ = [
    "EncoderId",
    "EncoderMismatchError",
    "Exclude",
    "FORMAT",
    "READABLE_FORMATS",
    "FaceIndexError",
    "ImageRecord",
    "IndexUpdate",
    "IndexedImage",
    "Manifest",
    "QueryError",
    "SearchHit",
    "identity_key",
]

#: Version of the index folder layout (2: vectors in ``vectors.f32``, codes in ``ann.faiss``; 1: one FAISS file).
FORMAT = 2
#: Layouts that can still be read (a first-format folder is rewritten in the current one on its next change).
READABLE_FORMATS = (1, 2)


class FaceIndexError(ClipfaceError):
    """An index folder that cannot be built, read or used as asked."""


class EncoderMismatchError(FaceIndexError):
    """An encoder whose weights or preparation differ from those the index was built with."""


class QueryError(FaceIndexError):
    """A query the index cannot answer: text for a model without a text tower, a photo without a face."""


@dataclass(frozen=True)
class ImageRecord:
    """Metadata of one image to index."""

    path: str
    relpath: str
    identity: str | None
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class IndexedImage(ImageRecord):
    """An image in the index; ``id`` is its FAISS row."""

    id: int

    @property
    def name(self) -> str | None:
        """The person's display name (``George W Bush``), or ``None`` when unknown."""
        return display_name(self.identity) if self.identity else None


@dataclass(frozen=True)
class SearchHit(IndexedImage):
    """One search result: an indexed image, its 1-based rank and its score (cosine similarity).

    ``box``: where a face index answered, the matching face (left, top, right, bottom, source pixels).
    """

    rank: int
    score: float
    box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


@dataclass(frozen=True)
class EncoderId:
    """What fixes the vectors of an image: weights and exact preparation."""

    model: str
    fingerprint: str
    preprocess_id: str
    dim: int

    @classmethod
    def of(cls, encoder: Encoder) -> EncoderId:
        return cls(encoder.name, encoder.fingerprint, encoder.preprocess_id, int(encoder.dim))

    def describe(self) -> str:
        return f"{self.model} (fingerprint {self.fingerprint[:12]}, preprocess {self.preprocess_id})"


#: Largest manifest read: a few kB in practice; anything far larger is not one (and is not read into memory).
MANIFEST_MAX_BYTES = 1 << 20
#: The kinds of vector index a manifest may name (``auto`` is a request, resolved before it is written).
STORED_KINDS: tuple[str, ...] = ("flat", "ivfpqfs", "ivfsq8", "ivfpq", "hnsw")


def _check_manifest(m: Manifest) -> str | None:
    """What is wrong with the values of a manifest read from disk (untrusted), or ``None``."""
    for name in ("model", "fingerprint", "preprocess_id", "kind", "on_no_face"):
        if not isinstance(getattr(m, name), str):
            return f"{name} must be text, not {getattr(m, name)!r}"
    for name, least in (("dim", 1), ("count", 0), ("format", 0)):
        value = getattr(m, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            return f"{name} must be a whole number of at least {least}, not {value!r}"
    if m.kind not in STORED_KINDS:
        return f"unknown kind {m.kind!r} (one of {', '.join(STORED_KINDS)})"
    if not isinstance(m.params, dict) or not all(f is None or isinstance(f, dict) for f in (m.faces, m.second_faces)):
        return "params, faces and second_faces must be JSON objects"
    if m.second_faces is not None and m.faces is None:
        return "second_faces without faces"
    if m.align is not None and not isinstance(m.align, str):
        return f"align must be text, not {m.align!r}"
    return None


@dataclass
class Manifest:
    """The ``manifest.json`` of an index folder."""

    model: str
    fingerprint: str
    preprocess_id: str
    dim: int
    kind: str
    count: int
    params: dict[str, Any] = field(default_factory=dict)
    align: str | None = None
    on_no_face: str = "skip"
    is_test_model: bool = False
    format: int = FORMAT
    #: The face vectors kept beside the image vectors (:class:`~clipface.index.facestore.FaceModel`), if any.
    faces: dict[str, Any] | None = None
    #: A second face model's vectors of the same images (``--second-face-model``), for the fused opt-out rule.
    second_faces: dict[str, Any] | None = None

    @property
    def encoder_id(self) -> EncoderId:
        return EncoderId(self.model, self.fingerprint, self.preprocess_id, self.dim)

    @classmethod
    def new(cls, eid: EncoderId, is_test_model: bool, align: str | None, on_no_face: str) -> Manifest:
        """The manifest of a new, empty index (kind and parameters are set once the vectors are known)."""
        return cls(
            model=eid.model,
            fingerprint=eid.fingerprint,
            preprocess_id=eid.preprocess_id,
            dim=eid.dim,
            kind="flat",
            count=0,
            align=align,
            on_no_face=on_no_face,
            is_test_model=is_test_model,
        )

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest in ``path``, checked to be one this version reads."""
        if Path(path).stat().st_size > MANIFEST_MAX_BYTES:
            raise FaceIndexError(f"{path}: not a manifest (over {MANIFEST_MAX_BYTES} bytes); rebuild the index")
        try:
            manifest = cls(**json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as exc:
            raise FaceIndexError(f"{path}: unreadable manifest ({exc})") from None
        problem = _check_manifest(manifest)
        if problem is not None:
            raise FaceIndexError(f"{path}: damaged manifest: {problem}; rebuild the index")
        if manifest.format not in READABLE_FORMATS:
            raise FaceIndexError(f"{path}: index format {manifest.format} is not supported (expected {FORMAT})")
        return manifest


@dataclass
class IndexUpdate:
    """What a build or an add did."""

    added: int
    duplicates: int
    skipped: list[SkippedFile]
    computed: int = 0
    cached: int = 0
    #: Where the embedding ran when it ran on Ray (:meth:`clipface.index.ray.RayEmbedding.to_dict`).
    ray: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "computed": self.computed,
            "cached": self.cached,
            "skipped": [s.to_dict() for s in self.skipped],
        } | ({"ray": self.ray} if self.ray else {})


#: A predicate removing images from search answers (e.g. an opt-out list).
Exclude = Callable[[IndexedImage], bool]
