"""dlib's ``get_face_chip`` as a differentiable PyTorch operation.

``get_face_chip(img, shape, size, padding)`` is ``extract_image_chip(img,
get_face_chip_details(shape, size, padding))`` (``dlib/image_transforms/interpolation.h``): a
similarity transform (scale, rotation, translation) from the 5 landmarks onto a template,
expressed as a rotated rectangle (``chip_details``: ``rect``, ``angle``, ``rows``, ``cols``).
``extract_image_chips`` then

* crops the bounding box of the rotated rectangle grown by a border (``grow``) to the image, and,
  where the rectangle is more than twice the chip's side, builds ``pyramid_down<2>`` levels of
  that crop (a separable ``[1 4 6 4 1] / 16`` filter and every other row and column, "valid" at
  the edges) and takes the coarsest level still larger than the chip;
* maps the chip's corners ``(0, 0)``, ``(cols - 1, 0)``, ``(0, rows - 1)`` onto the rectangle's
  corners in that level (rotated about its centre; ``pyramid_down<2>::point_down`` is
  ``p / 2 - (1.25, 0.75)``) and samples bilinearly at pixel centres, black outside the image.

:func:`chip_geometry` repeats that arithmetic in double precision and :func:`warp_chip` applies it
to ``(N, 3, H, W)`` pixels with ``conv2d`` and ``grid_sample``, so gradients reach the image.
Only dlib's rounding of each level and of the chip to 8 bits is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Rect = tuple[float, float, float, float]  # left, top, right, bottom (dlib drectangle, inclusive)


@dataclass(frozen=True)
class ChipGeometry:
    """Where a chip comes from: the integer crop the pyramid is built on, its depth, the chip -> level affine map."""

    origin: tuple[int, int, int, int]  # left, top, right, bottom (inclusive) of the crop, in source pixels
    levels: int  # pyramid_down passes applied to the crop (0: sample the crop itself)
    warp: tuple[float, float, float, float, float, float]  # x = a c + b r + tx, y = d c + e r + ty (level pixels)
    rows: int
    cols: int
    footprint: tuple[int, int, int, int]  # bounding box of the rotated rectangle, clipped to the image


def _rot(cx: float, cy: float, x: float, y: float, angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return (c * (x - cx) - s * (y - cy) + cx, s * (x - cx) + c * (y - cy) + cy)


def _area(r: Rect) -> float:
    return max(0.0, r[2] - r[0] + 1) * max(0.0, r[3] - r[1] + 1)


def _down(r: Rect) -> Rect:  # pyramid_down<2>::rect_down
    return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)


def chip_geometry(rect: Rect, angle: float, rows: int, cols: int, width: int, height: int) -> ChipGeometry:
    """``extract_image_chips``' arithmetic for one chip of a ``width x height`` image."""
    size = rows * cols
    depth, grow, r = 0, 2.0, _down(rect)
    while _area(r) > size:
        r, depth, grow = _down(r), depth + 1, grow * 2 + 2
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    corners = [_rot(cx, cy, x, y, angle) for x, y in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]))]
    corners.append(_rot(cx, cy, rect[2], rect[3], angle))
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    grown = (max(min(xs) - grow, 0.0), max(min(ys) - grow, 0.0), min(max(xs) + grow, width - 1.0))
    grown = (*grown, min(max(ys) + grow, height - 1.0))
    origin = tuple(int(math.floor(v + 0.5)) for v in grown)  # drectangle -> rectangle: std::lround
    local: Rect = (rect[0] - origin[0], rect[1] - origin[1], rect[2] - origin[0], rect[3] - origin[1])
    levels = 0
    while _area(_down(local)) > size:
        local, levels = _down(local), levels + 1
    lcx, lcy = (local[0] + local[2]) / 2, (local[1] + local[3]) / 2
    tl = _rot(lcx, lcy, local[0], local[1], angle)
    tr = _rot(lcx, lcy, local[2], local[1], angle)
    bl = _rot(lcx, lcy, local[0], local[3], angle)
    a, d = (tr[0] - tl[0]) / max(cols - 1, 1), (tr[1] - tl[1]) / max(cols - 1, 1)
    b, e = (bl[0] - tl[0]) / max(rows - 1, 1), (bl[1] - tl[1]) / max(rows - 1, 1)
    footprint = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(width, math.ceil(max(xs)) + 1),
        min(height, math.ceil(max(ys)) + 1),
    )
    return ChipGeometry(origin, levels, (a, b, tl[0], d, e, tl[1]), rows, cols, footprint)  # type: ignore[arg-type]


def geometry_of(details: Any, width: int, height: int) -> ChipGeometry:
    """:func:`chip_geometry` of a ``dlib.chip_details``."""
    r = details.rect
    return chip_geometry(
        (r.left(), r.top(), r.right(), r.bottom()), details.angle, details.rows, details.cols, width, height
    )


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """One ``pyramid_down<2>`` level of ``(N, C, H, W)`` pixels: ``[1 4 6 4 1] / 16`` both ways, stride 2, valid."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), stride=(1, 2), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), stride=(2, 1), groups=c)


def warp_chip(x: torch.Tensor, g: ChipGeometry) -> torch.Tensor:
    """``(N, 3, H, W)`` pixels to the ``(N, 3, rows, cols)`` chip described by ``g`` (differentiable)."""
    left, top, right, bottom = g.origin
    x = x[..., top : bottom + 1, left : right + 1]
    for _ in range(g.levels):
        x = pyramid_down(x)
    h, w = x.shape[-2:]
    a, b, tx, d, e, ty = g.warp
    rows = torch.arange(g.rows, dtype=x.dtype, device=x.device).view(-1, 1)
    cols = torch.arange(g.cols, dtype=x.dtype, device=x.device).view(1, -1)
    px, py = a * cols + b * rows + tx, d * cols + e * rows + ty
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], dim=-1)
    grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def jitter_geometry(g: ChipGeometry, dx: float, dy: float, ds: float) -> ChipGeometry:
    """``g`` moved by ``(dx, dy)`` source pixels and grown by ``ds`` pixels of its side (about the chip's centre)."""
    a, b, tx, d, e, ty = g.warp
    f = 2.0**g.levels
    side = math.hypot(a, d) * max(g.cols - 1, 1) * f
    s = max(0.5, 1.0 + ds / max(side, 1.0))
    cc, cr = (g.cols - 1) / 2, (g.rows - 1) / 2
    cx, cy = a * cc + b * cr + tx, d * cc + e * cr + ty
    warp = (s * a, s * b, cx - s * (cx - tx) + dx / f, s * d, s * e, cy - s * (cy - ty) + dy / f)
    return ChipGeometry(g.origin, g.levels, warp, g.rows, g.cols, g.footprint)
