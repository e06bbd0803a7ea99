"""Shared fixtures: dataset paths, a tiny CLIP, private caches, bad image files.

Tests are hermetic: before anything imports ``huggingface_hub`` (whose cache location is fixed at
import), the Hugging Face cache and ``$CLIPFACE_WEIGHTS_DIR`` point at empty folders of this
session, so no test passes or fails because weights happen to be cached on the machine; every
test also gets its own clipface cache, and the hub is offline.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

_EMPTY = Path(tempfile.mkdtemp(prefix="clipface-tests-"))
for _var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
    os.environ[_var] = str(_EMPTY / "hf" / ("hub" if _var != "HF_HOME" else ""))
os.environ["CLIPFACE_WEIGHTS_DIR"] = str(_EMPTY / "weights")
os.environ["HF_HUB_OFFLINE"] = "1"
assert "huggingface_hub" not in sys.modules, "conftest must run before huggingface_hub is imported"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

try:  # the same examples on every machine and every run: derandomised, no example database carried over
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("clipface", derandomize=True, database=None, deadline=None)
    _hypothesis_settings.load_profile("clipface")
except ImportError:  # hypothesis is a test extra; the tests that use it import it themselves
    pass

REPO = Path(__file__).resolve().parents[1]
#: The 10-person LFW subset: the copy bundled in the package (the same files as ../shared/datasets/lfw-mini).
LFW_MINI = REPO / "src" / "clipface" / "data" / "bundled" / "lfw-mini"


def need(path: Path) -> Path:
    """The bundled data at ``path``; the test is skipped (not failed) if a trimmed checkout lacks it."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own clipface cache, an empty Hugging Face cache and weights folder, and no network."""
    monkeypatch.setenv("CLIPFACE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLIPFACE_WEIGHTS_DIR", str(_EMPTY / "weights"))
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        assert Path(constants.HF_HUB_CACHE).is_relative_to(_EMPTY), "the Hugging Face cache must be the tests' own"


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a busy 2-core machine more threads spin and run several times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tony Blair's photos held out of the index: a hit is another photo of him, never the query itself."""
    folder = tmp_path_factory.mktemp("probes") / "Tony_Blair"
    folder.mkdir()
    from .audit_people import PROBES

    for name in PROBES:
        shutil.copy(LFW_MINI / "Tony_Blair" / name, folder)
    return folder
