"""open_clip's checkpoint layout, loaded as a ``transformers`` CLIPModel.

open_clip (``push_to_hf_hub.save_for_hf``; ``factory.create_model`` with ``local-dir:`` or ``hf-hub:``) keeps a
model as ``open_clip_config.json`` (``model_cfg``: the towers; ``preprocess_cfg``: mean, std, interpolation,
resize mode) beside ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``. It is the only layout of
many checkpoints (DataComp, DFN, MetaCLIP, fine-tuned models). Here the ``model_cfg`` of a plain ViT image and
text tower (``open_clip/model.py``: ``CLIPVisionCfg``, ``CLIPTextCfg``; QuickGELU or GELU) becomes a
``CLIPConfig`` and each tensor is mapped by name, with nothing left over on either side. Anything else
(timm or Hugging Face towers, layer scale, attention pooling, SigLIP's logit bias, CoCa) is refused in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WeightsUnavailableError
from .registry import OPENAI_MEAN, OPENAI_STD

if TYPE_CHECKING:  # pragma: no cover
    import torch

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
MAX_CONFIG_BYTES = 1 << 20

# Each config key this loader understands, with the values it can build (``None``: any value).
# A key absent from the table, or a value outside its set, is refused.
_TOP = {"embed_dim": None, "vision_cfg": None, "text_cfg": None, "quick_gelu": None, "custom_text": None,
        "init_logit_scale": None, "cast_dtype": None, "output_dict": None, "init_logit_bias": {None}}  # fmt: skip
_VISION = {"layers": None, "width": None, "head_width": None, "mlp_ratio": None, "patch_size": None,
           "image_size": None, "patch_dropout": None, "output_tokens": None, "pool_type": {"tok"},
           "pos_embed_type": {"learnable"}, "ls_init_value": {None}, "attentional_pool": {False},
           "no_ln_pre": {False}, "final_ln_after_pool": {False}, "global_average_pool": {False},
           "input_patchnorm": {False}, "act_kwargs": {None}, "norm_kwargs": {None}, "block_type": {None},
           "qk_norm": {False}, "scaled_cosine_attn": {False}, "scale_heads": {False},
           "scale_attn_inner": {False}, "scale_attn": {False}, "scale_fc": {False},
           "timm_model_name": {None}}  # fmt: skip
_TEXT = {"context_length": None, "vocab_size": {49408}, "width": None, "heads": None, "layers": None,
         "mlp_ratio": None, "pad_id": None, "eos_id": None, "output_tokens": None, "pool_type": {"argmax"},
         "proj_type": {"linear"}, "proj_bias": {False}, "ls_init_value": {None}, "embed_cls": {False},
         "no_causal_mask": {False}, "final_ln_after_pool": {False}, "act_kwargs": {None}, "norm_kwargs": {None},
         "block_type": {None}, "qk_norm": {False}, "scaled_cosine_attn": {False}, "scale_heads": {False},
         "scale_attn_inner": {False}, "scale_attn": {False}, "scale_fc": {False}, "hf_model_name": {None},
         "hf_tokenizer_name": {None}, "tokenizer_mode": {None}, "tokenizer_kwargs": {None}}  # fmt: skip
_PREPROCESS = {"mean": None, "std": None, "interpolation": {"bicubic"}, "resize_mode": {"shortest"},
               "size": None, "fill_color": None, "mode": {"RGB"}}  # fmt: skip


def is_open_clip_dir(directory: Path) -> bool:
    """Whether ``directory`` holds open_clip's config and one of its weight files."""
    return (directory / CONFIG_NAME).is_file() and weight_file(directory) is not None


def weight_file(directory: Path) -> Path | None:
    """The open_clip weight file in ``directory`` (safetensors first), if any."""
    return next((directory / n for n in WEIGHT_NAMES if (directory / n).is_file()), None)


