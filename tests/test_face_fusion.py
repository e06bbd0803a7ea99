"""The fused opt-out rule (:mod:`clipface.index.fusion`) against a plain-Python oracle, and how it is chosen."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.index.facestore import FaceStore
from clipface.index.fusion import FusedCalibration, FusedRule, fused_removals


def _centroid_score(face: list[float], refs: list[list[float]]) -> float:
    centre = [sum(col) / len(refs) for col in zip(*refs)]
    norm = math.sqrt(sum(c * c for c in centre))
    return sum(a * c / norm for a, c in zip(face, centre))


def oracle(
    rule: FusedCalibration,
    faces: tuple[list[tuple[int, list[float]]], list[tuple[int, list[float]]]],
    refs: tuple[list[list[float]], list[list[float]]],
    n_images: int,
) -> tuple[list[bool], float]:
    """Written from the rule's definition: per model, an image's best face's centroid score; standardised, averaged
    (one model alone where the other has no face); removed at the fused threshold, or by the first model alone.
    Also how close any image came to a threshold."""
    out, margin = [], math.inf
    for image in range(n_images):
        best = []
        for m in (0, 1):
            scores = [_centroid_score(v, refs[m]) for owner, v in faces[m] if owner == image and refs[m]]
            best.append(max(scores) if scores else None)
        z = [None if b is None else (b - rule.centres[m]) / rule.spreads[m] for m, b in enumerate(best)]
        known = [x for x in z if x is not None]
        fused = sum(known) / len(known) if known else None
        out.append((fused is not None and fused >= rule.threshold) or (best[0] is not None and best[0] >= rule.alone))
        if fused is not None:
            margin = min(margin, abs(fused - rule.threshold))
        if best[0] is not None:
            margin = min(margin, abs(best[0] - rule.alone))
    return out, margin


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.integers(0, 30), st.integers(0, 30), st.integers(1, 4), st.integers(0, 2**31))
def test_fused_removals_follow_the_definition(n_images: int, n1: int, n2: int, n_refs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rule = FusedCalibration(3, (0.1, -0.05), (0.3, 0.2), float(rng.uniform(-1, 2)), float(rng.uniform(0.2, 0.9)))
    owners = (rng.integers(0, n_images, n1), rng.integers(0, n_images, n2))  # images with 0, 1 or many faces
    vecs = (_unit(rng, n1, 6), _unit(rng, n2, 4))
    refs = (_unit(rng, n_refs, 6), _unit(rng, int(rng.integers(0, 3)), 4))  # the second model may see no face
    stores = (FaceStore(Path("."), 6, vecs[0], owners[0]), FaceStore(Path("."), 4, vecs[1], owners[1]))
    got = fused_removals(rule, stores, refs, n_images)
    faces = tuple([(int(o), v.tolist()) for o, v in zip(owners[m], vecs[m])] for m in (0, 1))
    want, margin = oracle(rule, faces, (refs[0].tolist(), refs[1].tolist()), n_images)  # type: ignore[arg-type]
    if margin > 1e-4:  # float32 against float64 can only disagree at a threshold
        assert got.tolist() == want


def test_the_second_model_rescues_what_the_first_misses_and_the_first_alone_what_it_is_sure_of() -> None:
    """The direction of both parts of the rule, on hand-made scores."""
    rule = FusedCalibration(3, (0.0, 0.0), (1.0, 1.0), threshold=0.5, alone=0.95)
    e = np.eye(2, dtype=np.float32)
    # image 0: both models lukewarm (0.6 each: fused 0.6, removed); image 1: first sure (0.96), second opposed;
    # image 2: first lukewarm, second opposed (fused below the threshold: kept); image 3: no face at all
    first = np.array([[0.6, 0.8], [0.96, math.sqrt(1 - 0.96**2)], [0.6, 0.8]], np.float32)
    second = np.array([[0.6, 0.8], [-1.0, 0.0], [-0.6, 0.8]], np.float32)
    stores = (FaceStore(Path("."), 2, first, np.arange(3)), FaceStore(Path("."), 2, second, np.arange(3)))
    removed = fused_removals(rule, stores, (e[:1], e[:1]), 4)
    assert removed.tolist() == [True, True, False, False]


def test_the_recorded_rule_is_the_calibration_benchmarks_choice_for_each_number_of_photos() -> None:
    import json

    from clipface.models.registry import get_spec

    rule = FusedRule.recorded("dlib", get_spec("dlib").extra["opt_out"]["fused"])
    assert rule is not None and rule.second == "facenet-casia"
    results = Path(__file__).parents[1] / "benchmarks/results"
    for photos, name in ((3, "opt_out_calibration.json"), (8, "opt_out_calibration-enrol8.json")):
        served = json.loads((results / name).read_text())["served"]
        cal = rule.for_photos(photos)
        assert cal.photos == photos and served["rule"] == "dlib + facenet centroid, fused, or dlib alone"
        assert cal.threshold == pytest.approx(served["thresholds"]["fused"])
        assert cal.alone == pytest.approx(served["thresholds"]["dlib_alone"])
        stats = served["standardised_by"]
        assert cal.centres == pytest.approx((stats["dlib"][0], stats["facenet-casia"][0]))
        assert cal.spreads == pytest.approx((stats["dlib"][1], stats["facenet-casia"][1]))
    # fewer photos than any calibration: the fewest's (lower thresholds: less leak); between: the one below
    assert [rule.for_photos(n).photos for n in (1, 3, 5, 8, 20)] == [3, 3, 3, 8, 8]
    assert rule.for_photos(8).threshold > rule.for_photos(3).threshold  # a better centroid is held higher
