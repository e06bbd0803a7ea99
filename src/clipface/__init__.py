"""clipface: measure how well CLIP models and CLIP search engines recognise faces."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ClipfaceError  # noqa: E402
from .registry import create_encoder, get_spec, list_models  # noqa: E402

__all__ = ["ClipfaceError", "create_encoder", "get_spec", "list_models", "__version__"]
