"""An index's face vectors as one object (:class:`IndexFaces`): which face model made them, their store
(:mod:`.facestore`), embedding the faces of new images with that model, and search by face.

A :class:`~clipface.index.store.FaceIndex` built with ``--face-model`` holds one as ``index.faces``
(``None`` for an index without faces).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..embed.cache import EmbeddingCache, NullCache
from ..embed.faces import Faces, embed_faces
from ..models.base import Encoder, l2_normalize
from ..models.runtime import LoadOptions, load_encoder
from .facestore import FLIP_SUM, FaceModel, FaceStore, face_rows, search_faces
from .ingest import Embedded
from .meta import MetaDB
from .records import EncoderId, EncoderMismatchError, Exclude, ImageRecord, Manifest, SearchHit

__all__ = ["IndexFaces", "embed_new_faces", "faces_with"]


def faces_with(
    encoder: Encoder,
    mode: str,
    records: Sequence[ImageRecord],
    cache: EmbeddingCache | NullCache | None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Faces]:
    """The faces of ``records`` by SHA-256 (:func:`~clipface.embed.faces.embed_faces`, cached)."""
    cache = EmbeddingCache() if cache is None else cache
    items = [(r.path, r.sha256) for r in records]
    return embed_faces(encoder, items, cache, mode, batch_size=batch_size, progress=progress)[0]


class IndexFaces:
    """The face vectors of an index built with a face model (``--face-model``, ``--faces all|central``)."""

    def __init__(self, folder: Path, model: FaceModel, store: FaceStore, meta: MetaDB) -> None:
        self.folder = folder
        self.model = model
        self.store = store
        self._meta = meta
        self._encoder: Encoder | None = None

    @classmethod
    def of(
        cls, folder: Path, entry: Any, meta: MetaDB, mmap: bool = True, new: bool = False, table: str = "faces"
    ) -> IndexFaces | None:
        """The face vectors the manifest's ``faces`` (or ``second_faces``, with that ``table``) entry describes
        (``new``: an empty store); ``None`` without."""
        model = FaceModel.read(entry, folder)
        if model is None:
            return None
        store = FaceStore.create(folder, model.dim, table) if new else FaceStore.open(folder, meta, model, mmap, table)
        return cls(folder, model, store, meta)

    @classmethod
    def both(
        cls, folder: Path, manifest: Manifest, meta: MetaDB, mmap: bool = True, new: bool = False
    ) -> tuple[IndexFaces | None, IndexFaces | None]:
        """The face vectors of the manifest's face model and of its second one (:meth:`of`)."""
        second = cls.of(folder, manifest.second_faces, meta, mmap, new, table="second_faces")
        return cls.of(folder, manifest.faces, meta, mmap, new), second

    def check_encoder(self, encoder: Encoder) -> None:
        """Raise :class:`EncoderMismatchError` unless ``encoder`` is the index's face model."""
        fm, eid = self.model, EncoderId.of(encoder)
        if (eid.fingerprint, eid.preprocess_id, eid.dim) != (fm.fingerprint, fm.preprocess_id, fm.dim):
            raise EncoderMismatchError(
                f"index {self.folder} keeps faces of {fm.encoder_id.describe()}, but the face model is {eid.describe()}"
            )

    def is_model(self, encoder: Encoder) -> bool:
        """Whether ``encoder`` is the face model of these vectors, up to the mirror sum (then photo queries search
        faces, embedded as the vectors were: :meth:`load_encoder`)."""
        plain = self.model.preprocess_id.removesuffix(FLIP_SUM)
        return (encoder.fingerprint, encoder.preprocess_id.removesuffix(FLIP_SUM)) == (self.model.fingerprint, plain)

    def load_encoder(self, device: str = "cpu") -> Encoder:
        """The face model the vectors were made with (its own front end), checked; loaded once."""
        if self._encoder is None:
            encoder = load_encoder(self.model.model, LoadOptions(device=device, flip=self.model.mirror_summed))
            self.check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def embed(
        self,
        records: Sequence[ImageRecord],
        cache: EmbeddingCache | NullCache | None,
        encoder: Encoder | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> dict[str, Faces]:
        """The faces of ``records`` by SHA-256, embedded with the index's face model (``encoder``, checked)."""
        if not records:
            return {}
        encoder = encoder if encoder is not None else self.load_encoder()
        self.check_encoder(encoder)
        return faces_with(encoder, self.model.mode, records, cache, batch_size, progress)

    def append(self, start: int, records: Sequence[ImageRecord], faces: dict[str, Faces]) -> list[Any]:
        """Append the faces of ``records`` (the images numbered from ``start``; ``faces`` by SHA-256) to the store;
        the metadata rows that say whose they are (committed with the images' rows)."""
        rows, vecs, owners = face_rows(self.store.count, start, list(records), faces, self.store.dim)
        self.store.append(l2_normalize(vecs), owners)
        return rows

    def search(self, query: np.ndarray, k: int, exclude: Exclude | None = None) -> list[SearchHit]:
        """The ``k`` images whose best face is most similar to the face vector ``query`` (with that face's box)."""
        q = l2_normalize(np.asarray(query, np.float32).reshape(-1))
        return search_faces(self.store, self._meta, self._meta.images, q, k, exclude)

    def stats(self) -> dict[str, Any]:
        fm = self.model
        return {"model": fm.model, "fingerprint": fm.fingerprint[:12], "mode": fm.mode, "count": fm.count}


def embed_new_faces(
    manifest: Manifest,
    emb: Embedded,
    face_encoders: tuple[Encoder | None, Encoder | None],
    faces: str,
    cache: EmbeddingCache | NullCache | None,
    batch_size: int,
    progress: bool,
) -> None:
    """A new index's faces, when it keeps them: the face model (and the second, if any) in the manifest, every
    image's faces embedded by each."""
    first, second = face_encoders
    if second is not None and first is None:
        raise ValueError("a second face model needs a face model")
    if first is not None:
        manifest.faces = FaceModel.of(EncoderId.of(first), faces).to_dict()
        emb.faces = faces_with(first, faces, emb.records, cache, batch_size, progress)
    if second is not None:
        manifest.second_faces = FaceModel.of(EncoderId.of(second), faces).to_dict()
        emb.second_faces = faces_with(second, faces, emb.records, cache, batch_size, progress)
