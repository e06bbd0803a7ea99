"""What :class:`~clipface.search.store.FaceIndex` does with its metadata, its queries and its face vectors (mixins).

Kept apart from :mod:`.store` so that each stays short: the metadata look-ups, text and photo
queries, and the face store (:mod:`.facestore`): which face model made it, embedding the faces
of new images with it, search by face.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..embed.cache import EmbeddingCache, NullCache
from ..embed.faces import Faces, embed_faces
from ..errors import ImageError, NoFaceError
from ..models.base import Encoder, l2_normalize
from ..models.runtime import LoadOptions, load_encoder
from .facestore import FaceModel, FaceStore, search_faces
from .meta import MetaDB
from .records import (
    EncoderId,
    EncoderMismatchError,
    Exclude,
    ImageRecord,
    IndexedImage,
    Manifest,
    QueryError,
    SearchHit,
)

__all__ = ["FaceMethods", "MetaMethods", "QueryMethods", "faces_with"]

SKIPPED = "skipped.json"


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


class MetaMethods:
    """Metadata look-ups of an index (``meta.sqlite`` and ``skipped.json``)."""

    dir: Path
    _meta: MetaDB

    def images(self, ids: Iterable[int]) -> dict[int, IndexedImage]:
        """Metadata of the images with these ids (unknown and out-of-range ids are absent)."""
        return self._meta.images(ids)

    def image(self, image_id: int) -> IndexedImage | None:
        """Metadata of one image, or ``None``."""
        return self.images([image_id]).get(image_id)

    def images_of(self, identity: str) -> list[IndexedImage]:
        """Every image of a person (name matched with :func:`~clipface.search.records.identity_key`)."""
        return self._meta.images_of(identity)

    def n_images_of(self, identity: str) -> int:
        """Number of images of a person."""
        return self._meta.n_images_of(identity)

    def n_identities(self) -> int:
        """Number of distinct known identities."""
        return self._meta.n_identities()

    def skipped(self) -> list[dict[str, str]]:
        """Files left out of the index so far, with reasons."""
        path = self.dir / SKIPPED
        return json.loads(path.read_text()) if path.is_file() else []

    def known(self, shas: list[str]) -> set[str]:
        """Which of these SHA-256s are already indexed."""
        return self._meta.known(shas)


class FaceMethods:
    """The face vectors of an index built with a face model (``--face-model``, ``--faces all|central``)."""

    dir: Path
    manifest: Manifest
    _meta: MetaDB
    _faces: FaceStore | None
    _face_encoder: Encoder | None = None

    @property
    def face_model(self) -> FaceModel | None:
        """Which face recogniser made the face vectors (``None``: the index keeps none)."""
        return FaceModel.read(self.manifest.faces, self.dir)

    @property
    def faces(self) -> FaceStore | None:
        """The face vectors and the image of each face (``None``: the index keeps none)."""
        return self._faces

    def check_face_encoder(self, encoder: Encoder) -> None:
        """Raise :class:`EncoderMismatchError` unless ``encoder`` is the index's face model."""
        fm = self.face_model
        eid = EncoderId.of(encoder)
        if fm is None or (eid.fingerprint, eid.preprocess_id, eid.dim) != (fm.fingerprint, fm.preprocess_id, fm.dim):
            mine = fm.encoder_id.describe() if fm is not None else "no face model"
            raise EncoderMismatchError(
                f"index {self.dir} keeps faces of {mine}, but the face model is {eid.describe()}"
            )

    def is_face_model(self, encoder: Encoder) -> bool:
        """Whether ``encoder`` made this index's face vectors (then photo queries search faces)."""
        fm = self.face_model
        return fm is not None and (encoder.fingerprint, encoder.preprocess_id) == (fm.fingerprint, fm.preprocess_id)

    def load_face_encoder(self, device: str = "cpu") -> Encoder:
        """The face model the index's face vectors were made with (its own front end), checked."""
        fm = self.face_model
        if fm is None:
            raise EncoderMismatchError(f"index {self.dir} keeps no face vectors (build it with --face-model)")
        if self._face_encoder is None:
            encoder = load_encoder(fm.model, LoadOptions(device=device))
            self.check_face_encoder(encoder)
            self._face_encoder = encoder
        return self._face_encoder

    def _embed_faces(
        self,
        records: Sequence[ImageRecord],
        cache: EmbeddingCache | NullCache | None,
        encoder: Encoder | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> dict[str, Faces] | None:
        """The faces of ``records`` by SHA-256 with the index's face model (``None`` for an index without faces)."""
        fm = self.face_model
        if fm is None or not records:
            return None if fm is None else {}
        encoder = encoder if encoder is not None else self.load_face_encoder()
        self.check_face_encoder(encoder)
        return faces_with(encoder, fm.mode, records, cache, batch_size, progress)

    def search_face(self, query: np.ndarray, k: int, exclude: Exclude | None = None) -> list[SearchHit]:
        """The ``k`` images whose best face is most similar to the face vector ``query`` (with that face's box)."""
        assert self._faces is not None
        q = l2_normalize(np.asarray(query, np.float32).reshape(-1))
        return search_faces(self._faces, self._meta, self._meta.images, q, k, exclude)

    def face_stats(self) -> dict[str, Any] | None:
        fm = self.face_model
        if fm is None:
            return None
        return {"model": fm.model, "fingerprint": fm.fingerprint[:12], "mode": fm.mode, "count": fm.count}


class QueryMethods:
    """Text and photo queries (they need :meth:`check_encoder`, :meth:`search_vectors` and the face methods)."""

    if TYPE_CHECKING:

        def check_encoder(self, encoder: Encoder) -> None: ...
        def search_vectors(
            self, q: np.ndarray, k: int = 10, exclude: Exclude | None = None
        ) -> list[list[SearchHit]]: ...
        def is_face_model(self, encoder: Encoder) -> bool: ...
        def search_face(self, query: np.ndarray, k: int, exclude: Exclude | None = None) -> list[SearchHit]: ...

        _faces: FaceStore | None

    def query_text(self, encoder: Encoder, text: str, k: int = 10, exclude: Exclude | None = None) -> list[SearchHit]:
        """Images best matching ``text`` (CLIP models only)."""
        self.check_encoder(encoder)
        if not encoder.has_text:
            raise QueryError(
                f"{encoder.name} has no text tower: text queries need a CLIP model (query with a photo instead)"
            )
        if not text.strip():
            raise QueryError("empty text query")
        return self.search_vectors(encoder.encode_text([text]), k, exclude)[0]

    def query_image(
        self, encoder: Encoder, image: Image.Image, k: int = 10, exclude: Exclude | None = None
    ) -> list[SearchHit]:
        """Images most similar to the face in ``image``, prepared by the encoder's own front end.

        Where ``encoder`` is the index's face model, every stored face is searched (a group photo is
        found through any of its people) and each hit carries its matching face's box.
        """
        query = self.embed_query_image(encoder, image)
        return self.search_query(encoder, query, k, exclude)

    def search_query(
        self, encoder: Encoder, query: np.ndarray, k: int = 10, exclude: Exclude | None = None
    ) -> list[SearchHit]:
        """:meth:`search_vectors` for one query photo's vector, or the face search where ``encoder`` made the faces."""
        if self._faces is not None and self.is_face_model(encoder):
            return self.search_face(query, k, exclude)
        return self.search_vectors(query, k, exclude)[0]

    def embed_query_image(self, encoder: Encoder, image: Image.Image) -> np.ndarray:
        """The ``(1, dim)`` embedding of a query photo; a photo without a face is a :class:`QueryError`."""
        self.check_encoder(encoder)
        try:
            prepared = encoder.prepare(image.convert("RGB"))
        except NoFaceError:
            raise QueryError(
                f"no face found in the query image ({encoder.name} needs a photo with a visible face)"
            ) from None
        except ImageError as exc:
            raise QueryError(f"unusable query image: {exc.reason}") from None
        return encoder.embed_prepared(np.stack([prepared]))
