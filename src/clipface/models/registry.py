"""Model registry: open_clip-style names (``ARCH:PRETRAINED``) mapped to published checkpoints.

Each entry names a loader (``module:function``) imported only when the model is created, so
listing models never imports torch, dlib or TensorFlow-free converters.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ModelNotFoundError
from .archs import ARCHS

if TYPE_CHECKING:  # pragma: no cover
    from .base import Encoder


#: Pixel statistics of open_clip's ``constants.py``: OpenAI's training set, and Inception's (0.5) that some LAION
#: checkpoints were trained with (open_clip's ``pretrained.py`` table; open_clip issue 204).
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its weights come from and what it is."""

    name: str
    family: str  # "clip" or "face"
    loader: str  # "module:function" taking (spec, weights, device, **kw) -> Encoder
    description: str
    pretraining: str = "unknown"
    hf_id: str | None = None
    arch: str | None = None
    pretrained: str | None = None
    image_size: int | None = None
    embed_dim: int | None = None
    approx_params_m: float | None = None
    is_test: bool = False
    #: Cosine threshold for "same person" at FAR 1e-3 on LFW's 6,000 pairs, from our own run, and where it comes from.
    verify_threshold: float | None = None
    verify_threshold_source: str = ""
    #: The checkpoint's image normalisation as open_clip's pretrained table gives it; it wins over whatever a
    #: ``preprocessor_config.json`` says (``None``: the file's, else OpenAI's). Every registered CLIP resizes
    #: the shorter side bicubically and centre-crops, as open_clip's default ``resize_mode="shortest"``.
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def load_fn(self) -> Callable[..., Encoder]:
        module, fn = self.loader.split(":")
        return getattr(importlib.import_module(module), fn)

    def availability(self) -> tuple[bool, str]:
        """Whether the model can be created on this machine now, and why not."""
        module, fn = self.loader.split(":")
        mod = importlib.import_module(module)
        check = getattr(mod, "availability", None)
        if check is None:
            return True, "ok"
        return check(self)


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ModelSpec, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Add ``spec`` to the registry (later registrations of the same name replace earlier ones)."""
    _REGISTRY[spec.name] = spec
    for alias in aliases:
        _ALIASES[alias.lower()] = spec.name
    return spec


def list_models(include_test: bool = True) -> list[ModelSpec]:
    """All registered models, real ones first."""
    specs = [s for s in _REGISTRY.values() if include_test or not s.is_test]
    return sorted(specs, key=lambda s: (s.is_test, s.family != "clip", s.name))


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name`` (case-insensitive; aliases and ``hf:ORG/NAME`` accepted)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    key = name.lower()
    for n in _REGISTRY:
        if n.lower() == key:
            return _REGISTRY[n]
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    if name.startswith("hf:") and "/" in name:
        hf_id = name[3:]
        return ModelSpec(
            name=name,
            family="clip",
            loader="clipface.models.clip_hf:load",
            description=f"CLIP checkpoint {hf_id} from the Hugging Face hub",
            hf_id=hf_id,
        )
    close = difflib.get_close_matches(name, list(_REGISTRY) + list(_ALIASES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}{hint} (see `clipface models`; any Hugging Face CLIP can be named hf:ORG/NAME)"
    )


#: Model sets of ``clipface run --models`` (``default`` also takes every installed face recogniser).
PRESETS: dict[str, tuple[str, ...]] = {
    # about 1.2 GB of weights: the two ViT-B/32 checkpoints, OpenAI's and LAION's (0.6 GB each)
    "default": ("ViT-B-32:openai", "ViT-B-32:laion2b_s34b_b79k"),
    # the paper's nine (Bhat and Jain, 2023): OpenAI B/32 to L/14-336, LAION B/32 to bigG/14
    "paper": (
        "ViT-B-32:openai",
        "ViT-B-16:openai",
        "ViT-L-14:openai",
        "ViT-L-14-336:openai",
        "ViT-B-32:laion2b_s34b_b79k",
        "ViT-L-14:laion2b_s32b_b82k",
        "ViT-H-14:laion2b_s32b_b79k",
        "ViT-g-14:laion2b_s12b_b42k",
        "ViT-bigG-14:laion2b_s39b_b160k",
    ),
}


def resolve_models(specs: Sequence[str], include_test: bool = False) -> list[str]:
    """Model names from presets (``default``, ``paper``, ``all``) and names, comma-separated or repeated, in order.

    ``default`` and ``all`` include every registered face recogniser (``all``: every real model);
    ``include_test`` adds the random-weight test model. Unknown names are
    :class:`~clipface.errors.ModelNotFoundError`.
    """
    out: list[str] = []
    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part == "all":
                names = [s.name for s in list_models(include_test=False)]
            elif part in PRESETS:
                names = [*PRESETS[part], *(s.name for s in list_models(include_test=False) if s.family == "face")]
                names = names if part == "default" else list(PRESETS[part])
            else:
                names = [get_spec(part).name]
            out += [n for n in names if n not in out]
    if include_test:
        out += [s.name for s in list_models() if s.is_test and s.name not in out]
    return out


def check_models(names: Sequence[str]) -> None:
    """Raise :class:`~clipface.errors.ModelNotFoundError` for the first unknown name (before any work)."""
    for name in names:
        get_spec(name)


def models_table() -> list[dict[str, Any]]:
    """One row per registered model: name, family, size, data, and whether it can run here."""
    rows = []
    for spec in list_models():
        try:
            ok, reason = spec.availability()
        except Exception as exc:  # a broken optional backend must not hide the other models
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "is_test": spec.is_test,
                "params": f"{spec.approx_params_m:g}M" if spec.approx_params_m else "?",
                "pretraining": spec.pretraining,
                "hf_id": spec.hf_id,
                "available": ok,
                "reason": reason,
                "description": spec.description,
            }
        )
    return rows


def create_encoder(
    name: str,
    weights: str | Path | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> Encoder:
    """Create the encoder registered as ``name``.

    ``weights`` is a local directory (for CLIP: a saved ``transformers`` model) that replaces
    the default source (the Hugging Face cache, or a download when online).
    """
    spec = get_spec(name)
    return spec.load_fn()(spec, weights=weights, device=device, **kwargs)


def _clip(
    arch: str, pretrained: str, hf_id: str, data: str, mean: tuple = OPENAI_MEAN, std: tuple = OPENAI_STD
) -> None:
    a = ARCHS[arch]
    register(
        ModelSpec(
            name=f"{arch}:{pretrained}",
            family="clip",
            loader="clipface.models.clip_hf:load",
            description=f"CLIP {arch} trained on {data}",
            pretraining=data,
            hf_id=hf_id,
            arch=arch,
            pretrained=pretrained,
            image_size=a.image_size,
            embed_dim=a.embed_dim,
            approx_params_m=a.params_m,
            image_mean=mean,
            image_std=std,
            extra={"quick_gelu": pretrained == "openai"},
        ),
        aliases=(hf_id,),
    )


_clip("ViT-B-32", "openai", "openai/clip-vit-base-patch32", "OpenAI WIT-400M")
_clip("ViT-B-16", "openai", "openai/clip-vit-base-patch16", "OpenAI WIT-400M")
_clip("ViT-L-14", "openai", "openai/clip-vit-large-patch14", "OpenAI WIT-400M")
_clip("ViT-L-14-336", "openai", "openai/clip-vit-large-patch14-336", "OpenAI WIT-400M")
_clip("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "LAION-2B (en)")
_clip("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "LAION-2B (en)")
_clip(
    "ViT-L-14",
    "laion2b_s32b_b82k",
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "LAION-2B (en)",
    INCEPTION_MEAN,
    INCEPTION_STD,
)
_clip("ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "LAION-2B (en)")
_clip("ViT-g-14", "laion2b_s12b_b42k", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", "LAION-2B (en)")
_clip("ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "LAION-2B (en)")

register(
    ModelSpec(
        name="test-tiny-random",
        family="clip",
        loader="clipface.models.tiny:load",
        description="TEST MODEL: tiny CLIP from a config with seeded random weights (plumbing only, never accuracy)",
        pretraining="none (random weights)",
        image_size=224,
        embed_dim=64,
        approx_params_m=3.4,
        is_test=True,
    )
)


def _face(
    name: str,
    loader: str,
    description: str,
    pretraining: str,
    size: tuple[int, int, float],
    lfw: tuple[float, float, float, str],
    alias: str,
    opt_out: dict[str, Any] | None = None,
) -> None:
    """Register a face recogniser: ``size`` is (input pixels, dimension, millions of parameters), ``lfw`` its
    threshold at FAR 1e-3 on LFW's pairs with the TAR and accuracy there and the result file it comes from,
    ``opt_out`` the face opt-out's calibrated rule and threshold where one was measured."""
    threshold, tar, accuracy, result = lfw
    register(
        ModelSpec(
            name=name,
            family="face",
            loader=loader,
            description=description,
            pretraining=pretraining,
            image_size=size[0],
            embed_dim=size[1],
            approx_params_m=size[2],
            verify_threshold=threshold,
            verify_threshold_source=(
                f"FAR 1e-3 on LFW deep-funneled pairs.txt (TAR {tar:.3f}, accuracy {accuracy:.4f}): `clipface eval "
                f"verify --model {name} --on-no-face center`, benchmarks/results/lfw-verify/{result}.json"
            ),
            extra={"opt_out": opt_out} if opt_out else {},
        ),
        aliases=(alias,),
    )


