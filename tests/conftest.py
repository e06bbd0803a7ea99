"""Shared fixtures: paths to the shared datasets, a tiny CLIP, a private cache, bad image files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LFW_MINI = SHARED / "datasets" / "lfw-mini"
LFW = SHARED / "datasets" / "lfw-deepfunneled"


def need(path: Path) -> Path:
    """Skip the test when a shared dataset is not beside the repository."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own clipface cache and never touches the network."""
    monkeypatch.setenv("CLIPFACE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny():
    import clipface

    return clipface.create_encoder("test-tiny-random")


def write_huge_png(path: Path, width: int, height: int) -> None:
    """A valid 1-bit PNG of ``width x height`` pixels, streamed so it costs little memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Two people with good images, plus a truncated JPEG, a text file named .jpg and a 20000x20000 PNG."""
    root = tmp_path / "bad"
    rng = np.random.default_rng(0)
    for person in ("Alice_Smith", "Bob_Jones"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / person / f"{person}_{i:04d}.jpg", quality=90)
    good = (root / "Alice_Smith" / "Alice_Smith_0000.jpg").read_bytes()
    (root / "Alice_Smith" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "Bob_Jones" / "notes.jpg").write_text("this is not an image\n")
    write_huge_png(root / "Bob_Jones" / "huge.png", 20000, 20000)
    return root
