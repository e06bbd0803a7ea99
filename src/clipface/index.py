"""A face search index: image embeddings in FAISS, metadata in SQLite, a manifest naming the encoder.

An index folder holds:

* ``manifest.json``: model name, encoder fingerprint, ``preprocess_id``, dimension, FAISS kind
  and parameters, image count. An encoder whose fingerprint or preparation differs is refused.
* ``vectors.faiss``: the vectors; row ``i`` is image id ``i``. Exact inner product
  (``IndexFlatIP``) up to :data:`FLAT_MAX` vectors, IVF-PQ with exact re-ranking above (or
  HNSW on request). :meth:`FaceIndex.load` memory-maps it.
* ``meta.sqlite``: one row per image: id, path, path relative to the indexed folder,
  identity (the parent folder's name in an identity-folder layout, ``None`` for images lying
  directly in the indexed folder), width, height and SHA-256 of the file.
* ``skipped.json``: files left out (unreadable, truncated, not an image, no face) and why.

Embeddings go through :func:`clipface.embed.embed_images` and its cache, so an interrupted
build resumes; :meth:`FaceIndex.add` appends without rebuilding and skips files whose SHA-256
is already indexed. Vectors are unit-norm, so scores are cosine similarities (IVF-PQ and HNSW
may miss some of the true nearest images, never misstate a score).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, Union

import numpy as np
from PIL import Image

from .cache import EmbeddingCache, NullCache
from .dataset import FaceDataset, FaceImage, SkippedFile, display_name, resolve_dataset_path
from .embed import default_workers, embed_images
from .encoders.base import Encoder, l2_normalize
from .errors import BackendUnavailableError, ClipfaceError, ImageError, NoFaceError
from .images import file_sha256, is_image_path, probe_image

Kind = Literal["auto", "flat", "ivfpq", "hnsw"]
KINDS: tuple[str, ...] = ("auto", "flat", "ivfpq", "hnsw")
#: ``kind="auto"`` uses exact search up to this many vectors, IVF-PQ above.
FLAT_MAX = 50_000
#: Fewest vectors IVF-PQ can be trained on (its codebooks need examples).
IVFPQ_MIN = 64
#: IVF-PQ training sample: at most ``max(TRAIN_MIN, TRAIN_PER_LIST * nlist)`` vectors.
TRAIN_MIN, TRAIN_PER_LIST = 65_536, 64
FORMAT = 1

MANIFEST, VECTORS, META, SKIPPED = "manifest.json", "vectors.faiss", "meta.sqlite", "skipped.json"

#: What can be indexed: a folder (identity sub-folders or a flat folder), a dataset, or files.
ImageSource = Union[str, Path, FaceDataset, Sequence[Union[str, Path]]]
#: A predicate removing images from search answers (e.g. an opt-out list).
Exclude = Callable[["IndexedImage"], bool]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, relpath TEXT NOT NULL, identity TEXT,
    identity_key TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS images_identity ON images(identity_key);
"""
_COLUMNS = "id, path, relpath, identity, width, height, sha256"


class FaceIndexError(ClipfaceError):
    """An index folder that cannot be built, read or used as asked."""


class EncoderMismatchError(FaceIndexError):
    """An encoder whose weights or preparation differ from those the index was built with."""


class QueryError(FaceIndexError):
    """A query the index cannot answer: text for a model without a text tower, a photo without a face."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise BackendUnavailableError('faiss is not installed: pip install "clipface[search]"') from None
    return faiss


def identity_key(name: str) -> str:
    """Case- and separator-insensitive form of a person's name: ``George_W_Bush`` -> ``george w bush``."""
    return " ".join(name.replace("_", " ").split()).casefold()


# -- records ---------------------------------------------------------------------------


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
    """One search result: an indexed image, its 1-based rank and its score (cosine similarity)."""

    rank: int
    score: float

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
    def of(cls, encoder: Encoder) -> "EncoderId":
        return cls(encoder.name, encoder.fingerprint, encoder.preprocess_id, int(encoder.dim))

    def describe(self) -> str:
        return f"{self.model} (fingerprint {self.fingerprint[:12]}, preprocess {self.preprocess_id})"


