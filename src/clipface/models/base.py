"""The one encoder interface shared by CLIP models and dedicated face recognisers.

Data flows one way: a PIL image is *prepared* (geometry only: resize and crop, or face
alignment) into a ``uint8`` array of ``image_size x image_size x 3``; prepared arrays are
*encoded* in batches into L2-normalised ``float32`` embeddings. Preparation is cheap and runs
in parallel threads; encoding is the model. ``preprocess_id`` names the preparation exactly,
so that cached embeddings are keyed by it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from PIL import Image

from ..errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Aligner(Protocol):
    """A face front end: finds the face in an image and returns an aligned square crop."""

    #: Stable name of the alignment method and its settings (part of the cache key).
    id: str

    def crop(self, image: Image.Image, size: int) -> np.ndarray:
        """Return an aligned ``size x size x 3`` uint8 crop or raise :class:`~clipface.errors.NoFaceError`."""
        ...


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def resize_center_crop(image: Image.Image, size: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """CLIP's geometry: shortest side resized to ``size`` (bicubic), then a central ``size`` square."""
    w, h = image.size
    if (w, h) != (size, size):
        # Same output size rule as transformers' CLIPImageProcessor (shortest_edge).
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), resample=resample)
        w, h = image.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    crop = image.crop((left, top, left + size, top + size))
    return np.asarray(crop.convert("RGB"), dtype=np.uint8)


class Encoder(ABC):
    """Image (and, where the model has a text tower, text) to L2-normalised float32 embeddings."""

    #: Registry name, e.g. ``"ViT-B-32:openai"`` or ``"dlib"``.
    name: str
    #: Embedding dimension.
    dim: int
    #: Side of the square input the model sees, in pixels.
    image_size: int
    #: Whether :meth:`encode_text` is available.
    has_text: bool = False
    #: What the weights were trained on, in words (e.g. ``"LAION-2B"``).
    pretraining: str = "unknown"
    #: True for models with random weights that only prove plumbing.
    is_test_model: bool = False
    #: Optional face front end used by :meth:`prepare`.
    aligner: Aligner | None = None
    #: Test-time augmentation: :meth:`embed_prepared` also embeds the mirrored crop and
    #: returns the normalised sum of the two unit vectors (the usual LFW evaluation practice).
    flip: bool = False

    # -- identity -----------------------------------------------------------------------
    @property
    @abstractmethod
    def n_params(self) -> int:
        """Number of parameters of the model."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Stable hex digest of the weights in use (same weights, same fingerprint)."""

    @property
    def geometry_id(self) -> str:
        """Name of the default geometry used when no aligner is set."""
        return f"resize-bicubic-centercrop{self.image_size}"

    @property
    def preprocess_id(self) -> str:
        """Exact name of the preparation: part of every cache key."""
        front = self.aligner.id if self.aligner is not None else self.geometry_id
        return f"{front}|{self.normalization_id}" + ("|flipsum" if self.flip else "")

    @property
    def normalization_id(self) -> str:
        """Name of the pixel normalisation applied inside :meth:`encode_prepared`."""
        return "none"

    def info(self) -> dict[str, Any]:
        """Description of the encoder for reports."""
        return {
            "name": self.name,
            "dim": self.dim,
            "image_size": self.image_size,
            "has_text": self.has_text,
            "n_params": self.n_params,
            "pretraining": self.pretraining,
            "fingerprint": self.fingerprint,
            "preprocess": self.preprocess_id,
            "flip": self.flip,
            "is_test_model": self.is_test_model,
        }

    # -- images -------------------------------------------------------------------------
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Geometry only: an ``image_size`` square uint8 RGB array (aligned face crop if an aligner is set)."""
        if self.aligner is not None:
            return self.aligner.crop(image, self.image_size)
        return resize_center_crop(image.convert("RGB"), self.image_size)

    @abstractmethod
    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed a ``(N, S, S, 3)`` uint8 batch from :meth:`prepare` into ``(N, dim)`` unit vectors."""

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`encode_prepared`, with the mirrored crops added where :attr:`flip` is set."""
        emb = self.encode_prepared(batch)
        if not self.flip or len(emb) == 0:
            return emb
        return l2_normalize(emb + self.encode_prepared(np.ascontiguousarray(np.asarray(batch)[:, :, ::-1])))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Prepare and embed PIL images (convenience; pipelines use :func:`clipface.embed.embed_images`)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_prepared(np.stack([self.prepare(im) for im in images]))

    # -- text ---------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into ``(N, dim)`` unit vectors in the image space (models with a text tower)."""
        raise NotImplementedError(f"{self.name} has no text tower")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, image_size={self.image_size})"


