"""Person rules of the face opt-out (``FaceStore.person_scores``) against a plain-Python oracle, block by block."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.index import facestore
from clipface.index.facestore import PERSON_RULES, FaceStore


def oracle(face: list[float], refs: list[list[float]], rule: str) -> float:
    sims = sorted((sum(a * b for a, b in zip(face, r)) for r in refs), reverse=True)
    if rule == "any":
        return sims[0]
    if rule == "second":
        return sims[1] if len(sims) > 1 else sims[0]
    if rule == "mean":
        return sum(sims) / len(sims)
    centre = [sum(col) / len(refs) for col in zip(*refs)]
    norm = math.sqrt(sum(c * c for c in centre))
    return sum(a * c / norm for a, c in zip(face, centre))


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.sampled_from(PERSON_RULES), st.integers(0, 2**31))
def test_each_rule_scores_as_its_definition(n_faces: int, n_refs: int, rule: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    faces, refs = unit(rng, n_faces, 8), unit(rng, n_refs, 8)
    store = FaceStore(Path("."), 8, faces, np.arange(n_faces))
    got = store.person_scores(refs, rule)
    want = [oracle(f.tolist(), refs.tolist(), rule) for f in faces]
    assert np.allclose(got, want, atol=1e-5)


def test_blocks_do_not_change_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    faces, refs = unit(rng, 50, 8), unit(rng, 3, 8)
    store = FaceStore(Path("."), 8, faces, np.arange(50))
    whole = {rule: store.person_scores(refs, rule) for rule in PERSON_RULES}
    monkeypatch.setattr(facestore, "BLOCK", 7)
    for rule in PERSON_RULES:
        assert np.allclose(store.person_scores(refs, rule), whole[rule], atol=1e-6)  # a GEMM rounds per block
    with pytest.raises(ValueError, match="unknown rule"):
        store.person_scores(refs, "median")


def test_stricter_rules_remove_no_more_than_any() -> None:
    """The direction of the effect: second best and mean never score above the best match."""
    rng = np.random.default_rng(5)
    faces, refs = unit(rng, 200, 16), unit(rng, 4, 16)
    store = FaceStore(Path("."), 16, faces, np.arange(200))
    best = store.person_scores(refs, "any")
    assert (store.person_scores(refs, "second") <= best + 1e-7).all()
    assert (store.person_scores(refs, "mean") <= best + 1e-7).all()


def test_the_served_rule_is_the_calibrated_one_unless_told() -> None:
    from clipface.models.registry import get_spec
    from clipface.server.face_optout import decision_rule

    dlib, facenet = get_spec("dlib"), get_spec("facenet-casia")
    recorded = dlib.extra["opt_out"]
    assert decision_rule(dlib, None, None) == ("mean", recorded["threshold"])
    assert decision_rule(dlib, None, 0.95) == ("mean", 0.95)
    assert decision_rule(dlib, "any", None) == ("any", dlib.verify_threshold)  # another rule: the LFW pair threshold
    assert decision_rule(facenet, None, None) == ("any", facenet.verify_threshold)  # no calibrated rule recorded
    calibration = json.loads((Path(__file__).parents[1] / "benchmarks/results/opt_out_calibration.json").read_text())
    curve = next(c for c in calibration["curves_on_every_half"] if c["rule"] == "dlib mean")
    point = next(p for p in curve["points"] if p["leak_goal"] == 0.004)
    assert point["threshold"] == pytest.approx(recorded["threshold"], abs=1e-6)  # the measured choice, not a guess
