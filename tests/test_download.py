"""Weights on demand: `clipface download` offline (one line, exit 1) and from a hub on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipface
from clipface.models.registry import PRESETS, resolve_models

from .fake_hub import FakeHub


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipface", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-weight test CLIP saved as a transformers checkpoint (what a hub repository holds)."""
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    enc = clipface.create_encoder("test-tiny-random")
    enc.module.save_pretrained(folder)
    enc.tokenizer.save_pretrained(folder)
    return folder


def hub_env(tmp_path: Path, endpoint: str | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")
    }
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0" if endpoint else "1")
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def test_download_offline_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = cli("download", "ViT-B-32:openai", env=hub_env(tmp_path, None))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: model ViT-B-32:openai:") and "--weights DIR" in lines[0]


def test_download_from_a_hub_on_loopback(saved_tiny: Path, tmp_path: Path) -> None:
    with FakeHub({"openai/clip-vit-base-patch32": saved_tiny}) as hub:
        env = hub_env(tmp_path, hub.url)
        before = json.loads(cli("models", "--json", env={**env, "HF_HUB_OFFLINE": "1"}).stdout)
        assert {r["name"]: r for r in before}["ViT-B-32:openai"]["available"] is False
        proc = cli("download", "ViT-B-32:openai", "dlib", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "Fetching 4 files" in proc.stderr and "100%" in proc.stderr  # huggingface_hub's progress bar
        assert "ViT-B-32:openai: downloaded openai/clip-vit-base-patch32" in proc.stderr
        assert any(
            r.startswith("GET /openai/clip-vit-base-patch32/resolve/") and r.endswith("model.safetensors")
            for r in hub.requests
        )
        again = cli("download", "ViT-B-32:openai", env=env)
        assert again.returncode == 0 and "already in the Hugging Face cache" in again.stderr
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    after = {r["name"]: r for r in json.loads(cli("models", "--json", env=offline).stdout)}
    assert (
        after["ViT-B-32:openai"]["available"] is True and after["ViT-B-32:openai"]["reason"] == "in Hugging Face cache"
    )
    run = cli(
        "eval",
        "zeroshot",
        "-m",
        "ViT-B-32:openai",
        "-d",
        "bundled:lfw-mini",
        "--max-identities",
        "2",
        "-o",
        str(tmp_path / "zs"),
        "-q",
        "--cache-dir",
        str(tmp_path / "c"),
        env=offline,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "zs" / "results.json").read_text())["n_images"] == 20


def test_presets() -> None:
    default = resolve_models(["default"])
    assert default[:2] == list(PRESETS["default"]) and "dlib" in default and "facenet-casia" in default
    paper = resolve_models(["paper"])
    assert len(paper) == 9 and paper[0] == "ViT-B-32:openai" and paper[-1] == "ViT-bigG-14:laion2b_s39b_b160k"
    assert resolve_models(["dlib,ViT-B-32:openai", "dlib"]) == ["dlib", "ViT-B-32:openai"]
    assert "test-tiny-random" not in resolve_models(["all"]) and "test-tiny-random" in resolve_models(
        ["all"], include_test=True
    )
    with pytest.raises(clipface.ClipfaceError, match="unknown model"):
        resolve_models(["ViT-Q-99"])


def test_run_takes_the_weights_its_skip_line_advises(saved_tiny: Path, tmp_path: Path) -> None:
    """Offline, `clipface run` skips a CLIP model naming `clipface download`, and runs it with `--weights MODEL=DIR`."""
    env = hub_env(tmp_path, None)
    base = ["run", "--models", "ViT-B-32:openai", "--cloak", "none", "--max-identities", "3", "--idia-k", "3", "-q"]
    skipped = cli(*base, "--out", str(tmp_path / "skip"), env=env)
    assert "skip ViT-B-32:openai" in skipped.stderr and "clipface download ViT-B-32:openai" in skipped.stderr
    ran = cli(*base, "--weights", f"ViT-B-32:openai={saved_tiny}", "--out", str(tmp_path / "ran"), env=env)
    assert ran.returncode == 0, ran.stderr
    doc = json.loads((tmp_path / "ran" / "results.json").read_text())
    assert doc["models_run"] == ["ViT-B-32:openai"] and doc["results"][0]["zeroshot"]["clean"]["n_images"] == 30
