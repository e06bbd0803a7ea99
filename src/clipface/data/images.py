"""Safe image decoding, from a file or from bytes: every failure becomes an :class:`ImageError` with a one-line reason.

One decoder serves datasets, indexes, cloaks and the server. It refuses too many bytes or pixels
from the header, before decoding; applies the EXIF orientation; converts every mode to 8-bit RGB
(16-bit and 32-bit greyscale scaled by their real range rather than clipped, palettes and
transparency composited on white); and, given ``max_side``, decodes large images reduced (JPEG
draft mode scales by 1/2, 1/4 or 1/8 inside the decoder), so memory follows the size asked for,
not the size of the photo.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..files import file_sha256

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "as_image",
    "file_sha256",
    "is_image_path",
    "load_image",
    "probe_image",
    "to_rgb",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)
#: Largest image accepted by default, in pixels (about 8000 x 8000). Larger files are skipped.
DEFAULT_MAX_PIXELS = 64_000_000
#: Largest file accepted by default, in bytes.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024

#: A file path, or the bytes of an encoded image (an upload).
ImageSource = Union[str, Path, bytes]


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has an image file extension (the content is checked later)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _label(source: ImageSource) -> str:
    return "<uploaded image>" if isinstance(source, (bytes, bytearray)) else str(source)


def _open(source: ImageSource, max_pixels: int, max_bytes: int) -> Image.Image:
    label = _label(source)
    if isinstance(source, (bytes, bytearray)):
        size = len(source)
    else:
        try:
            size = Path(source).stat().st_size
        except OSError as exc:
            raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
        if not Path(source).is_file():
            raise ImageError(label, "not a file")
    if size == 0:
        raise ImageError(label, "empty file")
    if size > max_bytes:
        raise ImageError(label, f"file too large ({size / 2**20:.0f} MB > {max_bytes / 2**20:.0f} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Image.DecompressionBombError as exc:  # PIL refuses before we can read the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        mpx = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "decompression bomb"
        raise ImageError(label, f"image too large ({mpx} > {max_pixels / 1e6:.0f} Mpx)") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not an image (unrecognised file format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(label, f"cannot read image ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(label, f"image too large ({w}x{h} = {w * h / 1e6:.0f} Mpx > {max_pixels / 1e6:.0f} Mpx)")
    if w < 1 or h < 1:
        img.close()
        raise ImageError(label, f"degenerate image size {w}x{h}")
    return img


def probe_image(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[int, int]:
    """Read only the header of ``source``; return ``(width, height)`` or raise :class:`ImageError`."""
    img = _open(source, max_pixels, max_bytes)
    try:
        return img.size
    finally:
        img.close()


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode.

    16- and 32-bit greyscale (``I;16``, ``I``, ``F``) is scaled from its own range (0-65535 for
    16-bit) to 0-255: PIL's plain ``convert`` clips it, which turns most photos white.
    Transparent images are composited on white.
    """
    mode = img.mode
    if mode.startswith("I;16"):  # exact rounding in integers: 4 bytes a pixel instead of 8
        arr = np.asarray(img).astype(np.uint32)
        scaled16 = (arr * 255 + 32767) // 65535
        return Image.fromarray(scaled16.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode == "I" and arr.max(initial=0) <= 65535 else float(arr.max(initial=1))
        low = 0.0 if mode != "F" else float(arr.min(initial=0))
        scaled = np.clip((arr - low) * (255.0 / max(top - low, 1e-12)), 0, 255)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB") if mode != "RGB" else img


ORIENTATION = 0x0112
#: EXIF orientation -> the turn that shows the photo upright (as :func:`PIL.ImageOps.exif_transpose`).
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Modes whose values cannot be averaged (palette indices, bits): shrunk by picking pixels.
_PICK_MODES = ("P", "PA", "1")


def shrink(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` with its longer side at most ``max_side``: a box-filter ``reduce`` by a whole factor, then bilinear.

    Palette and 1-bit images are shrunk by picking pixels, and 16-bit greyscale (which
    ``reduce`` does not take) by resampling alone.
    """
    if max(img.size) <= max_side:
        return img
    if img.mode in _PICK_MODES:
        img.thumbnail((max_side, max_side), Image.NEAREST)
        return img
    if img.mode.startswith("I;16"):  # neither reduce nor thumbnail (which reduces) takes 16-bit modes
        scale = max_side / max(img.size)
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    factor = max(img.size) // max_side
    if factor > 1:
        img = img.reduce(factor)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img


def load_image(
    source: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
) -> Image.Image:
    """Decode ``source`` (a path or encoded bytes) fully into an RGB image, EXIF orientation applied.

    Truncated and corrupt files are detected here, since only a full decode reads all the data.
    ``max_side``: the longer side of the result is at most this (JPEGs are decoded reduced by
    the decoder itself; other formats are reduced right after decoding).
    """
    label = _label(source)
    opened = img = _open(source, max_pixels, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if max_side is not None and img.format == "JPEG" and max(img.size) > max_side:
                img.draft("RGB", (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8 scale, at least max_side
            img.load()
            if max_side is None:
                img = ImageOps.exif_transpose(img) or img
            else:  # shrink first, then turn the small copy (turning the full frame would copy it)
                turn = _TURNS.get(img.getexif().get(ORIENTATION, 1))
                img = shrink(img, max_side)
                img = img.transpose(turn) if turn is not None else img
            rgb = to_rgb(img)
            if rgb is opened:  # closing the file below would release its pixels
                rgb = rgb.copy()
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower():
            raise ImageError(label, "truncated image (file ends before the image data)") from None
        raise ImageError(label, f"corrupt image ({msg})") from None
    finally:
        opened.close()
    return rgb


def as_image(image: ImageSource | Image.Image | np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes, a PIL image or an array.

    Arrays are ``H x W x 3`` RGB (or ``H x W`` greyscale), ``uint8`` or floats in [0, 1]. A PIL
    image keeps its ``filename``, so errors about it name the file.
    """
    if isinstance(image, Image.Image):
        rgb = to_rgb(image)
        if getattr(image, "filename", "") and not getattr(rgb, "filename", ""):
            rgb.filename = image.filename  # PIL keeps no filename on converted copies
        return rgb
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))) or arr.size == 0:
            raise ImageError("<array>", f"expected an H x W x 3 (or H x W) image array, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                arr = np.clip(np.rint(np.nan_to_num(arr) * 255.0), 0, 255)
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageError("<array>", f"image too large ({arr.shape[1]}x{arr.shape[0]} > {max_pixels / 1e6:.0f} Mpx)")
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
    if isinstance(image, (str, Path, bytes, bytearray)):
        return load_image(image, max_pixels=max_pixels)
    raise ImageError(repr(type(image).__name__), "not an image: give a path, bytes, a PIL image or an array")
