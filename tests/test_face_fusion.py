"""The fused opt-out rule (:mod:`clipface.index.fusion`) against a plain-Python oracle, its direction, its cohorts,
and how it is chosen."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.index.facestore import FaceStore
from clipface.index.fusion import Cohort, FusedCalibration, FusedRule, FusedScorer
from clipface.models.registry import get_spec

RESULTS = Path(__file__).parents[1] / "benchmarks/results"


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _unit_list(v: list[float]) -> list[float]:
    n = math.sqrt(_dot(v, v))
    return [x / n for x in v]


def _nearest(v: list[float], cohort: list[list[float]], k: int) -> tuple[float, float]:
    top = sorted((_dot(v, c) for c in cohort), reverse=True)[:k]
    return statistics.fmean(top), max(statistics.pstdev(top), 1e-6)


def oracle(
    threshold: float,
    faces: tuple[list[tuple[int, list[float]]], list[tuple[int, list[float]]]],
    refs: tuple[list[list[float]], list[list[float]]],
    cohorts: tuple[list[list[float]], list[list[float]]],
    k: int,
    n_images: int,
) -> tuple[list[bool], float]:
    """Written from the rule's definition (Matějka et al. 2017's symmetric normalisation, Kittler et al. 1998's
    averaging): per model, each face's centroid similarity normalised by the centroid's and by the face's ``k``
    nearest cohort similarities, an image's best face; the two models averaged (one alone where the other has no
    face); removed at the threshold. Also how close any image came to it."""
    out, margin = [], math.inf
    for image in range(n_images):
        best: list[float | None] = []
        for m in (0, 1):
            if not refs[m]:
                best.append(None)
                continue
            c = _unit_list([sum(col) / len(refs[m]) for col in zip(*refs[m])])
            mc, sc = _nearest(c, cohorts[m], k)
            scores = []
            for owner, v in faces[m]:
                if owner == image:
                    mf, sf = _nearest(v, cohorts[m], k)
                    s = _dot(v, c)
                    scores.append(0.5 * ((s - mc) / sc + (s - mf) / sf))
            best.append(max(scores) if scores else None)
        known = [x for x in best if x is not None]
        fused = sum(known) / len(known) if known else None
        out.append(fused is not None and fused >= threshold)
        if fused is not None:
            margin = min(margin, abs(fused - threshold))
    return out, margin


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rule(threshold: float, k: int) -> FusedRule:
    return FusedRule("a", "b", k, (FusedCalibration(1, threshold),))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.integers(0, 25), st.integers(0, 25), st.integers(1, 4), st.integers(0, 2**31))
def test_fused_removals_follow_the_definition(n_images: int, n1: int, n2: int, n_refs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 8))
    cohorts = (Cohort.of(_unit(rng, 12, 6), k), Cohort.of(_unit(rng, 9, 4), k))
    threshold = float(rng.uniform(-2, 3))
    owners = (rng.integers(0, n_images, n1), rng.integers(0, n_images, n2))  # images with 0, 1 or many faces
    vecs = (_unit(rng, n1, 6), _unit(rng, n2, 4))
    refs = (_unit(rng, n_refs, 6), _unit(rng, int(rng.integers(0, 3)), 4))  # the second model may see no face
    stores = (FaceStore(Path("."), 6, vecs[0], owners[0]), FaceStore(Path("."), 4, vecs[1], owners[1]))
    got = FusedScorer(_rule(threshold, k), stores, n_images, cohorts).removals(refs)
    faces = tuple([(int(o), v.tolist()) for o, v in zip(owners[m], vecs[m])] for m in (0, 1))
    cohort_lists = (cohorts[0].vectors.tolist(), cohorts[1].vectors.tolist())
    want, margin = oracle(
        threshold,
        faces,  # type: ignore[arg-type]
        (refs[0].tolist(), refs[1].tolist()),
        cohort_lists,
        k,
        n_images,
    )
    if margin > 1e-3:  # float32 against float64 can only disagree at the threshold
        assert got.tolist() == want


def test_a_face_among_many_look_alikes_is_held_to_its_crowd() -> None:
    """Two faces equally similar to a person's centroid: the one with many close cohort faces (a crowded part of
    face space) scores lower than the one with none, so it is the one kept."""
    e = np.eye(4, dtype=np.float32)
    crowded = np.array([0.8, 0.6, 0.0, 0.0], np.float32)
    lonely = np.array([0.8, 0.0, 0.6, 0.0], np.float32)
    near = crowded + 0.05 * e[3]  # cohort faces all around the crowded face
    cohort_vecs = np.vstack([np.tile(near / np.linalg.norm(near), (5, 1)), np.tile(-e[2], (5, 1))])
    cohort = Cohort.of(cohort_vecs, 3)
    faces = np.stack([crowded, lonely])
    store = FaceStore(Path("."), 4, faces, np.arange(2))
    scorer = FusedScorer(_rule(0.0, 3), (store, store), 2, (cohort, cohort))
    scores = scorer.image_scores((e[:1], e[:1]))
    assert float(faces[0] @ e[0]) == pytest.approx(float(faces[1] @ e[0]))  # the same raw score
    assert scores[0] < scores[1]


def test_the_recorded_rule_is_the_calibration_benchmarks_choice_for_each_number_of_photos() -> None:
    rule = FusedRule.recorded("dlib", get_spec("dlib").extra["opt_out"]["fused"])
    assert rule is not None and rule.second == "facenet-casia"
    for photos, name in ((3, "opt_out_calibration.json"), (8, "opt_out_calibration-enrol8.json")):
        served = json.loads((RESULTS / name).read_text())["served"]
        cal = rule.for_photos(photos)
        assert cal.photos == photos and served["rule"] == "dlib + facenet centroid as-norm, fused"
        assert cal.threshold == pytest.approx(served["threshold"])
        assert rule.k == served["cohort_k"]
    # fewer photos than any calibration: the fewest's (a lower threshold: less leak); between: the one below
    assert [rule.for_photos(n).photos for n in (1, 3, 5, 8, 20)] == [3, 3, 3, 8, 8]
    assert rule.for_photos(8).threshold > rule.for_photos(3).threshold  # a better centroid is held higher


def test_the_bundled_cohorts_are_the_face_models_and_say_where_they_come_from() -> None:
    from importlib import resources

    from clipface.models.runtime import load_encoder

    rule = FusedRule.recorded("dlib", get_spec("dlib").extra["opt_out"]["fused"])
    assert rule is not None
    about = json.loads(resources.files("clipface.assets").joinpath("cohorts", "cohorts.json").read_text())
    for model, cohort in zip(("dlib", "facenet-casia"), rule.cohorts()):
        assert cohort.vectors.shape == (about["faces"][model], load_encoder(model).dim)
        assert np.allclose(np.linalg.norm(cohort.vectors, axis=1), 1, atol=1e-5)
        assert len(np.unique(cohort.vectors.round(3), axis=0)) == len(cohort.vectors)  # one face a person
    assert about["people"] >= 1000 and "LFW" in about["source"]
    with pytest.raises(ValueError, match="cannot give the 20 nearest"):
        Cohort.of(np.eye(4, dtype=np.float32), 20)
