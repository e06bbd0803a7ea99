"""What each surrogate sees: a differentiable copy of an encoder's own face front end for one image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ClipfaceError, NoFaceError
from ..models.align import CenterCropAligner, CenterFallback, DlibAligner, MtcnnAligner, image_label
from ..models.base import Encoder
from .chip import ChipGeometry, geometry_of, jitter_geometry, warp_chip

__all__ = ["Box", "VIEW_TOLERANCE", "View", "to_tensor", "view_for"]

VIEW_TOLERANCE = 3.0
Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class View:
    """A differentiable copy of one encoder's front end for one image.

    With ``resized`` unset: crop ``box``, resize it to ``size`` (bilinear, antialiased: PIL's
    resize, as MTCNN's FaceNet crop). With ``resized = (w, h)``: resize the image to it (bicubic,
    antialiased) and crop ``size`` pixels at ``offset`` (CLIP's centre crop). With ``chip`` set:
    dlib's ``get_face_chip``, a similarity warp from the 5 landmarks (:mod:`clipface.cloak.chip`).
    ``box`` is in every case the part of the image the model sees.
    """

    box: Box
    size: int
    resized: tuple[int, int] | None = None
    offset: tuple[int, int] = (0, 0)
    chip: ChipGeometry | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` pixels in [0, 1] to the model's ``(N, 3, size, size)`` input."""
        s = self.size
        if self.chip is not None:
            return warp_chip(x, self.chip)
        if self.resized is None:
            left, top, right, bottom = self.box
            return F.interpolate(
                x[..., top:bottom, left:right], size=(s, s), mode="bilinear", align_corners=False, antialias=True
            )
        w, h = self.resized
        if (w, h) != (x.shape[-1], x.shape[-2]):
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        left, top = self.offset
        return x[..., top : top + s, left : left + s]

    def jittered(self, jitter: int, generator: torch.Generator, width: int, height: int) -> View:
        """A box view with each edge moved by up to ``jitter`` pixels at random (centre crops stay as they are).

        A chip view is moved by up to ``jitter`` pixels each way and grown or shrunk by up to ``jitter`` pixels.
        """
        if self.resized is not None or jitter == 0:
            return self
        dl, dt, dr, db = torch.randint(-jitter, jitter + 1, (4,), generator=generator).tolist()
        if self.chip is not None:
            return View(box=self.box, size=self.size, chip=jitter_geometry(self.chip, dl, dt, dr))
        left, top = min(max(0, self.box[0] + dl), width - 1), min(max(0, self.box[1] + dt), height - 1)
        right, bottom = max(min(width, self.box[2] + dr), left + 1), max(min(height, self.box[3] + db), top + 1)
        return View(box=(left, top, right, bottom), size=self.size)


def _center_view(width: int, height: int, size: int) -> View:
    """:func:`~clipface.models.base.resize_center_crop` as a :class:`View`."""
    nw, nh = width, height
    if (width, height) != (size, size):
        nw, nh = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    box = (
        max(0, math.floor(left * width / nw)),
        max(0, math.floor(top * height / nh)),
        min(width, math.ceil((left + size) * width / nw)),
        min(height, math.ceil((top + size) * height / nh)),
    )
    return View(box=box, size=size, resized=(nw, nh), offset=(left, top))


def _mtcnn_view(aligner: MtcnnAligner, image: Image.Image, size: int) -> View:
    """The box of :meth:`MtcnnAligner.crop`."""
    return View(box=aligner.box(image), size=size)


def _aligned_view(aligner: Any, image: Image.Image, size: int) -> View:
    if aligner is None or isinstance(aligner, CenterCropAligner):
        return _center_view(image.width, image.height, size)
    if isinstance(aligner, CenterFallback):
        try:
            return _aligned_view(aligner.inner, image, size)
        except NoFaceError:
            return _center_view(image.width, image.height, size)
    if isinstance(aligner, MtcnnAligner):
        return _mtcnn_view(aligner, image, size)
    if isinstance(aligner, DlibAligner):
        chip = geometry_of(aligner.chip_details(image, size), image.width, image.height)
        return View(box=chip.footprint, size=size, chip=chip)
    raise ClipfaceError(
        f"face front end {aligner.id} cannot be differentiated: cloaks support the dlib, mtcnn and centre-crop front "
        "ends"
    )


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 to a ``(3, H, W)`` float32 tensor in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


def view_for(encoder: Encoder, image: Image.Image) -> View:
    """The :class:`View` of ``encoder``'s front end on ``image``, checked against ``encoder.prepare``.

    Raises :class:`~clipface.errors.NoFaceError` where the front end finds no face.
    """
    view = _aligned_view(encoder.aligner, image, encoder.image_size)
    reference = encoder.prepare(image).astype(np.float32)
    with torch.no_grad():
        mine = view(to_tensor(np.asarray(image.convert("RGB")))[None])[0].permute(1, 2, 0).numpy() * 255.0
    gap = float(np.abs(mine - reference).mean())
    if gap > VIEW_TOLERANCE:
        raise ClipfaceError(
            f"{image_label(image)}: the cloak's copy of {encoder.name}'s front end differs from it (mean |diff| "
            f"{gap:.1f} of 255)"
        )
    return view
