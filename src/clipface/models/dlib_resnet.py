"""dlib's ResNet face recogniser (``dlib_face_recognition_resnet_model_v1``) as an :class:`Encoder`.

The model (Davis King, 99.38% on LFW with euclidean distance < 0.6 on raw descriptors) sees
150 x 150 chips from :class:`~clipface.models.align.DlibAligner`. Its descriptors are not unit norm;
they are L2-normalised here so that every encoder is compared by cosine similarity (first
fold of LFW deep-funneled pairs: 97.8% with cosine, 98.2% with raw euclidean distance).
Runs on the CPU (a CUDA build of dlib uses the GPU by itself; ``device`` is not used).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, WeightsUnavailableError
from ..files import file_sha256
from .align import DLIB_PIP, front_end, import_dlib
from .base import Aligner, Encoder, l2_normalize

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: Parameters of the network in dlib's dnn_face_recognition_ex.cpp (no Python API counts them):
#: conv 7x7x3x32 + affine, 14 residual blocks of two 3x3 convs with biases and affines
#: (3 at 32, 4 at 64, 3 at 128, 4 at 256 channels; parameter-free shortcuts), fc 256x128 without bias.
N_PARAMS = 5_614_592


@functools.cache
def _sha256(path: str) -> str:
    return file_sha256(Path(path))


def default_model_path() -> Path:
    """The model file shipped by ``face_recognition_models``."""
    _, models = import_dlib()
    path = Path(models.face_recognition_model_location())
    if not path.is_file():
        raise BackendUnavailableError(f"dlib model file missing ({path}): {DLIB_PIP}")
    return path


def resolve_weights(weights: str | Path | None) -> Path:
    """The model file: ``weights`` (the ``.dat`` file or a folder holding it), else the packaged one."""
    if weights is None:
        return default_model_path()
    path = Path(weights)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise WeightsUnavailableError(f"dlib model file not found: {path}")
    return path


class DlibEncoder(Encoder):
    """dlib's 29-conv-layer ResNet face recogniser: 150 px aligned chips to 128-d unit vectors."""

    name = "dlib"
    dim = 128
    image_size = 150

    def __init__(
        self,
        model_path: Path,
        aligner: Aligner | None,
        num_jitters: int = 0,
        pretraining: str = "unknown",
    ) -> None:
        dlib, _ = import_dlib()
        self.model_path = Path(model_path)
        self.aligner = aligner
        self.num_jitters = num_jitters
        self.pretraining = pretraining
        self._model = dlib.face_recognition_model_v1(str(self.model_path))
        self._lock = threading.Lock()  # the network keeps its activations: one forward at a time

    @property
    def n_params(self) -> int:
        return N_PARAMS

    @property
    def fingerprint(self) -> str:
        return _sha256(str(self.model_path.resolve()))

    @property
    def normalization_id(self) -> str:
        return f"dlib-jitter{self.num_jitters}"

    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        size = self.image_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3) or batch.dtype != np.uint8:
            raise ValueError(f"expected a (N, {size}, {size}, 3) uint8 batch, got {batch.shape} {batch.dtype}")
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chips = [np.ascontiguousarray(chip) for chip in batch]
        with self._lock:
            vectors = self._model.compute_face_descriptor(chips, self.num_jitters)
        return l2_normalize(np.array(vectors, dtype=np.float32))


def availability(spec: Any = None) -> tuple[bool, str]:
    """Whether dlib and its model files are installed, and if not, what to install."""
    try:
        default_model_path()
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, "ok"


def load(
    spec: Any, weights: str | Path | None = None, aligner: Any = "dlib", num_jitters: int = 0, **front: Any
) -> DlibEncoder:
    """Registry loader of dlib's own network: ``aligner`` as :func:`~clipface.models.align.front_end` takes it, with
    ``front`` (``on_no_face``, ``select``); dlib chooses its device itself (a ``device`` given is not used)."""
    front.pop("device", None)
    pretraining = getattr(spec, "pretraining", "unknown")
    return DlibEncoder(
        resolve_weights(weights), front_end(aligner, **front), num_jitters=num_jitters, pretraining=pretraining
    )
