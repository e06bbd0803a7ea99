"""Provenance: the versions of Python, clipface and its main dependencies that every ``results.json`` records."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

#: Distributions whose versions every ``results.json`` records.
MAIN_DEPENDENCIES = ("torch", "transformers", "numpy", "Pillow", "dlib-bin", "onnxruntime", "faiss-cpu", "protobuf")


def versions() -> dict[str, str]:
    """Versions of Python, clipface and its main dependencies (installed ones only)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("clipface", *MAIN_DEPENDENCIES):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