def read_config(directory: Path) -> dict[str, Any]:
    """``open_clip_config.json`` of ``directory``, checked before any weight is read."""
    path = directory / CONFIG_NAME
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise WeightsUnavailableError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not an open_clip config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsUnavailableError(f"{path}: not valid JSON ({exc})") from None
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict):
        raise WeightsUnavailableError(f"{path}: no model_cfg object (not an open_clip config)")
    _check(path, "model_cfg", model_cfg, _TOP)
    for section, table in (("vision_cfg", _VISION), ("text_cfg", _TEXT)):
        if not isinstance(model_cfg.get(section), dict):
            raise WeightsUnavailableError(f"{path}: model_cfg.{section} is missing (not a CLIP config)")
        _check(path, f"model_cfg.{section}", model_cfg[section], table)
    if "multimodal_cfg" in model_cfg:
        raise WeightsUnavailableError(f"{path}: a CoCa model (model_cfg.multimodal_cfg); only CLIP loads here")
    preprocess = data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise WeightsUnavailableError(f"{path}: preprocess_cfg is not an object")
    _check(path, "preprocess_cfg", preprocess, _PREPROCESS)
    for key in ("mean", "std"):
        value = preprocess.get(key, [1.0] * 3)
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise WeightsUnavailableError(f"{path}: preprocess_cfg.{key} = {json.dumps(value)} is not three numbers")
        if key == "std" and min(value) <= 0:
            raise WeightsUnavailableError(f"{path}: preprocess_cfg.std = {json.dumps(value)} has a value <= 0")
    size = preprocess.get("size", model_cfg["vision_cfg"].get("image_size", 224))
    if _hashable(size) != _hashable(model_cfg["vision_cfg"].get("image_size", 224)) and size not in (
        [model_cfg["vision_cfg"].get("image_size", 224)] * 2,
    ):
        raise WeightsUnavailableError(f"{path}: preprocess_cfg.size = {json.dumps(size)} is not the model's image size")
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def _check(path: Path, where: str, cfg: dict[str, Any], table: dict[str, Any]) -> None:
    for key, value in cfg.items():
        if key not in table:
            raise WeightsUnavailableError(f"{path}: {where}.{key} is not a setting clipface can build")
        allowed = table[key]
        if allowed is not None and _hashable(value) not in allowed:
            raise WeightsUnavailableError(
                f"{path}: {where}.{key} = {json.dumps(value)} cannot be built (clipface builds "
                f"{' or '.join(json.dumps(a) for a in allowed)}: open_clip's plain ViT)"
            )


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _square(path: Path, name: str, value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise WeightsUnavailableError(f"{path}: vision_cfg.{name} = {list(value)} is not square")
        value = value[0]
    if not isinstance(value, int) or value < 1:
        raise WeightsUnavailableError(f"{path}: vision_cfg.{name} = {value!r} is not a positive integer")
    return value


def clip_config(directory: Path, model_cfg: dict[str, Any]) -> Any:
    """The ``transformers`` CLIPConfig of open_clip's ``model_cfg`` (defaults of ``CLIPVisionCfg``, ``CLIPTextCfg``)."""
    from transformers import CLIPConfig

    path = directory / CONFIG_NAME
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    v_width, v_head = int(vision.get("width", 768)), int(vision.get("head_width", 64))
    if isinstance(vision.get("layers", 12), (list, tuple)):
        raise WeightsUnavailableError(f"{path}: vision_cfg.layers is a list (a ModifiedResNet); only ViTs load here")
    if v_width % v_head:
        raise WeightsUnavailableError(f"{path}: vision_cfg.width {v_width} is not a multiple of head_width {v_head}")
    t_width = int(text.get("width", 512))
    vision_config = dict(
        hidden_size=v_width,
        intermediate_size=int(v_width * float(vision.get("mlp_ratio", 4.0))),
        num_hidden_layers=int(vision.get("layers", 12)),
        num_attention_heads=v_width // v_head,
        image_size=_square(path, "image_size", vision.get("image_size", 224)),
        patch_size=_square(path, "patch_size", vision.get("patch_size", 16)),
        hidden_act=act,
        layer_norm_eps=1e-5,
    )
    text_config = dict(
        vocab_size=int(text.get("vocab_size", 49408)),
        hidden_size=t_width,
        intermediate_size=int(t_width * float(text.get("mlp_ratio", 4.0))),
        num_hidden_layers=int(text.get("layers", 12)),
        num_attention_heads=int(text.get("heads", 8)),
        max_position_embeddings=int(text.get("context_length", 77)),
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,  # pooled at the first end token: open_clip's argmax over token ids
        pad_token_id=49407,
    )
    scale = float(model_cfg.get("init_logit_scale", math.log(1 / 0.07)))
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=int(model_cfg["embed_dim"]),
        logit_scale_init_value=scale,
    )


