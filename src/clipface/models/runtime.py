"""How a registered model is turned into a ready encoder: weights, device, face front end, backend.

:class:`LoadOptions` holds every choice (checked when it is made, so a bad value fails before
any model is loaded); :func:`load_encoder` applies them. The embedding stage extends it with
batching and caching (:class:`clipface.embed.options.RunOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError, check_choice, check_int
from .align import ALIGNERS, ON_NO_FACE, SELECT, get_aligner
from .backends.select import BACKENDS, PRECISIONS, with_backend
from .base import Encoder
from .registry import create_encoder

__all__ = ["LoadOptions", "load_encoder"]


@dataclass
class LoadOptions:
    """Choices that fix an encoder's embeddings, shared by every command."""

    device: str = "cpu"
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local weights
    aligner: str | None = None  # face front end for every encoder (None: each model's default)
    on_no_face: str = "skip"
    face_select: str = "central"  # which face where a photo has several: central or largest
    flip: bool = False  # test-time augmentation: add the mirrored crop's embedding (Encoder.flip)
    backend: str = "torch"
    precision: str = "fp32"
    threads: int | None = None  # inference threads (default: physical cores)

    def __post_init__(self) -> None:
        if self.aligner is not None:
            check_choice("align", self.aligner, ALIGNERS)
        check_choice("on_no_face", self.on_no_face, ON_NO_FACE)
        check_choice("face_select", self.face_select, SELECT)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("precision", self.precision, PRECISIONS)
        check_int("threads", self.threads, 1)
        if not isinstance(self.device, str) or not self.device.strip():
            raise UsageError("device", self.device, "name a torch device such as cpu or cuda")


def load_encoder(name: str, opts: LoadOptions | None = None) -> Encoder:
    """Create the model registered as ``name`` with the weights, front end and backend chosen in ``opts``."""
    opts = opts if opts is not None else LoadOptions()
    encoder = create_encoder(
        name, weights=opts.weights.get(name), device=opts.device, on_no_face=opts.on_no_face, select=opts.face_select
    )
    if opts.aligner is not None:
        encoder.aligner = get_aligner(opts.aligner, on_no_face=opts.on_no_face, select=opts.face_select)
    encoder = with_backend(encoder, opts.backend, opts.precision, opts.threads)
    encoder.flip = opts.flip
    return encoder
