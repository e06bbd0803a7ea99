"""The one-call functions (represent, verify, find) with the real face recognisers on LFW photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipface
from clipface.errors import NoFaceError, UsageError
from clipface.models.dlib_resnet import availability as dlib_availability
from clipface.models.facenet.encoder import availability as facenet_availability
from clipface.models.registry import get_spec

from .conftest import LFW_MINI

BLAIR_1 = LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg"
BLAIR_2 = LFW_MINI / "Tony_Blair" / "Tony_Blair_0002.jpg"
POWELL_1 = LFW_MINI / "Colin_Powell" / "Colin_Powell_0001.jpg"


def _available(name: str) -> tuple[bool, str]:
    return dlib_availability() if name == "dlib" else facenet_availability(get_spec(name))


MODELS = [
    pytest.param(name, marks=pytest.mark.skipif(not _available(name)[0], reason=_available(name)[1]))
    for name in ("dlib", "facenet-casia")
]
BLANK = np.full((200, 200, 3), 128, np.uint8)


@pytest.mark.parametrize("model", MODELS)
def test_represent_every_face_with_box_and_score(model: str) -> None:
    faces = clipface.represent(BLAIR_1, model=model)
    assert len(faces) >= 1
    first = faces[0]
    assert first.embedding.shape == (get_spec(model).embed_dim,)
    assert np.linalg.norm(first.embedding) == pytest.approx(1.0, abs=1e-5)
    left, top, right, bottom = first.box
    assert 0 <= left < right <= 250 + 1 and 0 <= top < bottom <= 250 + 1
    assert first.score is not None and first.score > 0
    same_as_array = clipface.represent(np.asarray(Image.open(BLAIR_1).convert("RGB")), model=model)[0]
    same_as_pil = clipface.represent(Image.open(BLAIR_1), model=model)[0]
    same_as_bytes = clipface.represent(BLAIR_1.read_bytes(), model=model)[0]
    for other in (same_as_array, same_as_pil, same_as_bytes):
        assert float(np.dot(other.embedding, first.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert clipface.represent(BLANK, model=model) == []


@pytest.mark.parametrize("model", MODELS)
def test_verify_same_and_different_person_with_recorded_threshold(model: str) -> None:
    spec = get_spec(model)
    assert spec.verify_threshold is not None and "eval verify" in spec.verify_threshold_source
    same = clipface.verify(BLAIR_1, BLAIR_2, model=model)
    other = clipface.verify(BLAIR_1, POWELL_1, model=model)
    assert same.verified is True and other.verified is False
    assert same.threshold == other.threshold == spec.verify_threshold
    assert same.similarity > spec.verify_threshold > other.similarity
    assert clipface.verify(BLAIR_1, BLAIR_2, model=model, threshold=0.9999).verified is False
    with pytest.raises(NoFaceError, match="no face"):
        clipface.verify(BLAIR_1, BLANK, model=model)


def test_verify_needs_a_threshold_for_models_without_one() -> None:
    with pytest.raises(UsageError, match="no LFW threshold"):
        clipface.verify(BLAIR_1, BLAIR_2, model="test-tiny-random")
    result = clipface.verify(BLAIR_1, BLAIR_1, model="test-tiny-random", threshold=0.5)
    assert result.verified and result.similarity == pytest.approx(1.0, abs=1e-5) and result.threshold_source == "given"


@pytest.mark.parametrize("model", MODELS)
def test_find_ranks_the_gallery_and_caches(model: str, tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    shutil.copytree(LFW_MINI, gallery)
    (gallery / "Tony_Blair" / BLAIR_1.name).unlink()  # the query itself is not in the gallery
    cache = clipface.EmbeddingCache(tmp_path / "cache")
    matches = clipface.find(BLAIR_1, gallery, model=model, k=5, cache=cache)
    assert [m.rank for m in matches] == [1, 2, 3, 4, 5]
    assert matches[0].identity == "Tony_Blair"
    assert all(a.similarity >= b.similarity for a, b in zip(matches, matches[1:]))
    stored = len(cache)
    assert stored >= 90 and clipface.find(BLAIR_1, gallery, model=model, k=5, cache=cache) == matches
    assert len(cache) == stored  # the second search embedded nothing new
    with pytest.raises(NoFaceError):
        clipface.find(BLANK, gallery, model=model, cache=cache)
