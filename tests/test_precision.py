"""Half precision for torch encoders: bf16 on the CPU (parity with fp32), fp16 and bf16 on CUDA where a GPU exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipface.embed.options import RunOptions
from clipface.errors import BackendUnavailableError
from clipface.models.facenet.encoder import availability as facenet_availability
from clipface.models.registry import get_spec
from clipface.models.runtime import LoadOptions, load_encoder

from .conftest import LFW_MINI

FACES = [Image.open(p).convert("RGB") for p in sorted(LFW_MINI.glob("*/*_0001.jpg"))[:6]]
MODELS = ["test-tiny-random"] + (["facenet-casia"] if facenet_availability(get_spec("facenet-casia"))[0] else [])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("model", MODELS)
def test_bf16_on_cpu_matches_fp32(model: str) -> None:
    fp32 = load_encoder(model, LoadOptions())
    bf16 = load_encoder(model, LoadOptions(precision="bf16"))
    a, b = fp32.encode_images(FACES), bf16.encode_images(FACES)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert cosines(a, b).min() >= 0.99
    assert bf16.dtype == torch.bfloat16 and bf16.info()["precision"] == "bf16"
    assert bf16.fingerprint != fp32.fingerprint  # bf16 embeddings are cached apart from fp32 ones
    if bf16.has_text:
        t32, t16 = fp32.encode_text(["a photo of Tony Blair."]), bf16.encode_text(["a photo of Tony Blair."])
        assert cosines(t32, t16).min() >= 0.99
    pixels = torch.rand(2, 3, bf16.image_size, bf16.image_size, requires_grad=True)
    bf16.embed_pixels(pixels).sum().backward()  # still differentiable, for cloaking surrogates
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()


def test_fp16_needs_cuda_and_onnx_has_no_half() -> None:
    with pytest.raises(BackendUnavailableError, match="fp16 needs a CUDA device"):
        load_encoder("test-tiny-random", LoadOptions(precision="fp16"))
    with pytest.raises(BackendUnavailableError, match="the onnx backend runs fp32 or int8"):
        load_encoder("test-tiny-random", RunOptions(backend="onnx", precision="bf16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda(precision: str) -> None:
    fp32 = load_encoder("test-tiny-random", LoadOptions(device="cuda"))
    half = load_encoder("test-tiny-random", LoadOptions(device="cuda", precision=precision))
    assert cosines(fp32.encode_images(FACES), half.encode_images(FACES)).min() >= 0.99