@dataclass
class Manifest:
    """The ``manifest.json`` of an index folder."""

    model: str
    fingerprint: str
    preprocess_id: str
    dim: int
    kind: str
    count: int
    params: dict[str, int] = field(default_factory=dict)
    align: str | None = None
    on_no_face: str = "skip"
    is_test_model: bool = False
    format: int = FORMAT

    @property
    def encoder_id(self) -> EncoderId:
        return EncoderId(self.model, self.fingerprint, self.preprocess_id, self.dim)


@dataclass
class IndexUpdate:
    """What a build or an add did."""

    added: int
    duplicates: int
    skipped: list[SkippedFile]
    computed: int = 0
    cached: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "computed": self.computed,
            "cached": self.cached,
            "skipped": [s.to_dict() for s in self.skipped],
        }


# -- FAISS -----------------------------------------------------------------------------


def choose_kind(n: int, kind: str = "auto", flat_max: int = FLAT_MAX) -> str:
    """The FAISS kind for ``n`` vectors: ``kind`` itself unless ``"auto"`` (flat up to ``flat_max``, else IVF-PQ)."""
    if kind not in KINDS:
        raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else "ivfpq"


def default_params(kind: str, n: int, dim: int) -> dict[str, int]:
    """FAISS parameters for ``n`` vectors of ``dim``.

    IVF-PQ: about ``sqrt(n) / 2`` lists (at least 39 training vectors each, FAISS's minimum),
    ``dim / 8`` sub-quantisers of 8 bits (fewer bits on tiny sets), 16 lists probed, and the
    ``4 k`` best candidates re-ranked exactly (``k_factor``).
    IVF-PQ trains on a seeded sample of at most ``max(65536, 64 * nlist)`` vectors.
    HNSW: 32 links per node, ``efConstruction`` 40, ``efSearch`` 128.
    """
    if kind == "ivfpq":
        nlist = max(1, min(2 ** round(math.log2(max(1.0, math.sqrt(n) / 2))), n // 39))
        m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        nbits = min(8, int(math.log2(max(2, n))))
        return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": min(nlist, 16), "k_factor": 4}
    if kind == "hnsw":
        return {"M": 32, "ef_construction": 40, "ef_search": 128}
    return {}


def new_faiss_index(kind: str, dim: int, train: np.ndarray, params: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    """An empty FAISS index of ``kind`` (inner product), trained on ``train`` where needed, and its parameters.

    ``ivfpq`` is an ``IndexRefineFlat`` over an ``IndexIVFPQ``: the compact PQ codes find
    candidates, the exact vectors (memory-mapped by :func:`read_faiss`, so they stay on disk
    until touched) re-rank them and give exact scores.
    """
    faiss = _faiss()
    params = dict(params or default_params(kind, len(train), dim))
    if kind == "flat":
        return faiss.IndexFlatIP(dim), params
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index, params
    if kind == "ivfpq":
        if len(train) < IVFPQ_MIN:
            raise FaceIndexError(f"an IVF-PQ index needs at least {IVFPQ_MIN} images to train on, got {len(train)}: use --kind flat")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # no warnings on small sets; the size rule above applies
        index.pq.cp.min_points_per_centroid = 1
        index.pq.cp.max_points_per_centroid = 128  # codebooks from 32k vectors: half FAISS's default, 2x faster
        most = max(TRAIN_MIN, TRAIN_PER_LIST * params["nlist"])
        if len(train) > most:
            train = train[np.sort(np.random.default_rng(0).choice(len(train), most, replace=False))]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        refine = faiss.IndexRefineFlat(index)
        set_search_params(refine, params)
        return refine, params
    raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS[1:])}")


def set_search_params(index: Any, params: dict[str, int]) -> None:
    """Apply the query-time parameters (``nprobe``, ``k_factor``, ``efSearch``) to a FAISS index."""
    base = _faiss().downcast_index(index.base_index) if hasattr(index, "base_index") else index
    if "k_factor" in params and hasattr(index, "k_factor"):
        index.k_factor = params["k_factor"]
    if "nprobe" in params and hasattr(base, "nprobe"):
        base.nprobe = params["nprobe"]
    if "ef_search" in params and hasattr(base, "hnsw"):
        base.hnsw.efSearch = params["ef_search"]


def read_faiss(path: Path, mmap: bool = True) -> Any:
    """Read a FAISS index, memory-mapped where this FAISS supports it.

    ``IO_FLAG_MMAP_IFC`` (FAISS >= 1.10) maps the vectors and codes of every kind used here
    without copying them, so a large index opens in a fraction of a second; older versions
    get ``IO_FLAG_MMAP``, then a plain read.
    """
    faiss = _faiss()
    flags = [getattr(faiss, "IO_FLAG_MMAP_IFC", None), getattr(faiss, "IO_FLAG_MMAP", None)] if mmap else []
    for flag in flags:
        if flag is not None:
            try:
                return faiss.read_index(str(path), flag)
            except RuntimeError:
                continue
    return faiss.read_index(str(path))


# -- image collection ------------------------------------------------------------------


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
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and is_image_path(p) and not any(s.startswith(".") for s in p.relative_to(root).parts)
        )
        return [SourceImage(p, _rel(p, root), p.parent.name if p.parent != root else None) for p in files], []
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
class _Embedded:
    records: list[ImageRecord]
    vectors: np.ndarray
    skipped: list[SkippedFile]
    duplicates: int
    computed: int
    cached: int


