"""What each registered CLIP architecture is, apart from where its weights come from (open_clip's model configs).

Widths, depths, heads, MLP sizes, patch and image sizes are those of open_clip's
``src/open_clip/model_configs/{ARCH}.json`` (heads = width / head_width, 64 unless given; MLP =
int(width x mlp_ratio)); ViT-H-14 and ViT-g-14 have 24 text layers, as their released checkpoints
and open_clip's ``docs/model_profile.csv`` (354.03 M text parameters) show. OpenAI's weights use
QuickGELU, LAION's GELU. Parameter counts in millions are open_clip's ``model_profile.csv``.
:func:`clip_config` turns an entry into the ``transformers`` ``CLIPConfig`` its checkpoint has,
so a model of the exact published size can be built here with random weights (``benchmarks/zoo_cost.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ARCHS", "ClipArch", "clip_config"]


@dataclass(frozen=True)
class ClipArch:
    """One CLIP architecture: the image tower (ViT), the text tower, the joint embedding."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    text_width: int
    text_heads: int
    text_layers: int
    params_m: float  # open_clip docs/model_profile.csv
    gflops_image: float
    gflops_text: float

    @property
    def text_mlp(self) -> int:
        return 4 * self.text_width


ARCHS: dict[str, ClipArch] = {
    "ViT-B-32": ClipArch(512, 224, 32, 768, 12, 12, 3072, 512, 8, 12, 151.28, 8.82, 5.96),
    "ViT-B-16": ClipArch(512, 224, 16, 768, 12, 12, 3072, 512, 8, 12, 149.62, 35.13, 5.96),
    "ViT-L-14": ClipArch(768, 224, 14, 1024, 24, 16, 4096, 768, 12, 12, 427.62, 162.03, 13.3),
    "ViT-L-14-336": ClipArch(768, 336, 14, 1024, 24, 16, 4096, 768, 12, 12, 427.94, 381.92, 13.3),
    "ViT-H-14": ClipArch(1024, 224, 14, 1280, 32, 16, 5120, 1024, 16, 24, 986.11, 334.59, 47.09),
    "ViT-g-14": ClipArch(1024, 224, 14, 1408, 40, 16, 6144, 1024, 16, 24, 1366.68, 534.06, 47.09),
    "ViT-bigG-14": ClipArch(1280, 224, 14, 1664, 48, 16, 8192, 1280, 20, 32, 2539.57, 967.5, 97.86),
}


def clip_config(arch: str, quick_gelu: bool) -> Any:
    """The ``transformers`` ``CLIPConfig`` of ``arch`` (QuickGELU for OpenAI's weights, GELU for LAION's)."""
    from transformers import CLIPConfig

    a = ARCHS[arch]
    act = "quick_gelu" if quick_gelu else "gelu"
    text = dict(
        vocab_size=49408,
        hidden_size=a.text_width,
        intermediate_size=a.text_mlp,
        num_hidden_layers=a.text_layers,
        num_attention_heads=a.text_heads,
        max_position_embeddings=77,
        projection_dim=a.embed_dim,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        hidden_size=a.vision_width,
        intermediate_size=a.vision_mlp,
        num_hidden_layers=a.vision_layers,
        num_attention_heads=a.vision_heads,
        image_size=a.image_size,
        patch_size=a.patch_size,
        projection_dim=a.embed_dim,
        hidden_act=act,
        layer_norm_eps=1e-5,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=a.embed_dim, logit_scale_init_value=2.6592)