def hash_state_dict(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict, in name order."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TorchEncoder(Encoder):
    """An encoder backed by a PyTorch module, differentiable from input pixels to embedding."""

    module: torch.nn.Module
    #: Per-channel mean and std applied to pixels in [0, 1] (``None``: subclass normalises).
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    #: Images per forward pass in :meth:`encode_prepared`.
    batch_size: int = 32
    _fingerprint: str | None = None
    #: The ``torch.compile``d inference forward once :meth:`compile` ran (``None``: eager).
    _compiled: Any = None
    #: Batches smaller than this stay eager under :meth:`compile` (a dynamic-shape kernel is
    #: slower than eager for a single image, e.g. a search query).
    compile_min_batch: int = 4

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters()))

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hash_state_dict(self.module.state_dict())
        return self._fingerprint

    @property
    def normalization_id(self) -> str:
        if self.mean is None or self.std is None:
            return "custom"
        return "meanstd" + ",".join(f"{v:.5g}" for v in (*self.mean, *self.std))

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, 3, S, S)`` pixels in [0, 1] to the model's input scale."""
        import torch

        assert self.mean is not None and self.std is not None
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) features of model-scaled inputs ``(N, 3, S, S)``."""

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: ``(N, 3, S, S)`` RGB pixels in [0, 1] to L2-normalised float32 embeddings."""
        import torch.nn.functional as F

        dtype = self.dtype
        x = x if x.dtype == dtype else x.to(dtype)
        return F.normalize(self.forward_features(self.normalize_pixels(x)).float(), dim=-1)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (float32 unless :meth:`set_precision` chose a half precision)."""
        import torch

        return getattr(self, "_dtype", torch.float32)

    def set_precision(self, precision: str) -> None:
        """Run in ``fp16`` (CUDA only) or ``bf16`` (CUDA or CPU): the weights are cast, embeddings stay float32.

        The fingerprint changes with the precision, so cached float32 embeddings are not mixed in.
        """
        import torch

        dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
        if precision not in dtypes:
            raise ValueError(f"precision must be one of {', '.join(dtypes)}, not {precision!r}")
        device = str(getattr(self, "device", "cpu"))
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendUnavailableError(
                f"model {self.name}: fp16 needs a CUDA device (--device cuda); on a CPU use bf16"
            )
        base = self.fingerprint
        self.module.to(dtypes[precision])
        self._dtype = dtypes[precision]
        self._precision = precision
        self._fingerprint = hashlib.sha256(f"{base}|{precision}".encode()).hexdigest() if precision != "fp32" else base

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "backend": "compile" if self._compiled is not None else "torch",
            "precision": getattr(self, "_precision", "fp32"),
        }

    def compile(self) -> None:
        """Run :meth:`encode_prepared` through ``torch.compile`` (inductor, frozen weights, dynamic batch).

        The first batch compiles (tens of seconds; inductor caches the result on disk);
        :meth:`embed_pixels` stays eager and differentiable. Embeddings match eager up to float
        rounding, so the cache is shared with the eager path. A failure to compile (no C++
        compiler, unsupported operator) is a :class:`~clipface.errors.BackendUnavailableError`.
        """
        import torch

        self._compiled = torch.compile(self.embed_pixels, dynamic=True, options={"freezing": True})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is None or len(x) < self.compile_min_batch:
            return self.embed_pixels(x)
        try:
            return self._compiled(x)
        except Exception as exc:  # inductor raises many types (compiler missing, lowering errors)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise BackendUnavailableError(
                f"model {self.name}: torch.compile failed ({first}); use --backend torch or onnx"
            ) from None

    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected a (N, S, S, 3) uint8 batch, got shape {batch.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                # a read-only batch (a memory map, a cached array) is copied: torch.from_numpy warns on one
                chunk = torch.from_numpy(np.require(batch[i : i + self.batch_size], requirements=("C", "W")))
                x = chunk.permute(0, 3, 1, 2).float().div_(255.0)
                out.append(self._forward(x).float().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))
