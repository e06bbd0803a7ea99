"""clipface: measure how well CLIP models and CLIP search engines recognise faces, and how well cloaks protect.

The public API, imported lazily (``import clipface`` loads no model library):

* models: :func:`create_encoder`, :func:`list_models`, :func:`load_encoder`, :class:`RunOptions`;
* data and embeddings: :class:`FaceDataset`, :class:`EmbeddingCache`;
* one-call functions (as deepface's): :func:`represent`, :func:`verify`, :func:`find`;
* tasks: :func:`zeroshot`, :func:`verification`, :func:`gallery`, :func:`evaluate`;
* cloaking: :class:`CloakSettings`, :func:`cloak_folder`, :func:`cloak_images`, :func:`evaluate_protection`;
* search: :class:`FaceIndex`, :func:`audit_person`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> ``module:attribute`` it comes from.
_EXPORTS = {
    "ClipfaceError": "clipface.errors:ClipfaceError",
    "NoFaceError": "clipface.errors:NoFaceError",
    "UsageError": "clipface.errors:UsageError",
    "create_encoder": "clipface.models.registry:create_encoder",
    "get_spec": "clipface.models.registry:get_spec",
    "list_models": "clipface.models.registry:list_models",
    "load_encoder": "clipface.models.runtime:load_encoder",
    "LoadOptions": "clipface.models.runtime:LoadOptions",
    "RunOptions": "clipface.embed.options:RunOptions",
    "FaceDataset": "clipface.data.dataset:FaceDataset",
    "EmbeddingCache": "clipface.embed.cache:EmbeddingCache",
    "embed_images": "clipface.embed.pipeline:embed_images",
    "represent": "clipface.facade:represent",
    "verify": "clipface.facade:verify",
    "find": "clipface.facade:find",
    "zeroshot": "clipface.eval.zeroshot:zeroshot",
    "verification": "clipface.eval.verification:verification",
    "gallery": "clipface.eval.gallery:gallery",
    "evaluate": "clipface.jobs:evaluate",
    "run_main": "clipface.jobs:run_main",
    "CloakSettings": "clipface.cloak.settings:CloakSettings",
    "cloak_folder": "clipface.jobs:cloak_folder",
    "cloak_images": "clipface.cloak.run:cloak_images",
    "evaluate_protection": "clipface.eval.protection:evaluate_protection",
    "evaluate_poisoning": "clipface.eval.poisoning:evaluate_poisoning",
    "FaceIndex": "clipface.index.store:FaceIndex",
    "audit_person": "clipface.audit.person:audit_person",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'clipface' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