def _embed_source(
    encoder: Encoder,
    source: ImageSource,
    known: Callable[[list[str]], set[str]],
    cache: EmbeddingCache | NullCache,
    batch_size: int,
    workers: int | None,
    progress: bool,
) -> _Embedded:
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
        encoder, [FaceImage(Path(r.path), r.identity or "") for r in fresh], cache,
        batch_size=batch_size, workers=workers, progress=progress,
    )
    return _Embedded(
        records=[by_path[str(im.path)] for im in result.images],
        vectors=result.embeddings,
        skipped=skipped + result.skipped,
        duplicates=len(records) - len(fresh),
        computed=result.computed,
        cached=result.cached,
    )


# -- the index -------------------------------------------------------------------------


class FaceIndex:
    """A searchable collection of face images; build with :meth:`build`, open with :meth:`load`."""

    def __init__(self, index_dir: Path, manifest: Manifest, faiss_index: Any, mmap: bool = False) -> None:
        self.dir = Path(index_dir)
        self.manifest = manifest
        self._faiss_index = faiss_index
        self._mmap = mmap
        self._lock = threading.RLock()
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)
        set_search_params(self._faiss_index, manifest.params)

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
    ) -> tuple["FaceIndex", IndexUpdate]:
        """Embed every image of ``images`` with ``encoder`` and write a new index to ``index_dir``.

        ``cache`` defaults to the on-disk embedding cache (an interrupted build resumes).
        ``align``/``on_no_face``: the ``--align`` choice the encoder was created with, recorded so
        :meth:`load_encoder` recreates it (``None``: the model's own front end).
        """
        index_dir = _fresh_dir(index_dir, overwrite)
        cache = EmbeddingCache() if cache is None else cache
        emb = _embed_source(encoder, images, lambda shas: set(), cache, batch_size, workers, progress)
        index = cls._create(index_dir, EncoderId.of(encoder), emb.vectors, kind, flat_max, encoder.is_test_model, align, on_no_face)
        return index, index._commit(emb.records, emb.vectors, emb.skipped, emb.duplicates, emb.computed, emb.cached)

    @classmethod
    def build_from_shards(
        cls, shard_dir: str | Path, index_dir: str | Path, kind: Kind = "auto", *, flat_max: int = FLAT_MAX, overwrite: bool = False
    ) -> tuple["FaceIndex", IndexUpdate]:
        """A new index from the embedding shards written by :func:`clipface.scale.embed_with_ray`."""
        from .scale import read_shards

        shards = read_shards(shard_dir)
        index_dir = _fresh_dir(index_dir, overwrite)
        records, vectors, dups = _unique(shards.records, shards.vectors, set())
        index = cls._create(index_dir, shards.encoder_id, vectors, kind, flat_max, shards.is_test_model, shards.align, shards.on_no_face)
        return index, index._commit(records, vectors, shards.skipped, dups)

    @classmethod
    def _create(
        cls, index_dir: Path, eid: EncoderId, vectors: np.ndarray, kind: str, flat_max: int,
        is_test_model: bool, align: str | None, on_no_face: str,
    ) -> "FaceIndex":
        chosen = choose_kind(len(vectors), kind, flat_max)
        faiss_index, params = new_faiss_index(chosen, eid.dim, vectors)
        manifest = Manifest(
            model=eid.model, fingerprint=eid.fingerprint, preprocess_id=eid.preprocess_id, dim=eid.dim, kind=chosen,
            count=0, params=params, align=align, on_no_face=on_no_face, is_test_model=is_test_model,
        )
        for name in (META, SKIPPED):
            (index_dir / name).unlink(missing_ok=True)
        return cls(index_dir, manifest, faiss_index)

    @classmethod
    def load(cls, index_dir: str | Path, mmap: bool = True) -> "FaceIndex":
        """Open an index folder; ``mmap`` memory-maps the vectors so a large index starts fast."""
        index_dir = Path(index_dir)
        path = index_dir / MANIFEST
        if not path.is_file():
            raise FaceIndexError(f"{index_dir}: not an index folder (no {MANIFEST}); build one with `clipface index build`")
        try:
            manifest = Manifest(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise FaceIndexError(f"{path}: unreadable manifest ({exc})") from None
        if manifest.format != FORMAT:
            raise FaceIndexError(f"{path}: index format {manifest.format} is not supported (expected {FORMAT})")
        index = cls(index_dir, manifest, read_faiss(index_dir / VECTORS, mmap=mmap), mmap=mmap)
        n_rows = index._db().execute("SELECT COUNT(*) FROM images").fetchone()[0]
        if not index._faiss_index.ntotal == n_rows == manifest.count:
            raise FaceIndexError(
                f"{index_dir}: inconsistent index ({index._faiss_index.ntotal} vectors, {n_rows} metadata rows, "
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
    ) -> IndexUpdate:
        """Embed and append new images (files whose SHA-256 is already indexed are skipped)."""
        self.check_encoder(encoder)
        cache = EmbeddingCache() if cache is None else cache
        emb = _embed_source(encoder, images, self._known, cache, batch_size, workers, progress)
        return self._commit(emb.records, emb.vectors, emb.skipped, emb.duplicates, emb.computed, emb.cached)

    def add_shards(self, shard_dir: str | Path) -> IndexUpdate:
        """Append the embedding shards of :func:`clipface.scale.embed_with_ray` (same encoder required)."""
        from .scale import read_shards

        shards = read_shards(shard_dir)
        self._check_id(shards.encoder_id, f"shards in {shard_dir}")
        records, vectors, dups = _unique(shards.records, shards.vectors, self._known([r.sha256 for r in shards.records]))
        return self._commit(records, vectors, shards.skipped, dups)

    def _commit(
        self, records: list[ImageRecord], vectors: np.ndarray, skipped: list[SkippedFile], duplicates: int,
        computed: int = 0, cached: int = 0,
    ) -> IndexUpdate:
        """Append vectors and metadata, then write the FAISS file, metadata and manifest."""
        with self._lock:
            if self._mmap:  # a memory-mapped index is read-only: load it fully before appending
                self._faiss_index = read_faiss(self.dir / VECTORS, mmap=False)
                set_search_params(self._faiss_index, self.manifest.params)
                self._mmap = False
            start = int(self._faiss_index.ntotal)
            if len(records):
                self._faiss_index.add(np.ascontiguousarray(l2_normalize(vectors)))
            rows = [
                (start + i, r.path, r.relpath, r.identity, identity_key(r.identity) if r.identity else None, r.width, r.height, r.sha256)
                for i, r in enumerate(records)
            ]
            tmp = self.dir / (VECTORS + ".tmp")
            _faiss().write_index(self._faiss_index, str(tmp))
            db = self._db()
            with db:
                db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                os.replace(tmp, self.dir / VECTORS)
            self.manifest.count = int(self._faiss_index.ntotal)
            _write_json(self.dir / MANIFEST, asdict(self.manifest))
            previous = self.skipped()
            _write_json(self.dir / SKIPPED, previous + [s.to_dict() for s in skipped])
        return IndexUpdate(len(records), duplicates, skipped, computed, cached)

    # -- encoders ----------------------------------------------------------------------
    def check_encoder(self, encoder: Encoder) -> None:
        """Raise :class:`EncoderMismatchError` unless ``encoder`` has the index's weights and preparation."""
        self._check_id(EncoderId.of(encoder), "the encoder")

    def _check_id(self, eid: EncoderId, what: str) -> None:
        mine = self.manifest.encoder_id
        if (eid.fingerprint, eid.preprocess_id, eid.dim) != (mine.fingerprint, mine.preprocess_id, mine.dim):
            raise EncoderMismatchError(f"index {self.dir} was built with {mine.describe()}, but {what} is {eid.describe()}")

    def load_encoder(self, weights: str | Path | None = None, device: str = "cpu") -> Encoder:
        """Create the encoder the index was built with (same model and face front end), checked."""
        from .evaluate import RunOptions, load_encoder

        m = self.manifest
        opts = RunOptions(device=device, weights={m.model: str(weights)} if weights else {}, aligner=m.align, on_no_face=m.on_no_face)
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
            with self._lock:
                if hasattr(self._faiss_index, "hnsw"):
                    self._faiss_index.hnsw.efSearch = max(self.manifest.params.get("ef_search", 0), fetch)
                scores, ids = self._faiss_index.search(q, fetch)
            meta = self.images([int(i) for i in np.unique(ids) if i >= 0])
            out = []
            for row_scores, row_ids in zip(scores, ids):
                kept = [(meta[int(i)], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0 and int(i) in meta]
                if exclude is not None:
                    kept = [(im, s) for im, s in kept if not exclude(im)]
                out.append([SearchHit(**asdict(im), rank=r + 1, score=s) for r, (im, s) in enumerate(kept[:k])])
            if fetch >= self.count or all(len(hits) == k for hits in out):
                return out
            fetch = min(self.count, fetch * 4)

    def query_text(self, encoder: Encoder, text: str, k: int = 10, exclude: Exclude | None = None) -> list[SearchHit]:
        """Images best matching ``text`` (CLIP models only)."""
        self.check_encoder(encoder)
        if not encoder.has_text:
            raise QueryError(f"{encoder.name} has no text tower: text queries need a CLIP model (query with a photo instead)")
        if not text.strip():
            raise QueryError("empty text query")
        return self.search_vectors(encoder.encode_text([text]), k, exclude)[0]

    def query_image(self, encoder: Encoder, image: Image.Image, k: int = 10, exclude: Exclude | None = None) -> list[SearchHit]:
        """Images most similar to the face in ``image``, prepared by the encoder's own front end."""
        return self.search_vectors(self.embed_query_image(encoder, image), k, exclude)[0]

    def embed_query_image(self, encoder: Encoder, image: Image.Image) -> np.ndarray:
        """The ``(1, dim)`` embedding of a query photo; a photo without a face is a :class:`QueryError`."""
        self.check_encoder(encoder)
        try:
            prepared = encoder.prepare(image.convert("RGB"))
        except NoFaceError:
            raise QueryError(f"no face found in the query image ({encoder.name} needs a photo with a visible face)") from None
        except ImageError as exc:
            raise QueryError(f"unusable query image: {exc.reason}") from None
        return encoder.embed_prepared(np.stack([prepared]))

    # -- metadata ----------------------------------------------------------------------
    def images(self, ids: Iterable[int]) -> dict[int, IndexedImage]:
        """Metadata of the images with these ids (unknown ids are absent)."""
        ids = list(ids)
        out: dict[int, IndexedImage] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            sql = f"SELECT {_COLUMNS} FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({row[0]: _image(row) for row in self._db().execute(sql, chunk)})
        return out

    def image(self, image_id: int) -> IndexedImage | None:
        """Metadata of one image, or ``None``."""
        return self.images([image_id]).get(image_id)

    def images_of(self, identity: str) -> list[IndexedImage]:
        """Every image of a person (name matched with :func:`identity_key`)."""
        sql = f"SELECT {_COLUMNS} FROM images WHERE identity_key = ? ORDER BY id"
        return [_image(row) for row in self._db().execute(sql, (identity_key(identity),))]

    def n_identities(self) -> int:
        """Number of distinct known identities."""
        return int(self._db().execute("SELECT COUNT(DISTINCT identity_key) FROM images").fetchone()[0])

    def skipped(self) -> list[dict[str, str]]:
        """Files left out of the index so far, with reasons."""
        path = self.dir / SKIPPED
        return json.loads(path.read_text()) if path.is_file() else []

    def stats(self) -> dict[str, Any]:
        """Summary for people and the API."""
        m = self.manifest
        return {
            "model": m.model, "is_test_model": m.is_test_model, "fingerprint": m.fingerprint, "preprocess_id": m.preprocess_id,
            "dim": m.dim, "kind": m.kind, "params": m.params, "count": m.count, "identities": self.n_identities(),
            "skipped": len(self.skipped()),
        }

    def _known(self, shas: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            sql = f"SELECT sha256 FROM images WHERE sha256 IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self._db().execute(sql, chunk))
        return found

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.dir / META, timeout=60)
            self._local.conn = conn
        return conn

    def __repr__(self) -> str:
        return f"FaceIndex({str(self.dir)!r}, model={self.manifest.model!r}, kind={self.kind!r}, count={self.count})"


def _image(row: tuple[Any, ...]) -> IndexedImage:
    i, path, relpath, identity, width, height, sha = row
    return IndexedImage(path=path, relpath=relpath, identity=identity, width=width, height=height, sha256=sha, id=i)


def _unique(records: list[ImageRecord], vectors: np.ndarray, known: set[str]) -> tuple[list[ImageRecord], np.ndarray, int]:
    keep = []
    for i, r in enumerate(records):
        if r.sha256 not in known:
            known.add(r.sha256)
            keep.append(i)
    return [records[i] for i in keep], vectors[keep], len(records) - len(keep)


def _fresh_dir(index_dir: str | Path, overwrite: bool) -> Path:
    path = Path(index_dir)
    if (path / MANIFEST).exists() and not overwrite:
        raise FaceIndexError(f"{path} already holds an index: add images with `clipface index add`, or rebuild with --overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# -- evaluation ------------------------------------------------------------------------


@dataclass
class IdentificationResult:
    """Rank-1 identification of held-out probe photos against an index."""

    n_probes: int
    rank1: float
    topk: float
    k: int
    per_probe: list[dict[str, Any]]
    skipped: list[SkippedFile]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_probes": self.n_probes, "rank1": self.rank1, f"top{self.k}": self.topk, "k": self.k,
            "per_probe": self.per_probe, "skipped": [s.to_dict() for s in self.skipped],
        }


def evaluate_index_identification(
    index: FaceIndex | str | Path,
    probes: Sequence[FaceImage] | FaceDataset,
    encoder: Encoder | None = None,
    k: int = 10,
    cache: EmbeddingCache | NullCache | None = None,
    progress: bool = False,
) -> IdentificationResult:
    """Query each probe photo and score whether its rank-1 result is the same person.

    ``rank1`` is the share of usable probes whose best result has the probe's identity; ``topk``
    the share with that identity among the ``k`` best. A result that is the probe file itself
    (same SHA-256) is ignored, so a probe accidentally left in the index cannot match itself.
    Probes without a usable face are listed in ``skipped`` and not counted.
    """
    index = index if isinstance(index, FaceIndex) else FaceIndex.load(index)
    encoder = encoder or index.load_encoder()
    index.check_encoder(encoder)
    images = list(probes.images if isinstance(probes, FaceDataset) else probes)
    emb = embed_images(encoder, images, cache if cache is not None else NullCache(), progress=progress)
    rows: list[dict[str, Any]] = []
    for probe, vec in zip(emb.images, emb.embeddings):
        sha = file_sha256(probe.path)
        hits = index.search_vectors(vec, k, exclude=lambda im, sha=sha: im.sha256 == sha)[0]
        want = identity_key(probe.identity)
        top = hits[0] if hits else None
        rows.append({
            "probe": str(probe.path), "identity": probe.identity,
            "top_identity": top.identity if top else None, "top_path": top.path if top else None,
            "top_score": top.score if top else None,
            "correct": bool(top and top.identity and identity_key(top.identity) == want),
            "in_top_k": any(h.identity and identity_key(h.identity) == want for h in hits),
        })
    n = len(rows)
    return IdentificationResult(
        n_probes=n,
        rank1=sum(r["correct"] for r in rows) / n if n else float("nan"),
        topk=sum(r["in_top_k"] for r in rows) / n if n else float("nan"),
        k=k,
        per_probe=rows,
        skipped=emb.skipped,
    )
