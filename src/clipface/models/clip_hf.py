"""CLIP through Hugging Face ``transformers`` (``CLIPModel``; no torchvision needed).

Weights come from a local directory (``weights=DIR``), else from the Hugging Face cache, else from a
download when the hub can be reached. A folder is either layout: a saved ``transformers`` model
(``config.json``) or open_clip's (``open_clip_config.json``, see :mod:`.open_clip_layout`). Offline and not
cached, loading fails with one :class:`~clipface.errors.WeightsUnavailableError` line naming both ways.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import WeightsUnavailableError
from .base import TorchEncoder, l2_normalize
from .fingerprint import files_fingerprint
from .open_clip_layout import CONFIG_NAME as OPEN_CLIP_CONFIG
from .open_clip_layout import WEIGHT_NAMES as OPEN_CLIP_WEIGHTS
from .open_clip_layout import is_open_clip_dir, load_model, weight_file
from .registry import OPENAI_MEAN, OPENAI_STD
from .tokenizer import clean_text

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .registry import ModelSpec

#: OpenAI's CLIP pixel statistics, also used by the LAION checkpoints.
CLIP_MEAN, CLIP_STD = OPENAI_MEAN, OPENAI_STD  # the default where neither the spec nor the folder says
WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")
LAYOUTS = (
    "a directory saved by transformers' CLIPModel.save_pretrained (config.json, model.safetensors or "
    "pytorch_model.bin) or by open_clip (open_clip_config.json, open_clip_model.safetensors or "
    "open_clip_pytorch_model.bin)"
)


class HFCLIPEncoder(TorchEncoder):
    """A ``transformers`` CLIPModel behind the :class:`~clipface.models.base.Encoder` interface."""

    has_text = True
    text_batch_size = 256

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        pretraining: str = "unknown",
        fingerprint: str | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        is_test_model: bool = False,
        device: str = "cpu",
    ) -> None:
        self.module = model.eval().to(device)
        self.tokenizer = tokenizer
        self.name = name
        self.pretraining = pretraining
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.vision_config.image_size)
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.mean = tuple(float(v) for v in mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in std)  # type: ignore[assignment]
        self.is_test_model = is_test_model
        self.device = device
        self._fingerprint = fingerprint
        for p in self.module.parameters():
            p.requires_grad_(False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module.get_image_features(pixel_values=x.to(self.device))
        return out if _is_tensor(out) else out.pooler_output

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return super().embed_pixels(x.to(self.device)).cpu()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.text_batch_size):
                tok = self.tokenizer(
                    [clean_text(t) for t in texts[i : i + self.text_batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=self.context_length,
                    return_tensors="pt",
                ).to(self.device)
                feats = self.module.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                feats = feats if _is_tensor(feats) else feats.pooler_output
                out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _weight_files(directory: Path) -> list[Path]:
    for pattern in WEIGHT_PATTERNS[:2], WEIGHT_PATTERNS[2:]:
        files = sorted(f for p in pattern for f in directory.glob(p))
        if files:
            return files
    return []


def _is_transformers_dir(directory: Path) -> bool:
    return (directory / "config.json").is_file() and bool(_weight_files(directory))


def is_weights_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a CLIP checkpoint in either layout."""
    return _is_transformers_dir(directory) or is_open_clip_dir(directory)


def _pixel_stats(directory: Path) -> tuple[Sequence[float], Sequence[float]]:
    cfg = directory / "preprocessor_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        return data.get("image_mean", CLIP_MEAN), data.get("image_std", CLIP_STD)
    return CLIP_MEAN, CLIP_STD


