"""``dlib``: dlib's ResNet face recogniser run in PyTorch, from dlib's own model file.

The network (:mod:`.arch`) is read from ``dlib_face_recognition_resnet_model_v1.dat`` without
dlib (:mod:`.network`, :mod:`.serial`), converted once and cached as safetensors
(:mod:`.convert`). On LFW chips it reproduces ``compute_face_descriptor`` to a largest absolute
difference of about 5e-7 (cosine 1.0000000), so it shares dlib's cache keys: the fingerprint is
the ``.dat`` file's SHA-256 and the preparation id is the native encoder's (``dlib-jitter0``),
as the compile backend shares eager's. It is differentiable from pixels in [0, 1] (the input
scaling is inside the module), so it serves as a cloaking surrogate. dlib itself is still needed
for the front end (HOG detector, 5-point landmarks, ``get_face_chip``); ``--backend dlib`` runs
dlib's native network instead (:class:`~clipface.models.dlib_resnet.DlibEncoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import WeightsUnavailableError
from .. import dlib_resnet
from ..align import front_end
from ..base import Aligner, Encoder, TorchEncoder
from ..dlib_resnet import N_PARAMS, DlibEncoder, availability, resolve_weights
from .arch import DlibResNet
from .convert import ensure_converted, load_converted

__all__ = ["DlibTorchEncoder", "availability", "load"]


class DlibTorchEncoder(TorchEncoder):
    """dlib's 29-conv ResNet in PyTorch: 150 px chips to 128-d unit vectors, the same as dlib's own."""

    name = "dlib"
    dim = 128
    image_size = 150

    def __init__(
        self,
        module: DlibResNet,
        source_sha256: str,
        model_path: Path | None = None,
        aligner: Aligner | None = None,
        pretraining: str = "unknown",
        device: str = "cpu",
    ) -> None:
        self.module = module.eval().to(device)
        self.module.requires_grad_(False)  # gradients flow to the input pixels only
        self._fingerprint = source_sha256
        self.model_path = model_path
        self.aligner = aligner
        self.pretraining = pretraining
        self.device = device

    @property
    def n_params(self) -> int:
        return N_PARAMS

    @property
    def normalization_id(self) -> str:
        return "dlib-jitter0"  # the native encoder's: same embeddings, same cache keys

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x  # DlibResNet scales [0, 1] pixels to dlib's input itself

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device))

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return super().embed_pixels(x.to(self.device)).cpu()

    def native(self) -> Encoder:
        """dlib's own network on the same model file and front end (``--backend dlib``)."""
        native = DlibEncoder(resolve_weights(self.model_path), self.aligner, pretraining=self.pretraining)
        native.flip = self.flip
        return native


def _module(path: Path) -> tuple[DlibResNet, str, Path | None]:
    """The module, the source's SHA-256 and the ``.dat`` path (``None`` for a converted file)."""
    dat: Path | None = path
    if path.suffix == ".safetensors":
        state, sha = load_converted(path)
        dat = None
        if sha is None:
            raise WeightsUnavailableError(f"{path}: not converted by clipface (no source_sha256 metadata)")
    else:
        converted = ensure_converted(path)
        state, sha = load_converted(converted)
    with torch.device("meta"):  # no random init: every tensor comes from the state dict
        model = DlibResNet()
    model.load_state_dict(state, assign=True)
    return model, str(sha), dat


def load(
    spec: Any, weights: str | Path | None = None, device: str = "cpu", num_jitters: int = 0, **front: Any
) -> Encoder:
    """Registry loader: ``weights`` is the ``.dat`` file (or its folder) or a converted ``.safetensors``; ``front``
    is the face front end (``aligner``, default dlib's, ``on_no_face``, ``select``: see
    :func:`~clipface.models.align.front_end`).

    ``num_jitters > 0`` (dlib's random jittering, averaged) exists only in dlib's own network, which
    is then returned.
    """
    if num_jitters:
        return dlib_resnet.load(spec, weights, num_jitters=num_jitters, **front)
    pretraining = getattr(spec, "pretraining", "unknown")
    aligner = front_end(front.pop("aligner", "dlib"), **front)
    if weights is not None and Path(weights).suffix == ".safetensors":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"converted dlib weights not found: {path}")
    else:
        path = resolve_weights(weights)
    module, sha, dat = _module(path)
    return DlibTorchEncoder(module, sha, dat, aligner, pretraining=pretraining, device=device)
