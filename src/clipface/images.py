"""Safe image loading: every failure becomes an :class:`ImageError` with a one-line reason."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)
#: Largest image accepted by default, in pixels (about 8000 x 8000). Larger files are skipped.
DEFAULT_MAX_PIXELS = 64_000_000
#: Largest file accepted by default, in bytes.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has an image file extension (the content is checked later)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(path: Path, max_pixels: int, max_bytes: int) -> Image.Image:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(path, "empty file")
    if size > max_bytes:
        raise ImageError(path, f"file too large ({size / 2**20:.0f} MB > {max_bytes / 2**20:.0f} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:  # PIL refuses before we can read the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        mpx = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "decompression bomb"
        raise ImageError(path, f"image too large ({mpx} > {max_pixels / 1e6:.0f} Mpx)") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unrecognised file format)") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read image ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(path, f"image too large ({w}x{h} = {w * h / 1e6:.0f} Mpx > {max_pixels / 1e6:.0f} Mpx)")
    if w < 1 or h < 1:
        raise ImageError(path, f"degenerate image size {w}x{h}")
    return img


def probe_image(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[int, int]:
    """Read only the header of ``path``; return ``(width, height)`` or raise :class:`ImageError`."""
    img = _open(Path(path), max_pixels, max_bytes)
    try:
        return img.size
    finally:
        img.close()


def load_image(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Image.Image:
    """Decode ``path`` fully into an RGB image (EXIF orientation applied) or raise :class:`ImageError`.

    Truncated and corrupt files are detected here, since only a full decode reads all the data.
    """
    path = Path(path)
    img = _open(path, max_pixels, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower():
            raise ImageError(path, "truncated image (file ends before the image data)") from None
        raise ImageError(path, f"corrupt image ({msg})") from None
    finally:
        img.close()
    return rgb
