"""The fused opt-out rule: two face models judge an image together, each score normalised against a cohort of faces.

Score-level fusion (Kittler et al. 1998, "On combining classifiers") of adaptive symmetric score
normalisation (AS-norm: Matějka et al. 2017, "Analysis of score normalization in multilingual
speaker recognition"; Sturim and Reynolds 2005, adaptive T-norm), with the face models' own
calibration (``benchmarks/opt_out_calibration.py``, recorded in the first model's registry entry):

* each model scores a face by its similarity ``s`` to the person's enrolment centroid (the
  normalised mean of the enrolment vectors: :meth:`~.facestore.FaceStore.person_scores`);
* ``s`` is normalised twice by a :class:`Cohort` (faces of people kept apart from both the
  calibration and its measure, one photo each): against the ``k`` cohort faces most like the
  centroid, ``(s - mean) / std``, and against the ``k`` most like the face itself; the two halves
  are averaged. A person or a face in a crowded part of face space (many look-alikes: on LFW the
  East Asian faces, whom the plain rule removed for each other) is held to its crowd;
* an image scores its best face by each model; the two models' scores are averaged (an image that
  one model finds no face in is scored by the other alone) and it is removed at ``threshold``;
* the thresholds are calibrated for people enrolled with 3 photos and with 8 (:meth:`FusedRule.for_photos`).

Chosen on LFW's calibrating people (``benchmarks/results/opt_out_calibration*.md``): at a leak of 0.4%
it removes 2.2% of other people's photos with 3 enrolment photos a person and 0.24% with 8, against
5.5% and 0.7% for the same fusion standardised by fixed impostor statistics. Measured on the other
people (``benchmarks/results/opt_out_faces*.md``): with 8 photos 1 of 286 photos leaked and 0.08% of
others removed; with 3, 2 of 386 and 1.08%.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from .facestore import BLOCK, PERSON_RULES, FaceStore

__all__ = ["FUSED", "OPT_OUT_RULES", "Cohort", "FusedCalibration", "FusedRule", "FusedScorer"]

#: The fused rule's name among the opt-out rules (``--opt-out-faces-rule fused``).
FUSED = "fused"
#: Every rule an opt-out by face can use: the per-store rules and the fused one.
OPT_OUT_RULES = (*PERSON_RULES, FUSED)
#: The bundled cohorts' folder in ``clipface.assets`` (``benchmarks/opt_out_cohort.py`` writes them).
COHORTS = "cohorts"


@dataclass(frozen=True)
class Cohort:
    """Unit face vectors of people no one is matched with, and how many of the nearest normalise a score."""

    vectors: np.ndarray
    k: int

    @classmethod
    def of(cls, vectors: np.ndarray, k: int) -> Cohort:
        """A cohort of ``vectors`` as it is stored (float16: half the bytes; rows normalised again in float32)."""
        v = np.asarray(vectors, np.float16).astype(np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        if not 1 <= k <= len(v):
            raise ValueError(f"a cohort of {len(v)} faces cannot give the {k} nearest")
        return cls(v, k)

    @classmethod
    def bundled(cls, model: str, k: int) -> Cohort:
        """The cohort shipped for face model ``model`` (``clipface/assets/cohorts/<model>.npy``)."""
        with resources.files("clipface.assets").joinpath(COHORTS, f"{model}.npy").open("rb") as f:
            return cls.of(np.load(f, allow_pickle=False), k)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def nearest_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each row of ``x``'s :attr:`k` highest similarities to the cohort (unit
        rows; block by block, so memory stays bounded by the block, not by ``len(x)``)."""
        x = np.asarray(x, np.float32).reshape(-1, self.dim)
        mean, std = np.zeros(len(x), np.float32), np.zeros(len(x), np.float32)
        n = len(self.vectors)
        for i in range(0, len(x), BLOCK // 16):
            sim = np.asarray(x[i : i + BLOCK // 16]) @ self.vectors.T
            top = np.partition(sim, n - self.k, axis=1)[:, n - self.k :] if self.k < n else sim
            mean[i : i + len(top)], std[i : i + len(top)] = top.mean(1), top.std(1)
        return mean, np.maximum(std, 1e-6)

    def normalise(self, raw: np.ndarray, centre: np.ndarray, face_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The scores ``raw`` of faces against the unit vector ``centre``, normalised by the centre's nearest cohort
        scores and by each face's own (``face_stats``: :meth:`nearest_stats` of the faces): :func:`as_norm`."""
        cm, cs = self.nearest_stats(centre)
        return as_norm(raw, (float(cm[0]), float(cs[0])), face_stats)


@dataclass(frozen=True)
class FusedCalibration:
    """The fused threshold for people enrolled with at least ``photos`` photos."""

    photos: int
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"photos": self.photos, "threshold": self.threshold}


@dataclass(frozen=True)
class FusedRule:
    """The calibrated fusion of a face model (``first``) with ``second`` (registry entry ``opt_out["fused"]``): the
    cohort size ``k``, one calibration per number of enrolment photos it was measured with (more photos, a better
    centroid, a higher threshold at the same leak)."""

    first: str
    second: str
    k: int
    calibrations: tuple[FusedCalibration, ...]
    source: str = ""

    @classmethod
    def recorded(cls, first: str, entry: Any) -> FusedRule | None:
        """The rule a registry entry's ``opt_out["fused"]`` records, or ``None``."""
        if not entry:
            return None
        cals = tuple(
            FusedCalibration(int(c["photos"]), float(c["threshold"]))
            for c in sorted(entry["calibrations"], key=lambda c: c["photos"])
        )
        return cls(first, entry["with"], int(entry["cohort_k"]), cals, entry.get("source", ""))

    def for_photos(self, n: int) -> FusedCalibration:
        """The calibration for a person enrolled with ``n`` photos: the one measured with the most photos not above
        ``n`` (the fewest measured for fewer: its lower threshold leaks less)."""
        fitting = [c for c in self.calibrations if c.photos <= n]
        return fitting[-1] if fitting else self.calibrations[0]

    def cohorts(self) -> tuple[Cohort, Cohort]:
        """The bundled cohorts of both face models."""
        return Cohort.bundled(self.first, self.k), Cohort.bundled(self.second, self.k)

    def to_dict(self) -> dict[str, Any]:
        return {"with": self.second, "cohort_k": self.k, "calibrations": [c.to_dict() for c in self.calibrations]}


def as_norm(
    raw: np.ndarray, centroid_stats: tuple[float, float], face_stats: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Symmetric normalisation of the scores ``raw`` of faces against one centroid: the mean of the score normalised
    by the centroid's nearest cohort scores and by each face's own."""
    (mc, sc), (mf, sf) = centroid_stats, face_stats
    return 0.5 * ((raw - mc) / sc + (raw - mf) / sf)


def centroid(refs: np.ndarray) -> np.ndarray:
    """The normalised mean of enrolment vectors (``(0, dim)`` for none)."""
    refs = np.asarray(refs, np.float32)
    if not len(refs):
        return refs[:0]
    c = refs.mean(0, keepdims=True)
    return c / max(float(np.linalg.norm(c)), 1e-12)


class FusedScorer:
    """The fused rule over one index's faces by both models (``stores``); each face's cohort statistics are
    computed once, here (one matrix product with each cohort, block by block)."""

    def __init__(
        self,
        rule: FusedRule,
        stores: tuple[FaceStore, FaceStore],
        n_images: int,
        cohorts: tuple[Cohort, Cohort] | None = None,
    ) -> None:
        self.rule, self.stores, self.n_images = rule, stores, n_images
        self.cohorts = rule.cohorts() if cohorts is None else cohorts
        for store, cohort in zip(stores, self.cohorts):
            if store.dim != cohort.dim:
                raise ValueError(f"the cohort has {cohort.dim}-d faces, the store {store.dim}-d ones")
        self._face_stats = [c.nearest_stats(s.vectors) for s, c in zip(stores, self.cohorts)]

    def image_scores(self, refs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Each image's fused score against one person's enrolment vectors by both models; ``-inf`` for an image
        without a face by either."""
        per_model = []
        for store, cohort, stats, r in zip(self.stores, self.cohorts, self._face_stats, refs):
            out = np.full(self.n_images, -np.inf, np.float32)
            c = centroid(r)
            if len(c) and store.count:
                norm = cohort.normalise(store.person_scores(c, "centroid"), c, stats)
                np.maximum.at(out, store.image_ids, norm.astype(np.float32))
            per_model.append(out)
        a, b = per_model
        a, b = np.where(np.isfinite(a), a, b), np.where(np.isfinite(b), b, a)
        return (a + b) / 2

    def removals(self, refs: tuple[np.ndarray, np.ndarray], shift: float = 0.0) -> np.ndarray:
        """Which images one person's enrolment (``refs``: by the first model, by the second) removes, at the
        calibrated threshold for their number of photos (moved by ``shift``, for a curve)."""
        cal = self.rule.for_photos(max(len(refs[0]), len(refs[1])))
        with np.errstate(invalid="ignore"):
            return self.image_scores(refs) >= cal.threshold + shift