def _tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    from .tokenizer import clip_tokenizer

    if (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file():
        return AutoTokenizer.from_pretrained(str(directory))
    return clip_tokenizer()  # the same BPE that every CLIP checkpoint uses


def offline_message(spec: ModelSpec, detail: str = "") -> str:
    """The one line shown when a CLIP model's weights cannot be had."""
    from huggingface_hub import constants

    extra = f" ({detail})" if detail else ""
    return (
        f"model {spec.name}: weights for {spec.hf_id} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and cannot be downloaded{extra}; get them where the network reaches the hub with "
        f"`clipface download {spec.name}` (fills the cache), or pass --weights DIR ({LAYOUTS})"
    )


def cached_snapshot(hf_id: str) -> Path | None:
    """The local snapshot directory of ``hf_id`` in the Hugging Face cache, if its weights are there (either layout)."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", OPEN_CLIP_CONFIG):
        config = try_to_load_from_cache(hf_id, name)
        if isinstance(config, str) and is_weights_dir(Path(config).parent):
            return Path(config).parent
    return None


def _weights_to_fetch(files: Sequence[str]) -> list[str]:
    """The one checkpoint to fetch of a repository's ``files``: transformers' safetensors, open_clip's, then .bin."""
    import fnmatch

    for patterns in (WEIGHT_PATTERNS[:2], OPEN_CLIP_WEIGHTS[:1], WEIGHT_PATTERNS[2:], OPEN_CLIP_WEIGHTS[1:]):
        if any(fnmatch.fnmatch(f, p) for f in files for p in patterns):
            return list(patterns)
    return []


def download_snapshot(spec: ModelSpec) -> Path:
    """Fetch ``spec``'s checkpoint into the Hugging Face cache (with progress bars); its snapshot folder."""
    from huggingface_hub import HfApi, snapshot_download

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise WeightsUnavailableError(offline_message(spec, "HF_HUB_OFFLINE is set"))
    assert spec.hf_id is not None
    try:
        weights = _weights_to_fetch(HfApi().list_repo_files(spec.hf_id))
        if not weights:
            raise WeightsUnavailableError(f"model {spec.name}: {spec.hf_id} holds no CLIP weights in {LAYOUTS}")
        snapshot = Path(snapshot_download(spec.hf_id, allow_patterns=["*.json", "*.txt", *weights]))
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # network errors come in many types (requests, httpx, OSError)
        raise WeightsUnavailableError(offline_message(spec, f"hub unreachable: {type(exc).__name__}")) from None
    return snapshot


def resolve_weights(spec: ModelSpec, weights: str | Path | None) -> Path:
    """The local directory holding ``spec``'s weights (given, cached or downloaded)."""
    if weights is not None:
        directory = Path(weights).expanduser()
        if not directory.is_dir():
            raise WeightsUnavailableError(f"model {spec.name}: weights directory {directory} does not exist")
        if not is_weights_dir(directory):
            raise WeightsUnavailableError(f"model {spec.name}: {directory} is not {LAYOUTS}")
        return directory
    if spec.hf_id is None:
        raise WeightsUnavailableError(f"model {spec.name}: no Hugging Face id registered; pass --weights DIR")
    return cached_snapshot(spec.hf_id) or download_snapshot(spec)


def availability(spec: ModelSpec) -> tuple[bool, str]:
    """Whether ``spec``'s weights are in the local cache (no network is touched)."""
    if spec.hf_id and cached_snapshot(spec.hf_id):
        return True, "in Hugging Face cache"
    local = os.environ.get("CLIPFACE_WEIGHTS_DIR")
    if local and is_weights_dir(Path(local) / weights_dirname(spec.name)):
        return True, f"in {local}"
    return False, f"weights not cached: clipface download {spec.name} (once, online), or --weights DIR"


def weights_dirname(name: str) -> str:
    """Folder name of a model under ``$CLIPFACE_WEIGHTS_DIR`` (``ViT-B-32:openai`` -> ``ViT-B-32_openai``)."""
    return name.replace(":", "_").replace("/", "_")


def load(spec: ModelSpec, weights: str | Path | None = None, device: str = "cpu", **_: Any) -> HFCLIPEncoder:
    """Load a registered CLIP checkpoint (see module docstring for where weights come from)."""
    from transformers import CLIPModel

    if weights is None and os.environ.get("CLIPFACE_WEIGHTS_DIR"):
        candidate = Path(os.environ["CLIPFACE_WEIGHTS_DIR"]) / weights_dirname(spec.name)
        weights = candidate if candidate.is_dir() else None
    directory = resolve_weights(spec, weights)
    if _is_transformers_dir(directory):
        try:
            model = CLIPModel.from_pretrained(str(directory), local_files_only=True)
        except Exception as exc:
            raise WeightsUnavailableError(f"model {spec.name}: cannot load weights from {directory}: {exc}") from None
        files, (mean, std) = _weight_files(directory), _pixel_stats(directory)
    else:
        model, preprocess = load_model(directory)
        files, mean, std = [p for p in [weight_file(directory)] if p], preprocess["mean"], preprocess["std"]
    if spec.image_mean and spec.image_std:  # pinned on the spec, as open_clip's pretrained table does
        mean, std = spec.image_mean, spec.image_std
    return HFCLIPEncoder(
        model,
        _tokenizer(directory),
        name=spec.name,
        pretraining=spec.pretraining,
        fingerprint=files_fingerprint(files),
        mean=mean,
        std=std,
        device=device,
    )
