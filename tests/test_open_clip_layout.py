"""open_clip-layout checkpoints (open_clip_config.json, open_clip_model.safetensors or .bin) run as open_clip runs them.

The references in ``tests/fixtures/open_clip/*/reference.json`` were computed once by open_clip 3.3 itself
(``make_reference.py``: its own loader, preprocessing and tokenizer) from seeded weights that the test writes
again here; clipface must reproduce them from ``--weights DIR`` and from the Hugging Face cache, offline,
to within ``1 - cos <= 1e-6`` (float32 rounding leaves about 1e-7; the wrong activation alone, GELU for
QuickGELU, leaves about 2e-5, so the bar is 100 times tighter than the issue's 0.9999).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipface
from clipface.errors import WeightsUnavailableError

from .fake_hub import FakeHub
from .open_clip_weights import seeded_state

FIXTURES = Path(__file__).parent / "fixtures" / "open_clip"
ROOT = Path(__file__).resolve().parents[1]
BAR = 1 - 1e-6
VARIANTS = ("quickgelu", "gelu")  # QuickGELU + safetensors; GELU + CustomTextCLIP keys + .bin, mean = std = 0.5


def write_checkpoint(variant: str, folder: Path, weights: str | None = None, edit=None) -> Path:
    """The seeded open_clip checkpoint of ``variant`` written to ``folder`` (``edit`` changes tensors first)."""
    fixture = FIXTURES / variant
    config = json.loads((fixture / "open_clip_config.json").read_text())
    keys = json.loads((fixture / "keys.json").read_text())
    state = {k: torch.from_numpy(v) for k, v in seeded_state(keys, config["test"]["seed"]).items()}
    if edit is not None:
        edit(state)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture / "open_clip_config.json", folder)
    name = weights or config["test"]["weights"]
    if name.endswith(".safetensors"):
        import safetensors.torch

        safetensors.torch.save_file(state, folder / name)
    else:
        torch.save(state, folder / name)
    return folder


def reference(variant: str) -> dict:
    return json.loads((FIXTURES / variant / "reference.json").read_text())


def cosines(encoder, ref: dict) -> tuple[np.ndarray, np.ndarray]:
    images = encoder.encode_images([Image.open(ROOT / p) for p in ref["photos"]])
    texts = encoder.encode_text(ref["texts"])
    return np.sum(images * np.array(ref["image"]), 1), np.sum(texts * np.array(ref["text"]), 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_dir_matches_open_clip(variant: str, tmp_path: Path) -> None:
    folder = write_checkpoint(variant, tmp_path / variant)
    encoder = clipface.create_encoder("hf:someone/open-clip-tiny", weights=folder)
    image_cos, text_cos = cosines(encoder, reference(variant))
    assert image_cos.min() >= BAR and text_cos.min() >= BAR, (image_cos, text_cos)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert encoder.mean == tuple(config["preprocess_cfg"]["mean"]) and encoder.std == tuple(
        config["preprocess_cfg"]["std"]
    )
    assert encoder.image_size == config["model_cfg"]["vision_cfg"]["image_size"]
    assert encoder.context_length == config["model_cfg"]["text_cfg"]["context_length"]


def test_the_reference_catches_a_wrong_mapping(tmp_path: Path) -> None:
    """Query and key swapped in one block, or GELU for QuickGELU: the saved embeddings no longer agree."""

    def swap_qk(state: dict) -> None:
        w = state["visual.transformer.resblocks.0.attn.in_proj_weight"]
        q, k, v = w.chunk(3)
        state["visual.transformer.resblocks.0.attn.in_proj_weight"] = torch.cat([k, q, v])

    ref = reference("quickgelu")
    swapped = clipface.create_encoder("hf:a/b", weights=write_checkpoint("quickgelu", tmp_path / "qk", edit=swap_qk))
    assert cosines(swapped, ref)[0].max() < 0.999
    gelu = write_checkpoint("quickgelu", tmp_path / "act")
    config = json.loads((gelu / "open_clip_config.json").read_text())
    config["model_cfg"]["quick_gelu"] = False
    (gelu / "open_clip_config.json").write_text(json.dumps(config))
    image_cos, text_cos = cosines(clipface.create_encoder("hf:a/b", weights=gelu), ref)
    assert image_cos.max() < BAR and text_cos.max() < BAR, (image_cos, text_cos)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vision_cfg": {"timm_model_name": "vit_base_patch16_siglip_224"}}, "vision_cfg.timm_model_name"),
        ({"vision_cfg": {"ls_init_value": 1e-5}}, "vision_cfg.ls_init_value = 1e-05 cannot be built"),
        ({"text_cfg": {"hf_model_name": "xlm-roberta-base"}}, "text_cfg.hf_model_name"),
        ({"text_cfg": {"pool_type": "last"}}, 'text_cfg.pool_type = "last"'),
        ({"init_logit_bias": -10}, "model_cfg.init_logit_bias"),
        ({"vision_cfg": {"brand_new_setting": 1}}, "vision_cfg.brand_new_setting is not a setting"),
        ({"vision_cfg": {"image_size": [96, 128]}}, "is not square"),
    ],
)
def test_unbuildable_configs_are_refused_in_one_line(change: dict, message: str, tmp_path: Path) -> None:
    folder = write_checkpoint("quickgelu", tmp_path / "m")
    config = json.loads((folder / "open_clip_config.json").read_text())
    for key, value in change.items():
        config["model_cfg"][key] = {**config["model_cfg"][key], **value} if isinstance(value, dict) else value
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsUnavailableError) as err:
        clipface.create_encoder("hf:a/b", weights=folder)
    assert message in str(err.value) and str(folder / "open_clip_config.json") in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_that_disagree_with_the_config_are_refused(tmp_path: Path) -> None:
    missing = write_checkpoint("quickgelu", tmp_path / "missing", edit=lambda s: s.pop("visual.proj"))
    with pytest.raises(WeightsUnavailableError, match="tensor visual.proj is missing"):
        clipface.create_encoder("hf:a/b", weights=missing)
    extra = write_checkpoint("quickgelu", tmp_path / "extra", edit=lambda s: s.update(logit_bias=torch.zeros(())))
    with pytest.raises(WeightsUnavailableError, match="cannot place: logit_bias"):
        clipface.create_encoder("hf:a/b", weights=extra)
    wide = write_checkpoint("quickgelu", tmp_path / "wide")
    config = json.loads((wide / "open_clip_config.json").read_text())
    config["model_cfg"]["embed_dim"] = 32
    (wide / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsUnavailableError, match="does not match open_clip_config.json"):
        clipface.create_encoder("hf:a/b", weights=wide)
    with pytest.raises(WeightsUnavailableError, match="open_clip_config.json"):  # the message names both layouts
        clipface.create_encoder("hf:a/b", weights=tmp_path)


def test_from_the_hugging_face_cache_offline(tmp_path: Path) -> None:
    """A hub repository in open_clip's layout only: one weight file fetched, then found offline in the cache."""
    repo = write_checkpoint("quickgelu", tmp_path / "repo")
    write_checkpoint("quickgelu", tmp_path / "repo", weights="open_clip_pytorch_model.bin")  # both, as open_clip pushes
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0")
    name = "hf:someone/open-clip-tiny"
    with FakeHub({"someone/open-clip-tiny": repo}) as hub:
        proc = subprocess.run(
            [sys.executable, "-m", "clipface", "download", name],
            capture_output=True,
            text=True,
            env={**env, "HF_ENDPOINT": hub.url},
            timeout=300,
        )
        fetched = [r.rsplit("/", 1)[-1] for r in hub.requests if r.startswith("GET ") and "/resolve/" in r]
    assert proc.returncode == 0, proc.stderr
    assert "open_clip_model.safetensors" in fetched and "open_clip_pytorch_model.bin" not in fetched
    probe = (
        "import json, sys; import numpy as np; from PIL import Image; import clipface\n"
        "from clipface.models.registry import get_spec\n"
        f"spec = get_spec({name!r}); ok, reason = spec.availability()\n"
        f"enc = clipface.create_encoder({name!r}); ref = json.loads(sys.stdin.read())\n"
        "img = enc.encode_images([Image.open(p) for p in ref['photos']]); txt = enc.encode_text(ref['texts'])\n"
        "print(json.dumps({'ok': ok, 'reason': reason, 'image': np.sum(img * np.array(ref['image']), 1).tolist(),\n"
        "                  'text': np.sum(txt * np.array(ref['text']), 1).tolist()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        input=json.dumps(reference("quickgelu")),
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] is True and got["reason"] == "in Hugging Face cache"
    assert min(got["image"]) >= BAR and min(got["text"]) >= BAR, got