_face(
    "dlib",
    "clipface.models.dlib_torch.encoder:load",
    "dlib ResNet-34 face recogniser (dlib_face_recognition_resnet_model_v1) in PyTorch, 5-point alignment "
    "(--backend dlib: dlib's own network)",
    "about 3M faces (FaceScrub, VGG-Face and web images), by Davis King",
    (150, 128, 5.6),
    (0.9223377569429646, 0.973, 0.9908, "dlib"),
    "dlib-resnet",
    opt_out={
        "rule": "mean",
        "threshold": 0.9102494120597839,
        "source": (
            "chosen on every half of 3 seeded splits of LFW's calibrating people (2,905 photos of opted-out people, "
            "9,000 of others) for a leak of 0.4%: there 0.38% leaked and 10.99% of others removed: "
            "benchmarks/results/opt_out_calibration.json"
        ),
        # the fused rule (clipface.index.fusion), served for an index built with --second-face-model facenet-casia
        "fused": {
            "with": "facenet-casia",
            "cohort_k": 100,
            "calibrations": [
                {"photos": 3, "threshold": 2.859762191772461},
                {"photos": 8, "threshold": 4.065341472625732},
            ],
            "source": (
                "chosen on every half of 3 seeded splits of LFW's calibrating people (20 opted out per half, 9,000 "
                "photos of others; each half normalised by a cohort of the other's people) for a leak of 0.4%: with "
                "3 enrolment photos a person 0.38% leaked and 2.21% of others removed (dlib's mean: 10.99%), with 8 "
                "0.39% and 0.24%: benchmarks/results/opt_out_calibration.json, opt_out_calibration-enrol8.json"
            ),
        },
    },
)
_face(
    "facenet-casia",
    "clipface.models.facenet.encoder:load",
    "FaceNet Inception-ResNet-v1 (release 20180408-102900), ported to PyTorch",
    "CASIA-WebFace",
    (160, 512, 23.5),
    (0.46031593778652313, 0.960, 0.9868, "facenet"),
    "facenet",
)
