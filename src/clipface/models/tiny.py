"""``test-tiny-random``: a tiny CLIP built from a config with seeded random weights.

It runs the whole pipeline in seconds on a CPU and proves plumbing, shapes and metrics; its
scores mean nothing, and every report marks it as a test model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clip_hf import HFCLIPEncoder
from .tokenizer import clip_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from .registry import ModelSpec


def tiny_config() -> Any:
    """A ``transformers`` CLIPConfig of a 2-layer, 64-wide CLIP with CLIP's real vocabulary."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=224, patch_size=32
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def load(
    spec: ModelSpec, weights: str | Path | None = None, device: str = "cpu", seed: int = 0, **_: Any
) -> HFCLIPEncoder:
    """Build the tiny CLIP with weights drawn from ``seed`` (``weights`` is ignored)."""
    import torch
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_config())
    return HFCLIPEncoder(
        model,
        clip_tokenizer(),
        name=spec.name,
        pretraining=spec.pretraining,
        is_test_model=True,
        device=device,
    )


def availability(spec: ModelSpec) -> tuple[bool, str]:
    return True, "built from a config (random weights, test model)"
