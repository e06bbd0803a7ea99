"""Opt out by face (``clipface serve --opt-out-faces DIR``): people removed from every answer by what they look like.

``DIR`` holds one sub-folder of photos per person who asked to be removed. Each photo's face (the
one the face model's front end chooses) is embedded with the index's face model, mirror-summed as
its face vectors are (:mod:`clipface.index.facestore`; an index built with a face recogniser as its
model and no face vectors uses its image vectors, one central face per image, where those are
mirror-summed). An indexed image is removed when one of its stored faces scores at least the
threshold against an enrolled person by the rule (:data:`~clipface.index.facestore.PERSON_RULES`;
default: the face model's calibrated rule and threshold, :func:`decision_rule`), or, in an index that
keeps a second face model's vectors too (``index build --second-face-model``), by the two models'
fused scores (:mod:`clipface.index.fusion`, the default where it is calibrated): exact matrix
products over every stored face, so an image is removed whether or not it carries an identity label
and whoever else is in it. The set of removed image ids goes into the same exclusion every route
applies (``/api/...``, thumbnails, ``/knn-service``, ``/metadata``). The folder is watched
(:meth:`FaceOptOut.refresh`).

``/api/stats`` reports, per enrolled person (numbered in the folders' sorted order; no name or
path is repeated), how many photos were enrolled and how many indexed images the enrolment
removes. Folder names and unusable photos are logged for the operator only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import is_image_path, load_image
from ..errors import ClipfaceError, ImageError, UsageError
from ..index.facestore import FLIP_SUM, FaceStore
from ..index.fusion import FUSED, OPT_OUT_RULES, FusedRule, FusedScorer
from ..index.records import IndexedImage
from ..index.store import FaceIndex
from ..models.base import Encoder
from ..models.registry import get_spec

__all__ = ["FaceOptOut", "person_folders"]

log = logging.getLogger("clipface.server")


def decision_rule(spec: Any, rule: str | None, threshold: float | None) -> tuple[str, float]:
    """The rule and threshold that remove a face: as given, else the face model's calibrated ones (``opt_out`` in its
    registry entry, from ``benchmarks/opt_out_calibration.py``), else the best match at its LFW pair threshold."""
    recorded = spec.extra.get("opt_out") or {}
    rule = rule or recorded.get("rule", "any")
    if rule == FUSED:
        raise UsageError("opt_out_faces_rule", rule, "needs an index with a second face model (--second-face-model)")
    if threshold is None:
        threshold = recorded.get("threshold") if rule == recorded.get("rule") else spec.verify_threshold
    if threshold is None:
        raise ClipfaceError(f"{spec.name} has no recorded LFW threshold: it cannot judge faces")
    return rule, float(threshold)


def person_folders(folder: Path) -> list[Path]:
    """The person sub-folders of an opt-out folder (sorted), or a :class:`UsageError` naming the flag."""
    if not folder.is_dir():
        raise UsageError("opt_out_faces", str(folder), "no such folder (one sub-folder of photos per person)")
    people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise UsageError("opt_out_faces", str(folder), "holds no sub-folder (one sub-folder of photos per person)")
    return people


class FaceOptOut:
    """The images of ``index`` showing a person enrolled in ``folder`` (see the module docstring).

    The folder is watched: :meth:`refresh` (called by every route, at most once per
    ``interval`` seconds) re-enrols the people whose photos changed, so that a person added to
    or removed from the folder takes effect without a restart. A change that leaves nothing
    usable (the folder gone or emptied, a person's every photo unreadable) keeps the last good
    enrolment and says why (:attr:`error`, the log), so a bad copy never silently lets anyone back.
    """

    def __init__(
        self,
        index: FaceIndex,
        folder: str | Path,
        encoder: Encoder | None = None,
        threshold: float | None = None,
        device: str = "cpu",
        interval: float = 1.0,
        rule: str | None = None,
    ) -> None:
        if rule is not None and rule not in OPT_OUT_RULES:
            raise UsageError("opt_out_faces_rule", rule, f"choose one of {', '.join(OPT_OUT_RULES)}")
        self.folder = Path(folder)
        person_folders(self.folder)  # a wrong folder is refused before any model loads
        self.store, self._encoder = self._faces_of(index, encoder, device)
        self.n_images = index.count
        #: The fused rule and the second model's faces and encoder, where the index has them and they are chosen.
        self.fused, self._second = self._fusion(index, get_spec(self._encoder.name), rule, threshold, device)
        self._scorer: FusedScorer | None = None
        if self.fused is not None and self._second is not None:  # each indexed face's cohort statistics, once
            self._scorer = FusedScorer(self.fused, (self.store, self._second[0]), self.n_images)
        if self.fused is not None:  # the threshold of the fewest photos calibrated (per person: _removals)
            self.rule, self.threshold = FUSED, self.fused.calibrations[0].threshold
        else:
            self.rule, self.threshold = decision_rule(get_spec(self._encoder.name), rule, threshold)
        self.model = self._encoder.name
        self.interval = interval
        #: Why the last change of the folder was not taken (``None``: the enrolment in use is the folder's).
        self.error: str | None = None
        #: Bumped at every enrolment that changed something.
        self.version = 0
        self.removed: set[int] = set()
        self.people: list[dict[str, Any]] = []
        self._enrolled: dict[str, _Person] = {}  # folder name -> its photos' signature, vectors and removals
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._load(self._scan())

    # -- watching the folder ---------------------------------------------------------------
    def _scan(self) -> dict[str, tuple[tuple[str, int, int], ...]]:
        """Each person folder's photos as (relative path, size, modification time), or an error for an unusable tree."""
        people = person_folders(self.folder)
        out = {}
        for person in people:
            photos = sorted(p for p in person.rglob("*") if p.is_file() and is_image_path(p))
            out[person.name] = tuple((str(p.relative_to(person)), *_stamp(p)) for p in photos)
        return out

    def refresh(self) -> None:
        """Take a changed folder into account (checked at most every :attr:`interval` seconds)."""
        if time.monotonic() - self._checked < self.interval:
            return
        with self._lock:
            if time.monotonic() - self._checked < self.interval:
                return
            try:
                scanned = self._scan()
                if {n: p.signature for n, p in self._enrolled.items()} != scanned:
                    self._load(scanned)
                else:
                    self._settle()
            except (OSError, UsageError) as exc:
                self._refuse(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
            finally:
                self._checked = time.monotonic()

    def _settle(self) -> None:
        """The folder as enrolled: the error is what its people's unusable photos say, if anything."""
        kept = [f"{name}: no usable face in the changed photos" for name, p in self._enrolled.items() if p.kept]
        if kept:
            self._refuse("; ".join(kept) + "; keeping their last good photos")
        else:
            self.error = None

    def _refuse(self, reason: str) -> None:
        if reason != self.error:  # once per problem, not once per request
            log.error("face opt-out folder %s: %s; keeping the last good enrolment", self.folder, reason)
        self.error = reason

    def _load(self, scanned: dict[str, tuple[tuple[str, int, int], ...]]) -> None:
        """Enrol the people whose photos changed (others keep their vectors), then swap in the new removals."""
        enrolled: dict[str, _Person] = {}
        for name, signature in scanned.items():
            before = self._enrolled.get(name)
            if before is not None and before.signature == signature:
                enrolled[name] = before
                continue
            encoders = [self._encoder] + ([self._second[1]] if self._second else [])
            vectors, photos = self._enrol(encoders, self.folder / name)
            refs, second = vectors[0], (vectors[1] if self._second else vectors[0][:0])
            kept = False
            if not len(refs) and not len(second) and before is not None and len(before.refs):
                refs, second, kept = before.refs, before.second, True  # every new photo unusable: the last good ones
            elif not len(refs) and not len(second):
                log.warning("face opt-out %s: no photo with a usable face; this person removes nothing", name)
            elif self.fused is not None and max(len(refs), len(second)) < self.fused.calibrations[-1].photos:
                log.warning(
                    "face opt-out %s: %d usable photos; the fused rule meets its goals with %d or more (with fewer "
                    "it removes more of other people's photos: benchmarks/results/opt_out_faces*.md)",
                    name,
                    max(len(refs), len(second)),
                    self.fused.calibrations[-1].photos,
                )
            enrolled[name] = _Person(signature, refs, photos, self._removals(refs, second), kept, second)
        removed = set().union(*(p.removes for p in enrolled.values())) if enrolled else set()
        people = [
            {"person": number, "photos": p.photos, "enrolled": len(p.refs), "removes": len(p.removes)}
            for number, p in enumerate(enrolled.values(), start=1)
        ]
        self._enrolled, self.removed, self.people = enrolled, removed, people  # each swapped whole
        self.version += 1
        self._settle()
        for number, (name, p) in enumerate(enrolled.items(), start=1):
            log.info(
                "face opt-out %d (%s): %d photos enrolled, %d images removed", number, name, len(p.refs), len(p.removes)
            )

    def _removals(self, refs: np.ndarray, second: np.ndarray | None, threshold: float | None = None) -> frozenset[int]:
        """The images with a face whose score against one person's enrolment (by the face model, and by the second
        for the fused rule) reaches the threshold (``threshold``: another one of the same rule)."""
        threshold = self.threshold if threshold is None else threshold
        if self._scorer is not None:  # a curve moves every person's threshold by the same shift
            pair = (refs, refs[:0] if second is None else second)
            return frozenset(int(i) for i in np.flatnonzero(self._scorer.removals(pair, threshold - self.threshold)))
        if not len(refs):
            return frozenset()
        matched = self.store.person_scores(refs, self.rule) >= threshold
        return frozenset(int(i) for i in self.store.image_ids[matched])

    @staticmethod
    def _fusion(
        index: FaceIndex, spec: Any, rule: str | None, threshold: float | None, device: str
    ) -> tuple[FusedRule | None, tuple[FaceStore, Encoder] | None]:
        """The fused rule where the index keeps the faces of the second model it is calibrated with and no other
        rule is asked for (or it is asked for: then a missing second model is one line)."""
        recorded = FusedRule.recorded(spec.name, (spec.extra.get("opt_out") or {}).get(FUSED))
        second = index.second_faces
        if rule not in (None, FUSED):
            return None, None
        usable = recorded is not None and second is not None and second.model.model == recorded.second
        if not usable:
            if rule == FUSED:
                needs = f"faces by {recorded.second}" if recorded is not None else "a calibrated second face model"
                raise UsageError(
                    "opt_out_faces_rule",
                    rule,
                    f"{spec.name}'s fused rule needs an index that keeps {needs} (--second-face-model)",
                )
            if recorded is not None:  # the better default is one rebuild away: say so once, at start
                log.info(
                    "face opt-out: %s's single-model rule; an index built with --second-face-model %s is served with "
                    "the fused rule, which removes fewer other people's photos at the same leak "
                    "(benchmarks/results/opt_out_calibration.md)",
                    spec.name,
                    recorded.second,
                )
            return None, None
        assert recorded is not None and second is not None
        if threshold is not None:
            raise UsageError(
                "opt_out_faces_threshold",
                threshold,
                "the fused rule's thresholds are calibrated, not cosines: set --opt-out-faces-rule to another rule",
            )
        if not second.model.mirror_summed:
            raise UsageError("opt_out_faces", str(index.dir), "the second face model's vectors are single crops")
        return recorded, (second.store, second.load_encoder(device))

    def removed_at(self, threshold: float) -> set[int]:
        """The images the enrolment in use would remove at another ``threshold`` of the same rule (a curve's point)."""
        return set().union(*(self._removals(p.refs, p.second, threshold) for p in self._enrolled.values()))

    @property
    def references(self) -> list[np.ndarray]:
        """Each enrolled person's enrolment vectors, in folder order."""
        return [p.refs for p in self._enrolled.values()]

    @staticmethod
    def _faces_of(index: FaceIndex, encoder: Encoder | None, device: str) -> tuple[FaceStore, Encoder]:
        """The index's faces and the model that made them (the image vectors of a face-recogniser index)."""
        m = index.manifest
        rebuild = "rebuild it with `clipface index build ... --face-model dlib`"
        if index.faces is not None:
            if not index.faces.model.mirror_summed:
                raise UsageError(
                    "opt_out_faces",
                    str(index.dir),
                    "the index's face vectors are single crops, made before they were mirror-summed as LFW "
                    f"verification makes them, so the face model's threshold does not hold for them: {rebuild}",
                )
            return index.faces.store, index.faces.load_encoder(device)
        if get_spec(m.model).verify_threshold is None:
            raise UsageError(
                "opt_out_faces",
                str(index.dir),
                f"the index keeps no face vectors ({m.model} is not a face recogniser): {rebuild}",
            )
        if not m.preprocess_id.endswith(FLIP_SUM):
            raise UsageError(
                "opt_out_faces",
                str(index.dir),
                f"the index keeps no face vectors, and its {m.model} image vectors are single crops, not "
                f"mirror-summed as the face model's LFW threshold assumes: {rebuild}",
            )
        encoder = encoder if encoder is not None else index.load_encoder(device=device)
        vectors = index.image_vectors()
        return FaceStore(index.dir, m.dim, vectors, np.arange(len(vectors), dtype=np.int64)), encoder

    @staticmethod
    def _enrol(encoders: list[Encoder], person: Path) -> tuple[list[np.ndarray], int]:
        """Each encoder's vectors of a person's photos (each photo read once; a face one model cannot use is left
        out of that model's vectors only), and how many photos there are."""
        photos = sorted(p for p in person.rglob("*") if p.is_file() and is_image_path(p))
        crops: list[list[np.ndarray]] = [[] for _ in encoders]
        for p in photos:
            try:
                image = load_image(p)
            except ImageError as exc:
                log.warning("face opt-out %s: %s skipped (%s)", person.name, p.name, exc.reason)
                continue
            for encoder, kept in zip(encoders, crops):
                try:
                    kept.append(encoder.prepare(image))
                except ImageError as exc:
                    log.warning("face opt-out %s: %s skipped by %s (%s)", person.name, p.name, encoder.name, exc.reason)
        out = [
            e.embed_prepared(np.stack(c)) if c else np.zeros((0, e.dim), np.float32) for e, c in zip(encoders, crops)
        ]
        return out, len(photos)

    def blocks(self, image: IndexedImage) -> bool:
        """Whether ``image`` shows an enrolled person."""
        return image.id in self.removed

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "rule": self.rule,
            "threshold": self.threshold,
            "fused": self.fused.to_dict() if self.fused is not None else None,
            "removed": len(self.removed),
            "people": self.people,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Person:
    """One enrolled person: the photos' signature, their face vectors, how many photos, the images removed."""

    signature: tuple[tuple[str, int, int], ...]
    refs: np.ndarray
    photos: int
    removes: frozenset[int]
    kept: bool = False  # the changed photos were unusable: these are the last good ones
    second: np.ndarray | None = None  # the second face model's vectors (the fused rule)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns
