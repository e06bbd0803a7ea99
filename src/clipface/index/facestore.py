"""An index's face vectors: every face (or the central one) of each image, by a face recogniser.

Kept beside the image vectors when an index is built with a face model (``clipface index build
--face-model dlib [--faces all|central]``):

* ``faces.f32``: row ``j`` is face ``j``'s unit vector (``dim`` float32 values, no header), written
  like ``vectors.f32`` (rows beyond the committed count are left over from an interrupted write
  and overwritten by the next one), memory-mapped when opened;
* the ``faces`` table of ``meta.sqlite``: face id, image id, box (x0, y0, x1, y1 in source pixels)
  and detector score, written in the same transaction as the image rows;
* ``manifest.json``'s ``faces``: the face model's name, fingerprint, preparation and dimension
  (a different model is refused), the mode and the committed face count.

Index folders without faces (every folder written before this) load as before, with no face
store. Face search is exact (a matrix product over the memory-mapped faces); an image's score
is its best face's, and its answer carries that face's box.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..embed.faces import Faces
from .meta import MetaDB
from .records import EncoderId, Exclude, FaceIndexError, ImageRecord, SearchHit
from .rows import append_rows, read_rows

__all__ = ["FACES", "SECOND_FACES", "FaceModel", "FaceStore", "face_rows"]

FACES = "faces.f32"
#: The second face model's vectors (``index build --second-face-model``), kept as the first's, in the metadata's
#: ``second_faces`` table.
SECOND_FACES = "second_faces.f32"
#: Each face store's vector file, by its metadata table (:data:`~clipface.index.meta.FACE_TABLES`).
FILES = {"faces": FACES, "second_faces": SECOND_FACES}
#: The end of a ``preprocess_id`` whose vectors add the mirrored crop's (:attr:`~clipface.models.base.Encoder.flip`).
FLIP_SUM = "|flipsum"
#: How one person's enrolment vectors score a face: the best similarity, the second best (two photos must agree),
#: the mean, or the similarity to their normalised mean (``benchmarks/opt_out_calibration.py`` compares them).
PERSON_RULES = ("any", "second", "mean", "centroid")
#: Face similarities computed at once (rows of the face matrix per block).
BLOCK = 65_536


@dataclass
class FaceModel:
    """The manifest's ``faces`` entry: which face recogniser made the face vectors, how, and how many there are."""

    model: str
    fingerprint: str
    preprocess_id: str
    dim: int
    mode: str = "central"
    count: int = 0

    @property
    def encoder_id(self) -> EncoderId:
        return EncoderId(self.model, self.fingerprint, self.preprocess_id, self.dim)

    @property
    def mirror_summed(self) -> bool:
        """Whether each face vector adds the mirrored crop's, as LFW verification (and its threshold) does."""
        return self.preprocess_id.endswith(FLIP_SUM)

    @classmethod
    def of(cls, eid: EncoderId, mode: str) -> FaceModel:
        return cls(eid.model, eid.fingerprint, eid.preprocess_id, eid.dim, mode)

    @classmethod
    def read(cls, entry: Any, where: Path) -> FaceModel | None:
        if entry is None:
            return None
        try:
            return cls(**entry)
        except TypeError as exc:
            raise FaceIndexError(f"{where}: unreadable faces entry in the manifest ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaceStore:
    """The face vectors of one index folder and the image each face belongs to (``table``: the face model's
    ``faces`` or the second face model's ``second_faces``)."""

    def __init__(
        self, folder: Path, dim: int, vectors: np.ndarray, image_ids: np.ndarray, table: str = "faces"
    ) -> None:
        self.dir, self.dim, self.table = Path(folder), dim, table
        self.vectors = vectors
        self.image_ids = image_ids

    @property
    def count(self) -> int:
        return len(self.vectors)

    @classmethod
    def create(cls, folder: Path, dim: int, table: str = "faces") -> FaceStore:
        (Path(folder) / FILES[table]).unlink(missing_ok=True)
        return cls(folder, dim, np.zeros((0, dim), np.float32), np.zeros(0, np.int64), table)

    @classmethod
    def open(cls, folder: Path, meta: MetaDB, model: FaceModel, mmap: bool = True, table: str = "faces") -> FaceStore:
        """The committed faces (checked against the manifest's count and the metadata rows)."""
        count, dim = model.count, model.dim
        vectors = read_rows(Path(folder) / FILES[table], count, dim, mmap, "face")
        image_ids = np.asarray(meta.face_images(table)[:count], np.int64)
        if len(image_ids) != count:
            raise FaceIndexError(
                f"{folder}: inconsistent index ({count} faces in the manifest, {len(image_ids)} {table} rows): "
                "rebuild it"
            )
        return cls(folder, dim, vectors, image_ids, table)

    def append(self, new: np.ndarray, image_ids: Sequence[int]) -> None:
        """Write ``new`` rows after the committed ones (the manifest's face count commits them)."""
        new = np.ascontiguousarray(new, dtype=np.float32).reshape(-1, self.dim)
        self.vectors = append_rows(self.dir / FILES[self.table], self.count, new)
        self.image_ids = np.concatenate([self.image_ids, np.asarray(image_ids, np.int64)])

    # -- matching ------------------------------------------------------------------------------
    def best(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every face's similarity to one unit query vector, and the face ids best first."""
        scores = (
            np.concatenate([np.asarray(self.vectors[i : i + BLOCK]) @ query for i in range(0, self.count, BLOCK)])
            if self.count
            else np.zeros(0, np.float32)
        )
        return scores, np.argsort(-scores, kind="stable")

    def matching(self, references: np.ndarray, threshold: float) -> np.ndarray:
        """For each face, whether it reaches ``threshold`` (cosine) with any of ``references`` (rows: unit vectors),
        as a ``(faces, references)`` boolean matrix (exact, block by block)."""
        refs = np.asarray(references, np.float32).reshape(-1, self.dim)
        out = np.zeros((self.count, len(refs)), bool)
        for i in range(0, self.count, BLOCK):
            out[i : i + BLOCK] = (np.asarray(self.vectors[i : i + BLOCK]) @ refs.T) >= threshold
        return out

    def person_scores(self, references: np.ndarray, rule: str = "any") -> np.ndarray:
        """Each face's score against one person's enrolment vectors (rows: unit vectors) by ``rule``
        (:data:`PERSON_RULES`), exact, block by block."""
        refs = np.asarray(references, np.float32).reshape(-1, self.dim)
        if rule not in PERSON_RULES:
            raise ValueError(f"unknown rule {rule!r}: choose one of {', '.join(PERSON_RULES)}")
        if rule == "centroid":
            centre = refs.mean(0, keepdims=True)
            refs = centre / max(float(np.linalg.norm(centre)), 1e-12)
        out = np.zeros(self.count, np.float32)
        for i in range(0, self.count, BLOCK):
            sim = np.asarray(self.vectors[i : i + BLOCK]) @ refs.T
            if rule == "second" and refs.shape[0] > 1:
                out[i : i + BLOCK] = np.partition(sim, -2, axis=1)[:, -2]
            elif rule == "mean":
                out[i : i + BLOCK] = sim.mean(1)
            else:
                out[i : i + BLOCK] = sim.max(1)
        return out

    def median_matching(self, references: np.ndarray, threshold: float) -> np.ndarray:
        """For each face, whether its median similarity to ``references`` reaches ``threshold`` (the engine audit's
        rule: at least half of a person's photos match)."""
        refs = np.asarray(references, np.float32).reshape(-1, self.dim)
        out = np.zeros(self.count, bool)
        if len(refs):
            for i in range(0, self.count, BLOCK):
                out[i : i + BLOCK] = np.median(np.asarray(self.vectors[i : i + BLOCK]) @ refs.T, axis=1) >= threshold
        return out

    def first_faces(self, image_ids: Iterable[int]) -> np.ndarray:
        """The first stored face (the chosen one) of each of these images that has one."""
        wanted = set(int(i) for i in image_ids)
        seen: set[int] = set()
        rows = []
        for j, owner in enumerate(self.image_ids.tolist()):
            if owner in wanted and owner not in seen:
                seen.add(owner)
                rows.append(j)
        return np.asarray(self.vectors[rows], np.float32) if rows else np.zeros((0, self.dim), np.float32)


def face_rows(
    start_face: int, start_image: int, records: Sequence[ImageRecord], faces: dict[str, Faces], dim: int
) -> tuple[list[tuple[int, int, float, float, float, float, float]], np.ndarray, list[int]]:
    """Metadata rows, vectors and image ids of the faces of ``records`` (image ids from ``start_image``)."""
    rows, vecs, owners = [], [], []
    for i, r in enumerate(records):
        f = faces.get(r.sha256)
        if f is None:
            continue
        for b, s, v in zip(f.boxes, f.scores, f.vectors):
            rows.append((start_face + len(rows), start_image + i, *map(float, b), float(s)))
            vecs.append(v)
            owners.append(start_image + i)
    return rows, (np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)), owners


def search_faces(
    store: FaceStore,
    meta: MetaDB,
    images: Any,
    query: np.ndarray,
    k: int,
    exclude: Exclude | None,
) -> list[SearchHit]:
    """The ``k`` best images for one query face: each image scored by its best face, with that face's box."""
    scores, order = store.best(np.asarray(query, np.float32).reshape(-1))
    hits: list[SearchHit] = []
    seen: set[int] = set()
    step = max(64, 4 * k)
    for at in range(0, len(order), step):
        chunk = order[at : at + step]
        owners = [int(store.image_ids[j]) for j in chunk]
        found = images([i for i in set(owners) if i not in seen])
        boxes = meta.face_boxes(int(j) for j in chunk)
        for j, owner in zip(chunk, owners):
            if owner in seen or owner not in found:
                continue
            seen.add(owner)
            im = found[owner]
            if exclude is not None and exclude(im):
                continue
            hits.append(SearchHit(**asdict(im), rank=len(hits) + 1, score=float(scores[j]), box=boxes.get(int(j))))
            if len(hits) == k:
                return hits
    return hits


def owners_of(store: FaceStore, matched: np.ndarray) -> Iterable[int]:
    """Image ids of the faces where ``matched`` (a boolean vector over faces) is true."""
    return {int(i) for i in store.image_ids[np.asarray(matched, bool)]}
