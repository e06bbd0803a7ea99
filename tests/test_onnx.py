"""ONNX backend: parity with torch (fp32 and int8), zero-shot unchanged, export cache, cache keys, errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from clipface.data.dataset import FaceDataset, bundled_path  # noqa: E402
from clipface.data.images import load_image  # noqa: E402
from clipface.embed.cache import embedding_key  # noqa: E402
from clipface.embed.options import RunOptions
from clipface.errors import BackendUnavailableError  # noqa: E402
from clipface.eval.zeroshot import zeroshot  # noqa: E402
from clipface.models.backends.onnx import OnnxEncoder, _finalise, quantize_int8  # noqa: E402
from clipface.models.backends.select import with_backend  # noqa: E402
from clipface.models.base import Encoder, TorchEncoder  # noqa: E402
from clipface.models.facenet import encoder as facenet  # noqa: E402
from clipface.models.registry import get_spec  # noqa: E402

TEXTS = [
    "a photo of Tony Blair.",
    "x",
    "a photo of Jacques Chirac, the former president of France, at a press conference.",
    "a photo of " + "a very long name " * 30,  # truncated to 77 tokens
] + [f"a photo of person number {i}." for i in range(40)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``onnx/`` of a clipface cache shared by this module's tests, so that each graph is exported once."""
    return tmp_path_factory.mktemp("cache") / "onnx"


