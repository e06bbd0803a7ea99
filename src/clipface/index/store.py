"""A face search index: image embeddings in FAISS, metadata in SQLite, a manifest naming the encoder.

An index folder holds:

* ``manifest.json``: model name, encoder fingerprint, ``preprocess_id``, dimension, FAISS kind
  and parameters, image count. An encoder whose fingerprint or preparation differs is refused.
* ``vectors.f32`` and, for approximate kinds, ``ann.faiss`` (:mod:`.vectors`): row ``i`` is image
  id ``i``. Exact search at the matrix product's speed up to :data:`FLAT_MAX` vectors, IVF with
  4-bit fast-scan PQ codes and exact re-ranking above (or another kind on request,
  :mod:`.ann.faiss_backend`). :meth:`FaceIndex.load` memory-maps both.
* ``meta.sqlite`` (:mod:`~clipface.index.meta`): one row per image: id, path, path relative
  to the indexed folder, identity (the parent folder's name; ``None`` for images lying directly
  in the indexed folder), width, height and SHA-256. File names that are not UTF-8 are kept exact.
* ``skipped.json``: files left out (unreadable, truncated, not an image, no face) and why.
* optionally ``faces.f32`` and a ``faces`` table: the faces of each image by a face recogniser
  (:mod:`.facestore`; ``build(face_encoder=...)``).

Embeddings go through :func:`clipface.embed.embed_images` and its cache, so an interrupted
build resumes; :meth:`FaceIndex.add` appends without rebuilding and skips files whose SHA-256
is already indexed. Writers take turns on a lock file (:mod:`~clipface.index.writer`).
Vectors are unit-norm, so scores are cosine similarities (approximate kinds may miss some of the
true nearest images, never misstate a score). First-format folders (one ``vectors.faiss``) are
read and rewritten in this layout on their next change.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.dataset import SkippedFile
from ..embed.cache import EmbeddingCache, NullCache
from ..embed.faces import Faces
from ..errors import ImageError, NoFaceError
from ..files import write_json
from ..models.base import Encoder, l2_normalize
from ..models.runtime import LoadOptions, load_encoder
from .ann.budget import kind_and_params
from .ann.faiss_backend import FLAT_MAX, Kind
from .ann.tune import needs_tuning, tune_nprobe
from .faces import IndexFaces, embed_new_faces
from .facestore import FACES, SECOND_FACES
from .ingest import Embedded, ImageSource, embed_source
from .meta import MetaDB
from .records import (
    FORMAT,
    EncoderId,
    EncoderMismatchError,
    Exclude,
    FaceIndexError,
    ImageRecord,
    IndexUpdate,
    Manifest,
    QueryError,
    SearchHit,
)
from .shards import read_shards
from .vectors import ANN, IVFDATA, LEGACY, VECTORS, VectorStore
from .writer import commit_rows, fresh_dir, unique, write_lock

__all__ = ["FaceIndex"]

MANIFEST, META, SKIPPED = "manifest.json", "meta.sqlite", "skipped.json"


class FaceIndex:
    """A searchable collection of face images; build with :meth:`build`, open with :meth:`load`.

    Composed of the manifest, the image vectors (:class:`~clipface.index.vectors.VectorStore`),
    the metadata (``index.meta``, a :class:`~clipface.index.meta.MetaDB`) and, for an index
    built with a face model, the face vectors (``index.faces``, an
    :class:`~clipface.index.faces.IndexFaces`; ``None`` otherwise).
    """

    def __init__(self, index_dir: Path, manifest: Manifest, store: VectorStore, new: bool = False) -> None:
        self.dir = Path(index_dir)
        self.manifest = manifest
        self._store = store
        self._lock = threading.RLock()
        self.meta = MetaDB(self.dir / META, self.dir / SKIPPED)
        #: The face vectors (``--face-model``) and a second face model's of the same images (``--second-face-model``),
        #: ``None`` without.
        pair = IndexFaces.both(self.dir, manifest, self.meta, new=True) if new else (None, None)
        self.faces, self.second_faces = pair
        #: Searches the image vectors in its place when set (``serve --shards``): anything with
        #: ``search(queries, k) -> (scores, ids)``, as :class:`~clipface.index.sharded.ShardedSearch`.
        self.sharded: Any = None

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        encoder: Encoder,
        images: ImageSource,
        index_dir: str | Path,
        kind: Kind = "auto",
        cache: EmbeddingCache | NullCache | None = None,
        *,
        flat_max: int = FLAT_MAX,
        align: str | None = None,
        on_no_face: str = "skip",
        overwrite: bool = False,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        face_encoder: Encoder | None = None,
        faces: str = "central",
        memory_budget: int | None = None,
        second_face_encoder: Encoder | None = None,
    ) -> tuple[FaceIndex, IndexUpdate]:
        """Embed every image of ``images`` with ``encoder`` and write a new index to ``index_dir``.

        ``cache`` defaults to the on-disk embedding cache (an interrupted build resumes).
        ``align``/``on_no_face``: the ``--align`` choice the encoder was created with, recorded so
        :meth:`load_encoder` recreates it (``None``: the model's own front end).
        ``face_encoder``: also keep the faces of every image embedded by this face recogniser
        (:mod:`.facestore`), the central one or, with ``faces="all"``, every detected face;
        ``second_face_encoder``: the same images' faces by a second face recogniser too (the fused opt-out rule).
        ``memory_budget``: bytes the served codes must fit in (:mod:`.ann.budget`).
        """
        index_dir = fresh_dir(index_dir, overwrite, MANIFEST)
        cache = EmbeddingCache() if cache is None else cache
        emb = embed_source(encoder, images, lambda shas: set(), cache, batch_size, workers, progress)
        manifest = Manifest.new(EncoderId.of(encoder), encoder.is_test_model, align, on_no_face)
        embed_new_faces(manifest, emb, (face_encoder, second_face_encoder), faces, cache, batch_size, progress)
        return cls._write_new(index_dir, overwrite, manifest, kind, flat_max, emb, memory_budget)

    @classmethod
    def build_from_shards(
        cls,
        shard_dir: str | Path,
        index_dir: str | Path,
        kind: Kind = "auto",
        *,
        flat_max: int = FLAT_MAX,
        overwrite: bool = False,
        face_encoder: Encoder | None = None,
        faces: str = "central",
        cache: EmbeddingCache | NullCache | None = None,
        progress: bool = False,
        memory_budget: int | None = None,
        parts: Any = None,
        second_face_encoder: Encoder | None = None,
    ) -> tuple[FaceIndex, IndexUpdate]:
        """A new index from the embedding shards written by :func:`clipface.index.ray.embed_with_ray`.

        ``face_encoder``: the faces of every image embedded here, by this process (as :meth:`build`).
        ``parts``: a :class:`~.parts.PartsBuild` adding an inverted file's codes in parts (on Ray) and merging them.
        """
        shards = read_shards(shard_dir)
        index_dir = fresh_dir(index_dir, overwrite, MANIFEST)
        records, vectors, dups = unique(shards.records, shards.vectors, set())
        manifest = Manifest.new(shards.encoder_id, shards.is_test_model, shards.align, shards.on_no_face)
        emb = Embedded(records, vectors, shards.skipped, dups, 0, 0)
        embed_new_faces(manifest, emb, (face_encoder, second_face_encoder), faces, cache, 32, progress)
        return cls._write_new(index_dir, overwrite, manifest, kind, flat_max, emb, memory_budget, parts)

    @classmethod
    def _write_new(
        cls,
        index_dir: Path,
        overwrite: bool,
        manifest: Manifest,
        kind: str,
        flat_max: int,
        emb: Embedded,
        memory_budget: int | None = None,
        parts: Any = None,
    ) -> tuple[FaceIndex, IndexUpdate]:
        """Replace whatever the folder holds with a new index of ``emb``, holding the writer lock throughout.

        The check for an existing index is repeated under the lock (another build may have
        finished meanwhile). A build that fails leaves no metadata file without a manifest.
        """
        with write_lock(index_dir):
            fresh_dir(index_dir, overwrite, MANIFEST)
            fit = kind_and_params(len(emb.vectors), manifest.dim, kind, flat_max, memory_budget)
            manifest.kind, manifest.params = fit.kind, fit.params
            # the manifest first: a half-removed index is none
            for name in (MANIFEST, META, SKIPPED, VECTORS, ANN, IVFDATA, LEGACY, FACES, SECOND_FACES):
                (index_dir / name).unlink(missing_ok=True)
            try:
                vectors = l2_normalize(emb.vectors)
                store = VectorStore.create(index_dir, manifest.kind, manifest.dim, manifest.params, vectors, parts)
                index = cls(index_dir, manifest, store, new=True)
                update = index._append(
                    emb.records,
                    emb.vectors,
                    emb.skipped,
                    emb.duplicates,
                    emb.computed,
                    emb.cached,
                    emb.faces,
                    emb.second_faces,
                )
            except BaseException:
                if not (index_dir / MANIFEST).exists():
                    for name in (META, SKIPPED, VECTORS, ANN, IVFDATA, FACES, SECOND_FACES):
                        (index_dir / name).unlink(missing_ok=True)
                raise
        return index, update

    @classmethod
    def load(cls, index_dir: str | Path, mmap: bool = True) -> FaceIndex:
        """Open an index folder; ``mmap`` memory-maps the vectors so a large index starts fast."""
        index_dir = Path(index_dir)
        path = index_dir / MANIFEST
        if not path.is_file():
            raise FaceIndexError(
                f"{index_dir}: not an index folder (no {MANIFEST}); build one with `clipface index build`"
            )
        manifest = Manifest.read(path)
        m = manifest
        store = VectorStore.open(index_dir, m.dim, m.kind, m.params, m.count, mmap=mmap)
        try:
            index = cls(index_dir, manifest, store)
            n_rows = index.meta.count()
            index.faces, index.second_faces = IndexFaces.both(index_dir, manifest, index.meta, mmap)
        except sqlite3.DatabaseError as exc:
            raise FaceIndexError(
                f"{index_dir / META}: not a readable metadata database ({exc}); rebuild the index"
            ) from None
        codes = store.ann.ntotal if store.ann is not None else store.count
        if not store.count == codes == n_rows == manifest.count:
            raise FaceIndexError(
                f"{index_dir}: inconsistent index ({store.count} vectors, {codes} codes, {n_rows} metadata rows, "
                f"manifest says {manifest.count}): rebuild it"
            )
        return index

    # -- adding ------------------------------------------------------------------------
    def add(
        self,
        encoder: Encoder,
        images: ImageSource,
        cache: EmbeddingCache | NullCache | None = None,
        *,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        face_encoder: Encoder | None = None,
    ) -> IndexUpdate:
        """Embed and append new images (files whose SHA-256 is already indexed are skipped).

        An index with faces embeds the new images' faces too, with ``face_encoder`` (default: its
        face model, loaded), and with its second face model where it has one.
        """
        self.check_encoder(encoder)
        self._store.check_appendable()
        cache = EmbeddingCache() if cache is None else cache
        emb = embed_source(encoder, images, self.meta.known, cache, batch_size, workers, progress)
        faces = self.faces.embed(emb.records, cache, face_encoder, batch_size, progress) if self.faces else None
        second = self.second_faces.embed(emb.records, cache, None, batch_size, progress) if self.second_faces else None
        return self._commit(
            emb.records, emb.vectors, emb.skipped, emb.duplicates, emb.computed, emb.cached, faces, second
        )

    def add_shards(self, shard_dir: str | Path) -> IndexUpdate:
        """Append the embedding shards of :func:`clipface.index.ray.embed_with_ray` (same encoder required)."""
        shards = read_shards(shard_dir)
        return self.add_vectors(
            shards.records, shards.vectors, shards.encoder_id, shards.skipped, f"shards in {shard_dir}"
        )

    def add_vectors(
        self,
        records: list[ImageRecord],
        vectors: np.ndarray,
        encoder_id: EncoderId,
        skipped: list[Any] | None = None,
        what: str = "the vectors",
    ) -> IndexUpdate:
        """Append precomputed vectors of ``records`` (made by ``encoder_id``, checked); known SHA-256s are skipped."""
        self._check_id(encoder_id, what)
        self._store.check_appendable()
        vectors = (
            np.asarray(vectors, dtype=np.float32).reshape(len(records), -1)
            if len(records)
            else np.zeros((0, self.manifest.dim), np.float32)
        )
        records, vectors, dups = unique(list(records), vectors, self.meta.known([r.sha256 for r in records]))
        faces = self.faces.embed(records, None) if self.faces else None
        second = self.second_faces.embed(records, None) if self.second_faces else None
        return self._commit(records, vectors, list(skipped or []), dups, faces=faces, second_faces=second)

    def _commit(
        self,
        records: list[ImageRecord],
        vectors: np.ndarray,
        skipped: list[SkippedFile],
        duplicates: int,
        computed: int = 0,
        cached: int = 0,
        faces: dict[str, Faces] | None = None,
        second_faces: dict[str, Faces] | None = None,
    ) -> IndexUpdate:
        """Append vectors and metadata to the committed index (see :mod:`clipface.index.writer`).

        Writers of one index folder take turns (the folder's file lock): each reloads what the
        writer before it committed and drops images that writer already added.
        """
        with self._lock, write_lock(self.dir):
            if self._reload_for_write():
                records, vectors, more = unique(records, vectors, self.meta.known([r.sha256 for r in records]))
                duplicates += more
            return self._append(records, vectors, skipped, duplicates, computed, cached, faces, second_faces)

    def _append(
        self,
        records: list[ImageRecord],
        vectors: np.ndarray,
        skipped: list[SkippedFile],
        duplicates: int,
        computed: int,
        cached: int,
        faces: dict[str, Faces] | None = None,
        second_faces: dict[str, Faces] | None = None,
    ) -> IndexUpdate:
        """Write the vectors (and faces) with the metadata rows, then the manifest and skipped list (writer lock
        held)."""
        start = self._store.count
        if len(records):
            self._store.append(l2_normalize(vectors))
        rows: dict[str, list[Any]] = {}
        stores = (
            (self.faces, self.manifest.faces, faces),
            (self.second_faces, self.manifest.second_faces, second_faces),
        )
        for kept, entry, new in stores:
            if kept is not None and entry is not None:
                rows[kept.store.table] = kept.append(start, records, new or {})
        commit_rows(self._store, self.meta, start, records, rows)
        self.manifest.count = self._store.count
        for kept, entry, _ in stores:
            if kept is not None and entry is not None:
                entry["count"] = kept.model.count = kept.store.count
        if needs_tuning(self._store):  # lists probed chosen by measurement (built, or doubled since)
            self.manifest.params = tune_nprobe(self._store)
        self.manifest.format = FORMAT
        write_json(self.dir / MANIFEST, asdict(self.manifest))
        self._store.finish_legacy_upgrade()
        write_json(self.dir / SKIPPED, self.meta.skipped_or_set_aside() + [s.to_dict() for s in skipped])
        return IndexUpdate(len(records), duplicates, skipped, computed, cached)

    def _reload_for_write(self) -> bool:
        """Load the committed state before appending; whether another writer added rows."""
        path = self.dir / MANIFEST
        on_disk = Manifest.read(path) if path.is_file() else self.manifest
        changed = on_disk.count != self.manifest.count
        if changed:
            m = on_disk
            self._store = VectorStore.open(self.dir, m.dim, m.kind, m.params, m.count, mmap=True)
            self.manifest.faces, self.manifest.params = m.faces, m.params  # params: another writer's tuning
            self.manifest.second_faces = m.second_faces
            self.faces, self.second_faces = IndexFaces.both(self.dir, m, self.meta)
        self.manifest.count = self._store.count
        return changed

    # -- encoders ----------------------------------------------------------------------
    def check_encoder(self, encoder: Encoder) -> None:
        """Raise :class:`EncoderMismatchError` unless ``encoder`` has the index's weights and preparation."""
        self._check_id(EncoderId.of(encoder), "the encoder")

    def _check_id(self, eid: EncoderId, what: str) -> None:
        mine = self.manifest.encoder_id
        if (eid.fingerprint, eid.preprocess_id, eid.dim) != (mine.fingerprint, mine.preprocess_id, mine.dim):
            raise EncoderMismatchError(
                f"index {self.dir} was built with {mine.describe()}, but {what} is {eid.describe()}"
            )

    def load_encoder(self, weights: str | Path | None = None, device: str = "cpu") -> Encoder:
        """Create the encoder the index was built with (same model and face front end), checked."""
        m = self.manifest
        opts = LoadOptions(
            device=device, weights={m.model: str(weights)} if weights else {}, aligner=m.align, on_no_face=m.on_no_face
        )
        encoder = load_encoder(m.model, opts)
        self.check_encoder(encoder)
        return encoder

    # -- searching ---------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def image_vectors(self) -> np.ndarray:
        """The ``(count, dim)`` unit image vectors, row ``i`` for image ``i`` (memory-mapped; read-only)."""
        return self._store.vectors

    def search_vectors(self, queries: np.ndarray, k: int = 10, exclude: Exclude | None = None) -> list[list[SearchHit]]:
        """The ``k`` best images for each query vector (a ``(dim,)`` or ``(n, dim)`` array), one list per query.

        Images for which ``exclude`` is true are removed; the search then fetches more so that
        ``k`` results still come back when the index has them.
        """
        q = l2_normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.manifest.dim:
            raise QueryError(f"query vectors have dimension {q.shape[1]}, the index has {self.manifest.dim}")
        k = max(0, min(int(k), self.count))
        if k == 0:
            return [[] for _ in q]
        fetch = k if exclude is None else min(self.count, 2 * k + 8)
        while True:
            if self.sharded is not None:  # the rows searched by shards elsewhere (:mod:`.sharded`)
                scores, ids = self.sharded.search(q, fetch)
            else:
                with self._lock:
                    scores, ids = self._store.search(q, fetch)
            if np.isfinite(q).all() and (ids < 0).all():  # the index holds vectors: none scored is none finite
                raise FaceIndexError(f"{self.dir}: the stored vectors are damaged (NaN): rebuild the index")
            meta = self.meta.images([int(i) for i in np.unique(ids) if i >= 0])
            out = []
            for row_scores, row_ids in zip(scores, ids):
                kept = [(meta[int(i)], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0 and int(i) in meta]
                if exclude is not None:
                    kept = [(im, s) for im, s in kept if not exclude(im)]
                out.append([SearchHit(**asdict(im), rank=r + 1, score=s) for r, (im, s) in enumerate(kept[:k])])
            if fetch >= self.count or all(len(hits) == k for hits in out):
                return out
            fetch = min(self.count, fetch * 4)

    # -- queries -----------------------------------------------------------------------
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
        if self.faces is not None and self.faces.is_model(encoder):
            return self.faces.search(query, k, exclude)
        return self.search_vectors(query, k, exclude)[0]

    def embed_query_image(self, encoder: Encoder, image: Image.Image) -> np.ndarray:
        """The ``(1, dim)`` embedding of a query photo; a photo without a face is a :class:`QueryError`.

        Where ``encoder`` is the index's face model, the photo is embedded as the face vectors were
        (mirror-summed where they are), so that its scores are the face model's own.
        """
        self.check_encoder(encoder)
        if self.faces is not None and self.faces.is_model(encoder):
            encoder = self.faces.load_encoder()
        try:
            prepared = encoder.prepare(image.convert("RGB"))
        except NoFaceError:
            raise QueryError(
                f"no face found in the query image ({encoder.name} needs a photo with a visible face)"
            ) from None
        except ImageError as exc:
            raise QueryError(f"unusable query image: {exc.reason}") from None
        return encoder.embed_prepared(np.stack([prepared]))

    def stats(self) -> dict[str, Any]:
        """Summary for people and the API."""
        m = self.manifest
        return {
            "model": m.model,
            "is_test_model": m.is_test_model,
            "fingerprint": m.fingerprint,
            "preprocess_id": m.preprocess_id,
            "dim": m.dim,
            "kind": m.kind,
            "params": m.params,
            "count": m.count,
            "identities": self.meta.n_identities(),
            "skipped": self._skipped_count(),
            "faces": self.faces.stats() if self.faces is not None else None,
            "second_faces": self.second_faces.stats() if self.second_faces is not None else None,
        }

    def _skipped_count(self) -> int | None:
        """How many files were left out; ``None`` where the list is damaged (the stats stay answerable)."""
        try:
            return len(self.meta.skipped())
        except FaceIndexError:
            return None

    def __repr__(self) -> str:
        return f"FaceIndex({str(self.dir)!r}, model={self.manifest.model!r}, kind={self.kind!r}, count={self.count})"
