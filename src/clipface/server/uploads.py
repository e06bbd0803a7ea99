"""Uploaded photos, decoded within a memory bound whatever the number of clients.

A small file can hold a huge image: a 49 kB single-colour PNG of 7000 x 5500 pixels decodes
to 38.5 Mpx, and Pillow decodes a PNG, WebP or TIFF frame whole (3 to 16 bytes a pixel, by
mode) before it can be shrunk. So:

* the header is read first: images over ``max_pixels`` are refused (413) before decoding;
* a :class:`PixelBudget` caps the pixels being decoded at once across all requests, uploads
  and thumbnails of indexed images alike (:data:`DECODE_BUDGET`): ordinary photos decode side
  by side, large ones take turns;
* every image is shrunk to :data:`QUERY_MAX_SIDE` on its longer side while decoding (JPEG
  draft mode decodes at 1/2, 1/4 or 1/8 scale inside the decoder) or right after;
* the C heap hands large freed buffers back to the system: allocations over
  :data:`MMAP_THRESHOLD` bytes are memory-mapped (``mallopt``, glibc only) and the heap is
  trimmed after each large decode, so a burst of big uploads leaves no gigabytes behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.images import load_image, probe_image
from ..errors import ImageError

__all__ = ["DECODE_BUDGET", "QUERY_MAX_SIDE", "PixelBudget", "decode_bounded", "decode_upload", "limit_heap"]

#: Longer side of a query photo after decoding (a face needs far fewer pixels than a 40 Mpx photo).
QUERY_MAX_SIDE = 2048
#: Pixels decoded at once by the whole server (one 40 Mpx image with room for small photos beside it).
DECODE_BUDGET = 48_000_000
#: Heap allocations above this many bytes are memory-mapped, so that freeing them returns them to the system.
MMAP_THRESHOLD = 1 << 20
MMAP_ENV = "CLIPFACE_MMAP_THRESHOLD"
#: Decodes of more pixels than this are followed by a heap trim.
TRIM_AFTER_PIXELS = 4_000_000

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc


def limit_heap() -> bool:
    """Memory-map large allocations from now on (fixed threshold, no growth); whether it was set (glibc).

    ``$CLIPFACE_MMAP_THRESHOLD`` (bytes) overrides :data:`MMAP_THRESHOLD`; ``0`` leaves glibc's own
    (growing) threshold, for comparison.
    """
    threshold = int(os.environ.get(MMAP_ENV) or MMAP_THRESHOLD)
    lib = _glibc()
    return bool(lib) and threshold > 0 and lib.mallopt(_M_MMAP_THRESHOLD, threshold) == 1


def trim_heap() -> None:
    """Return the heap's free memory to the system (glibc; elsewhere nothing)."""
    lib = _glibc()
    if lib:
        lib.malloc_trim(0)


class PixelBudget:
    """A counting semaphore over pixels: :meth:`take` waits until ``n`` more pixels fit in the budget.

    A request larger than the whole budget waits until nothing else is being decoded, then runs
    alone. Whoever fits goes first (no queue): an ordinary photo never waits behind a line of
    pixel bombs, and a large image gets in as soon as the small ones in flight (milliseconds
    each) leave room.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = int(pixels)
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    def take(self, n: int) -> int:
        n = max(1, min(int(n), self.pixels))
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + n <= self.pixels)
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        return n

    def give(self, n: int) -> None:
        with self._cond:
            self.in_use -= n
            self._cond.notify_all()


def decode_bounded(
    source: bytes | Path, budget: PixelBudget, max_side: int, max_pixels: int, max_bytes: int
) -> Image.Image:
    """An RGB image of at most ``max_side`` a side, decoded under ``budget``; or :class:`ImageError`."""
    width, height = probe_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    n = budget.take(width * height)
    try:
        return load_image(source, max_pixels=max_pixels, max_bytes=max_bytes, max_side=max_side)
    finally:
        budget.give(n)
        if width * height > TRIM_AFTER_PIXELS:
            trim_heap()


def decode_upload(data: bytes, max_pixels: int, max_bytes: int, budget: PixelBudget) -> Image.Image:
    """A query photo from an upload's bytes, at most :data:`QUERY_MAX_SIDE` a side."""
    return decode_bounded(data, budget, QUERY_MAX_SIDE, max_pixels, max_bytes)


def is_too_large(exc: ImageError) -> bool:
    """Whether a decoding error is about size (HTTP 413) rather than content (422)."""
    return exc.reason.startswith(("image too large", "file too large"))