def _block_map(src: str, dst: str) -> list[tuple[str, str]]:
    return [
        (f"{src}.ln_1.weight", f"{dst}.layer_norm1.weight"),
        (f"{src}.ln_1.bias", f"{dst}.layer_norm1.bias"),
        (f"{src}.attn.out_proj.weight", f"{dst}.self_attn.out_proj.weight"),
        (f"{src}.attn.out_proj.bias", f"{dst}.self_attn.out_proj.bias"),
        (f"{src}.ln_2.weight", f"{dst}.layer_norm2.weight"),
        (f"{src}.ln_2.bias", f"{dst}.layer_norm2.bias"),
        (f"{src}.mlp.c_fc.weight", f"{dst}.mlp.fc1.weight"),
        (f"{src}.mlp.c_fc.bias", f"{dst}.mlp.fc1.bias"),
        (f"{src}.mlp.c_proj.weight", f"{dst}.mlp.fc2.weight"),
        (f"{src}.mlp.c_proj.bias", f"{dst}.mlp.fc2.bias"),
    ]


def convert_state_dict(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """open_clip's tensors under ``transformers``' names (``CLIP`` or ``CustomTextCLIP`` keys; ``module.`` dropped).

    ``in_proj`` (query, key and value stacked) is split in three; the projections, which open_clip
    applies as ``x @ proj``, are transposed into ``Linear`` weights. A tensor left unmapped is an error.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {(k[len("text.") :] if k.startswith("text.") else k): v for k, v in state.items()}
    pairs = [
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
        ("ln_final.weight", "text_model.final_layer_norm.weight"),
        ("ln_final.bias", "text_model.final_layer_norm.bias"),
        ("logit_scale", "logit_scale"),
    ]
    towers = (
        ("visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_config.num_hidden_layers),
        ("transformer.resblocks", "text_model.encoder.layers", config.text_config.num_hidden_layers),
    )
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for src_root, dst_root, layers in towers:
        for i in range(layers):
            src, dst = f"{src_root}.{i}", f"{dst_root}.{i}"
            pairs += _block_map(src, dst)
            for part in ("weight", "bias"):
                key = f"{src}.attn.in_proj_{part}"
                q, k, v = _take(state, key, used).chunk(3, dim=0)
                for name, t in (("q", q), ("k", k), ("v", v)):
                    out[f"{dst}.self_attn.{name}_proj.{part}"] = t.contiguous()
    for src_key, dst_key in pairs:
        out[dst_key] = _take(state, src_key, used)
    out["visual_projection.weight"] = _take(state, "visual.proj", used).t().contiguous()
    out["text_projection.weight"] = _take(state, "text_projection", used).t().contiguous()
    left = sorted(set(state) - used - {"attn_mask", "visual.attn_mask"})
    if left:
        raise KeyError(f"tensors clipface cannot place: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    return out


def _take(state: dict[str, torch.Tensor], key: str, used: set[str]) -> torch.Tensor:
    if key not in state:
        raise KeyError(f"tensor {key} is missing")
    used.add(key)
    return state[key]


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an open_clip weight file (``torch.load`` only with ``weights_only``; ``state_dict`` unwrapped)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path}: not a dictionary of tensors")
    return state


def load_model(directory: Path) -> tuple[Any, dict[str, Any]]:
    """The CLIPModel of an open_clip folder and its pixel statistics (``mean``, ``std``; open_clip's defaults)."""
    import torch
    from transformers import CLIPModel

    cfg = read_config(directory)
    config = clip_config(directory, cfg["model_cfg"])
    path = weight_file(directory)
    assert path is not None
    try:
        mapped = convert_state_dict(read_weights(path), config)
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise WeightsUnavailableError(f"{path}: {str(exc).strip(chr(39))} (for the model of {CONFIG_NAME})") from None
    mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
    with torch.device("meta"):
        model = CLIPModel(config)
    try:
        model.load_state_dict(mapped, strict=True, assign=True)
    except RuntimeError as exc:  # shapes that disagree with the config
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise WeightsUnavailableError(f"{path}: does not match {CONFIG_NAME}: {first[0].strip()}") from None
    for module in (model.vision_model.embeddings, model.text_model.embeddings):
        if getattr(module, "position_ids", None) is not None:  # a buffer outside the state dict
            n = module.position_embedding.weight.shape[0]
            module.register_buffer("position_ids", torch.arange(n).expand((1, -1)), persistent=False)
    preprocess = cfg["preprocess_cfg"]
    return model, {"mean": preprocess.get("mean", OPENAI_MEAN), "std": preprocess.get("std", OPENAI_STD)}