@pytest.fixture(scope="module")
def fp32(tiny: TorchEncoder, onnx_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(tiny, "fp32", cache_dir=onnx_dir)


@pytest.fixture(scope="module")
def int8(tiny: TorchEncoder, onnx_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(tiny, "int8", cache_dir=onnx_dir)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """40 prepared images: more than one ONNX batch of 32."""
    return np.random.default_rng(0).integers(0, 256, (40, 224, 224, 3), dtype=np.uint8)


def test_fp32_image_parity(tiny: TorchEncoder, fp32: OnnxEncoder, batch: np.ndarray) -> None:
    out = fp32.encode_prepared(batch)
    assert out.shape == (40, tiny.dim) and out.dtype == np.float32
    assert cosines(out, tiny.encode_prepared(batch)).min() >= 0.9999


def test_fp32_text_parity(tiny: TorchEncoder, fp32: OnnxEncoder) -> None:
    # different lengths in one padded batch, and alone (another sequence length)
    assert cosines(fp32.encode_text(TEXTS), tiny.encode_text(TEXTS)).min() >= 0.9999
    assert cosines(fp32.encode_text(TEXTS[2:3]), tiny.encode_text(TEXTS[2:3])).min() >= 0.9999


def test_int8_parity(tiny: TorchEncoder, int8: OnnxEncoder, batch: np.ndarray) -> None:
    img = cosines(int8.encode_prepared(batch), tiny.encode_prepared(batch))
    txt = cosines(int8.encode_text(TEXTS), tiny.encode_text(TEXTS))
    print(f"int8 cosine to torch: images mean {img.mean():.5f} min {img.min():.5f}, text mean {txt.mean():.5f}")
    assert img.mean() >= 0.99 and txt.mean() >= 0.99


def test_zeroshot_predictions_unchanged(tiny: TorchEncoder, fp32: OnnxEncoder) -> None:
    ds = FaceDataset.from_folder(bundled_path("lfw-mini"), max_identities=5, max_per_identity=6)
    opts = RunOptions(progress=False)
    a = zeroshot(tiny, ds, opts, prompts="paper", distractors=10)
    b = zeroshot(fp32, ds, opts, prompts="paper", distractors=10)
    for key in ("top1", "top5", "per_identity", "confusions", "per_prompt_top1"):
        assert a[key] == b[key], key
    # the same argmax for every image
    images = np.stack([tiny.prepare(load_image(im.path)) for im in ds.images])
    names = [f"a photo of {p.replace('_', ' ')}." for p in ds.identities]
    pred_torch = (tiny.encode_prepared(images) @ tiny.encode_text(names).T).argmax(1)
    pred_onnx = (fp32.encode_prepared(images) @ fp32.encode_text(names).T).argmax(1)
    assert (pred_torch == pred_onnx).all()


def test_export_cache_is_reused(tiny: TorchEncoder, fp32: OnnxEncoder, int8: OnnxEncoder, onnx_dir: Path) -> None:
    assert fp32.written and int8.written  # the fixtures exported and quantised
    paths = [fp32.graph_path(), int8.graph_path(), fp32.graph_path("text"), int8.graph_path("text")]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    again = [OnnxEncoder(tiny, p, cache_dir=onnx_dir) for p in ("fp32", "int8")]
    for enc in again:
        enc.encode_text(TEXTS[:2])
        assert enc.written == []
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(p.name for p in paths)  # no temporary files left


def test_cache_keys_differ_by_backend(tiny: TorchEncoder, fp32: OnnxEncoder, int8: OnnxEncoder) -> None:
    fingerprints = {tiny.fingerprint, fp32.fingerprint, int8.fingerprint}
    assert len(fingerprints) == 3
    assert fp32.preprocess_id == int8.preprocess_id == tiny.preprocess_id  # same preparation, different model
    keys = {embedding_key(e.fingerprint, e.preprocess_id, "0" * 64) for e in (tiny, fp32, int8)}
    assert len(keys) == 3
    assert (fp32.name, fp32.dim, fp32.image_size, fp32.has_text) == (tiny.name, tiny.dim, tiny.image_size, True)
    assert fp32.info()["backend"] == "onnx" and int8.info()["precision"] == "int8"


def test_aligner_is_shared_with_wrapped_encoder(tiny: TorchEncoder, onnx_dir: Path) -> None:
    from clipface.models.align import CenterCropAligner

    enc = OnnxEncoder(tiny, cache_dir=onnx_dir)
    try:
        enc.aligner = CenterCropAligner()
        assert tiny.aligner is enc.aligner and enc.preprocess_id == tiny.preprocess_id
    finally:
        tiny.aligner = None


def test_large_model_layout(tiny: TorchEncoder, fp32: OnnxEncoder, tmp_path: Path, batch: np.ndarray) -> None:
    """Graphs over protobuf's 2 GB limit keep their weights in one ``.data`` file; int8 is made from that layout."""
    import onnx
    import onnxruntime as ort

    work = tmp_path / "export"
    work.mkdir()
    model = onnx.load(str(fp32.graph_path()))
    onnx.save_model(model, str(work / "model.onnx"), save_as_external_data=True, location="weights.bin")
    dest = tmp_path / "big-fp32.onnx"
    _finalise(work, work / "model.onnx", dest)
    assert (tmp_path / "big-fp32.onnx.data").is_file()
    quantize_int8(dest, tmp_path / "big-int8.onnx")
    pixels = np.ascontiguousarray(batch[:4].transpose(0, 3, 1, 2), dtype=np.float32) / 255
    for path in (dest, tmp_path / "big-int8.onnx"):
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
        assert cosines(out, tiny.encode_prepared(batch[:4])).mean() >= 0.99


def test_save_optimized(tiny: TorchEncoder, onnx_dir: Path, batch: np.ndarray) -> None:
    enc = OnnxEncoder(tiny, cache_dir=onnx_dir, save_optimized=True)
    assert [p.name for p in enc.written] == [enc.graph_path().stem + f".ort{enc._ort.__version__}.onnx"]
    assert cosines(enc.encode_prepared(batch[:4]), tiny.encode_prepared(batch[:4])).min() >= 0.9999
    assert OnnxEncoder(tiny, cache_dir=onnx_dir, save_optimized=True).written == []
    for p in enc.written:
        p.unlink()


def test_with_backend(tiny: TorchEncoder, onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert with_backend(tiny, "torch", threads=1) is tiny and torch.get_num_threads() == 1
        monkeypatch.setenv("CLIPFACE_CACHE_DIR", str(onnx_dir.parent))
        monkeypatch.setenv("CLIPFACE_THREADS", "1")
        enc = with_backend(tiny, "onnx", "int8")
        assert isinstance(enc, OnnxEncoder) and enc.precision == "int8" and enc.threads == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(BackendUnavailableError, match="needs the onnx backend"):
        with_backend(tiny, "torch", "int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        with_backend(tiny, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        with_backend(tiny, "onnx", "fp8")
    with pytest.raises(BackendUnavailableError, match="onnx backend runs fp32 or int8, not fp16"):
        with_backend(tiny, "onnx", "fp16")


class FakeDlib(Encoder):
    name, dim, image_size = "dlib", 128, 150
    n_params = 1
    fingerprint = "0" * 64

    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        raise AssertionError("not called")


def test_errors_are_one_line(tiny: TorchEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailableError) as exc:
        with_backend(FakeDlib(), "onnx")
    assert "own fast CPU path" in str(exc.value) and "\n" not in str(exc.value)
    assert with_backend(FakeDlib(), "torch").name == "dlib"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(BackendUnavailableError) as exc:
        OnnxEncoder(tiny)
    assert "pip install" in str(exc.value) and "\n" not in str(exc.value)


def test_threads_from_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipface.models.backends.threads import inference_threads, physical_cores

    monkeypatch.delenv("CLIPFACE_THREADS", raising=False)
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    assert inference_threads() == physical_cores() and inference_threads(3) == 3
    monkeypatch.setenv("CLIPFACE_THREADS", "many")
    with pytest.raises(ValueError, match="CLIPFACE_THREADS"):
        inference_threads()


@pytest.fixture(scope="module")
def facenet_encoder(tmp_path_factory: pytest.TempPathFactory) -> facenet.FacenetEncoder:
    ok, why = get_spec("facenet-casia").availability()
    if not ok:
        pytest.skip(f"facenet-casia unavailable: {why}")
    with pytest.MonkeyPatch.context() as mp:  # convert once, into this module's own cache
        mp.setenv("CLIPFACE_CACHE_DIR", str(tmp_path_factory.mktemp("facenet-cache")))
        return facenet.load(get_spec("facenet-casia"), aligner=None)


def test_facenet_parity(facenet_encoder: facenet.FacenetEncoder, onnx_dir: Path) -> None:
    faces = np.random.default_rng(1).integers(0, 256, (8, 160, 160, 3), dtype=np.uint8)
    ref = facenet_encoder.encode_prepared(faces)
    fp32 = cosines(OnnxEncoder(facenet_encoder, "fp32", cache_dir=onnx_dir).encode_prepared(faces), ref)
    int8 = cosines(OnnxEncoder(facenet_encoder, "int8", cache_dir=onnx_dir).encode_prepared(faces), ref)
    print(f"facenet cosine to torch: fp32 min {fp32.min():.6f}, int8 mean {int8.mean():.5f}")
    assert fp32.min() >= 0.9999 and int8.mean() >= 0.99


# -- the compile backend (torch.compile) -----------------------------------------------------------
def test_compile_backend_matches_eager_and_keeps_gradients() -> None:
    import clipface

    eager = clipface.create_encoder("test-tiny-random")
    compiled = with_backend(clipface.create_encoder("test-tiny-random"), "compile")
    assert compiled.info()["backend"] == "compile" and eager.info()["backend"] == "torch"
    assert compiled.fingerprint == eager.fingerprint and compiled.preprocess_id == eager.preprocess_id
    batch = np.random.default_rng(0).integers(0, 256, (6, eager.image_size, eager.image_size, 3), dtype=np.uint8)
    a, b = eager.encode_prepared(batch), compiled.encode_prepared(batch)
    assert (a * b).sum(axis=1).min() >= 0.9999
    assert np.array_equal(
        compiled.encode_prepared(batch[:1]), eager.encode_prepared(batch[:1])
    )  # small batches stay eager
    x = torch.rand(2, 3, eager.image_size, eager.image_size, requires_grad=True)
    compiled.embed_pixels(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(BackendUnavailableError, match="needs a PyTorch encoder"):
        with_backend(FakeDlib(), "compile")


def test_compile_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import clipface

    def broken(*args, **kwargs):
        def run(x):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nlong traceback")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    enc = with_backend(clipface.create_encoder("test-tiny-random"), "compile")
    batch = np.zeros((4, enc.image_size, enc.image_size, 3), dtype=np.uint8)
    with pytest.raises(BackendUnavailableError) as exc:
        enc.encode_prepared(batch)
    assert "C++ compiler" in str(exc.value) and "--backend torch" in str(exc.value) and "\n" not in str(exc.value)
