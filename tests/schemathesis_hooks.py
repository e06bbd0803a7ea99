"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``): what a valid ``file`` part is.

The API declares its photo part as ``image/jpeg, image/png, ...``; these strategies make
schemathesis send real photos (small LFW-mini faces) as the positive cases, so that an
accepted schema-valid request is a real search, not random bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "src" / "clipface" / "data" / "bundled" / "lfw-mini"


def _photos(fmt: str) -> list[bytes]:
    out = []
    for path in sorted(FACES.glob("*/*_0001.jpg"))[:4]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((96, 96))
        buf = io.BytesIO()
        image.save(buf, fmt)
        out.append(buf.getvalue())
    return out


schemathesis.openapi.media_type("image/jpeg", st.sampled_from(_photos("JPEG")))
schemathesis.openapi.media_type("image/png", st.sampled_from(_photos("PNG")))
