"""The real CLIP loading path, exercised on a tiny model saved the way transformers saves any CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipface
from clipface.errors import ModelNotFoundError, WeightsUnavailableError
from clipface.models.base import resize_center_crop

from .conftest import LFW_MINI, need


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    enc = clipface.create_encoder("test-tiny-random")
    path = tmp_path_factory.mktemp("weights") / "tiny-clip"
    enc.module.save_pretrained(path)
    enc.tokenizer.save_pretrained(path)
    return path


def test_local_weights_directory_loads_and_matches(saved_tiny: Path, tiny) -> None:
    enc = clipface.create_encoder("ViT-B-32:openai", weights=saved_tiny)
    assert enc.name == "ViT-B-32:openai" and not enc.is_test_model and enc.dim == 64
    img = Image.open(next(iter(sorted(need(LFW_MINI).glob("*/*.jpg")))))
    np.testing.assert_allclose(enc.encode_images([img]), tiny.encode_images([img]), atol=1e-5)
    np.testing.assert_allclose(
        enc.encode_text(["a photo of Tony Blair."]), tiny.encode_text(["a photo of Tony Blair."]), atol=1e-5
    )
    # the fingerprint of file-loaded weights is a content hash, stable across loads
    assert enc.fingerprint == clipface.create_encoder("ViT-B-32:openai", weights=saved_tiny).fingerprint


def test_offline_uncached_model_gives_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(WeightsUnavailableError) as err:
        clipface.create_encoder("ViT-L-14:laion2b_s32b_b82k")
    msg = str(err.value)
    assert "\n" not in msg and "ViT-L-14:laion2b_s32b_b82k" in msg and "--weights DIR" in msg and "network" in msg


def test_bad_weights_directory(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        clipface.create_encoder("ViT-B-32:openai", weights=tmp_path / "missing")
    with pytest.raises(WeightsUnavailableError, match="is not a directory saved by transformers.* or by open_clip"):
        clipface.create_encoder("ViT-B-32:openai", weights=tmp_path)


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ModelNotFoundError, match="did you mean ViT-B-32:openai"):
        clipface.get_spec("ViT-B-32:opena")


def test_registry_names_and_aliases() -> None:
    names = {s.name for s in clipface.list_models()}
    for n in [
        "ViT-B-32:openai",
        "ViT-B-16:openai",
        "ViT-L-14:openai",
        "ViT-L-14-336:openai",
        "ViT-B-32:laion2b_s34b_b79k",
        "ViT-L-14:laion2b_s32b_b82k",
        "ViT-H-14:laion2b_s32b_b79k",
        "ViT-g-14:laion2b_s12b_b42k",
        "ViT-bigG-14:laion2b_s39b_b160k",
    ]:
        assert n in names
    assert clipface.get_spec("openai/clip-vit-base-patch32").name == "ViT-B-32:openai"
    assert clipface.get_spec("test-tiny-random").is_test


def test_preprocessing_matches_transformers_processor() -> None:
    from transformers import CLIPImageProcessor

    from clipface.models.clip_hf import CLIP_MEAN, CLIP_STD

    proc = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    )
    for path in sorted(need(LFW_MINI).glob("*/*.jpg"))[:3]:
        img = Image.open(path).convert("RGB").resize((250, 190))  # non-square, to exercise the resize rule
        ref = proc(images=img, return_tensors="np")["pixel_values"][0]
        ours = (resize_center_crop(img, 224).astype(np.float32) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
        assert np.abs(ours.transpose(2, 0, 1) - ref).max() < 0.05  # uint8 rounding of the resized image


def test_tokenizer_is_clips_bpe(tiny) -> None:
    ids = tiny.tokenizer("a photo of George W Bush.")["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[1:3] == [320, 1125]


def test_gradient_reaches_pixels(tiny) -> None:
    import torch

    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    tiny.embed_pixels(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_registered_normalisation_wins_over_the_checkpoints_file(saved_tiny: Path, tmp_path: Path) -> None:
    """open_clip's table gives ViT-L-14:laion2b_s32b_b82k mean = std = 0.5 (open_clip issue 204); a checkpoint folder
    whose preprocessor_config.json says OpenAI's statistics must not change that, nor the other way round."""
    import json
    import shutil

    from clipface.models.registry import INCEPTION_MEAN, OPENAI_MEAN, get_spec, list_models

    folder = tmp_path / "with-file"
    shutil.copytree(saved_tiny, folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.9, 0.9]}), encoding="utf-8"
    )
    laion = clipface.create_encoder("ViT-L-14:laion2b_s32b_b82k", weights=folder)
    openai = clipface.create_encoder("ViT-L-14:openai", weights=folder)
    assert laion.mean == INCEPTION_MEAN and laion.std == (0.5, 0.5, 0.5)
    assert openai.mean == pytest.approx(OPENAI_MEAN) and openai.mean != laion.mean
    assert laion.preprocess_id != openai.preprocess_id  # so their cached embeddings never mix
    clip_specs = [s for s in list_models(include_test=False) if s.family == "clip" and s.hf_id]
    assert len(clip_specs) >= 10 and all(s.image_mean and s.image_std for s in clip_specs)
    assert get_spec("ViT-B-32:laion2b_s34b_b79k").image_mean == OPENAI_MEAN  # as open_clip's table has it
    hub = clipface.create_encoder("hf:someone/tiny", weights=folder)  # unregistered: the file's own statistics
    assert hub.mean == pytest.approx((0.1, 0.2, 0.3))
