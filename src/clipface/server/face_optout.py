"""Opt out by face (``clipface serve --opt-out-faces DIR``): people removed from every answer by what they look like.

``DIR`` holds one sub-folder of photos per person who asked to be removed. At server start each
photo's face (the one the face model's front end chooses) is embedded with the index's face model
(its face vectors, :mod:`clipface.index.facestore`; an index built with a face recogniser as
its model and no face vectors uses its image vectors, one central face per image). An indexed
image is removed when any of its stored faces reaches the model's LFW threshold at FAR 1e-3
(cosine, recorded in the registry) with any enrolment photo of any enrolled person: an exact
matrix product over every stored face, done once, so an image is removed whether or not it
carries an identity label and whoever else is in it. The set of removed image ids goes into the
same exclusion every route applies (``/api/...``, thumbnails, ``/knn-service``, ``/metadata``).

``/api/stats`` reports, per enrolled person (numbered in the folders' sorted order; no name or
path is repeated), how many photos were enrolled and how many indexed images the enrolment
removes. Folder names and unusable photos are logged for the operator only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import is_image_path, load_image
from ..errors import ClipfaceError, ImageError, UsageError
from ..index.facestore import FaceStore
from ..index.records import IndexedImage
from ..index.store import FaceIndex
from ..models.base import Encoder
from ..models.registry import get_spec

__all__ = ["FaceOptOut", "person_folders"]

log = logging.getLogger("clipface.server")


def person_folders(folder: Path) -> list[Path]:
    """The person sub-folders of an opt-out folder (sorted), or a :class:`UsageError` naming the flag."""
    if not folder.is_dir():
        raise UsageError("opt_out_faces", str(folder), "no such folder (one sub-folder of photos per person)")
    people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise UsageError("opt_out_faces", str(folder), "holds no sub-folder (one sub-folder of photos per person)")
    return people


class FaceOptOut:
    """The images of ``index`` showing a person enrolled in ``folder`` (see the module docstring)."""

    def __init__(
        self,
        index: FaceIndex,
        folder: str | Path,
        encoder: Encoder | None = None,
        threshold: float | None = None,
        device: str = "cpu",
    ) -> None:
        people = person_folders(Path(folder))
        store, face_encoder = self._faces_of(index, encoder, device)
        spec = get_spec(face_encoder.name)
        if threshold is None:
            if spec.verify_threshold is None:
                raise ClipfaceError(f"{face_encoder.name} has no recorded LFW threshold: it cannot judge faces")
            threshold = float(spec.verify_threshold)
        self.threshold = threshold
        self.model = face_encoder.name
        self.removed: set[int] = set()
        self.people: list[dict[str, Any]] = []
        self.references: list[np.ndarray] = []  # each person's enrolment vectors
        self.store = store
        for number, person in enumerate(people, start=1):
            refs, photos = self._enrol(face_encoder, person)
            self.references.append(refs)
            removes: set[int] = set()
            if len(refs):
                matched = store.matching(refs, threshold).any(axis=1)
                removes = {int(i) for i in store.image_ids[matched]}
            else:
                log.warning("face opt-out %s: no photo with a usable face; this person removes nothing", person.name)
            self.removed |= removes
            self.people.append({"person": number, "photos": photos, "enrolled": len(refs), "removes": len(removes)})
            log.info(
                "face opt-out %d (%s): %d photos enrolled, %d images removed",
                number,
                person.name,
                len(refs),
                len(removes),
            )

    @staticmethod
    def _faces_of(index: FaceIndex, encoder: Encoder | None, device: str) -> tuple[FaceStore, Encoder]:
        """The index's faces and the model that made them (the image vectors of a face-recogniser index)."""
        if index.faces is not None:
            return index.faces.store, index.faces.load_encoder(device)
        m = index.manifest
        if get_spec(m.model).verify_threshold is None:
            raise UsageError(
                "opt_out_faces",
                str(index.dir),
                f"the index keeps no face vectors ({m.model} is not a face recogniser): rebuild it with "
                "`clipface index build ... --face-model dlib`",
            )
        encoder = encoder if encoder is not None else index.load_encoder(device=device)
        vectors = index.image_vectors()
        return FaceStore(index.dir, m.dim, vectors, np.arange(len(vectors), dtype=np.int64)), encoder

    @staticmethod
    def _enrol(encoder: Encoder, person: Path) -> tuple[np.ndarray, int]:
        photos = sorted(p for p in person.rglob("*") if p.is_file() and is_image_path(p))
        crops = []
        for p in photos:
            try:
                crops.append(encoder.prepare(load_image(p)))
            except ImageError as exc:
                log.warning("face opt-out %s: %s skipped (%s)", person.name, p.name, exc.reason)
        if not crops:
            return np.zeros((0, encoder.dim), np.float32), len(photos)
        return encoder.embed_prepared(np.stack(crops)), len(photos)

    def blocks(self, image: IndexedImage) -> bool:
        """Whether ``image`` shows an enrolled person."""
        return image.id in self.removed

    def stats(self) -> dict[str, Any]:
        return {"model": self.model, "threshold": self.threshold, "removed": len(self.removed), "people": self.people}
