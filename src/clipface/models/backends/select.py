"""Inference backends: how an encoder's forward pass is run.

* ``torch``: PyTorch eager, threads set to the physical cores.
* ``compile``: the same modules through ``torch.compile`` (inductor, weights frozen and
  pre-packed for oneDNN, dynamic batch size). Same arithmetic up to float rounding (cosine to
  eager >= 0.9999); costs a one-off compilation (tens of seconds, then reused from inductor's
  on-disk cache) and needs a C++ compiler. Only for :class:`~clipface.models.base.TorchEncoder`.
* ``onnx``: ONNX Runtime, fp32 or dynamic int8 (:class:`~clipface.models.backends.onnx.OnnxEncoder`).
* ``dlib``: dlib's own C++ network, for the ``dlib`` model only (its default is the PyTorch port,
  which gives the same embeddings to about 5e-7 and shares their cache keys); one image at a time
  on one core, kept for comparison.
"""

from __future__ import annotations

from ...errors import BackendUnavailableError
from ..base import Encoder, TorchEncoder
from .threads import configure_torch_threads

BACKENDS = ("torch", "compile", "onnx", "dlib")
PRECISIONS = ("fp32", "int8", "fp16", "bf16")
#: Half precisions of torch encoders: fp16 on CUDA, bf16 on CUDA or CPU.
HALF = ("fp16", "bf16")


def with_backend(
    encoder: Encoder, backend: str = "torch", precision: str = "fp32", threads: int | None = None
) -> Encoder:
    """``encoder`` run by ``backend`` (see the module docstring) at ``precision`` (fp32, int8, fp16, bf16).

    ``torch`` returns ``encoder`` itself, with torch's threads set to the physical cores (or
    ``threads``); ``compile`` also switches its inference to ``torch.compile``; ``onnx`` wraps
    it in an :class:`~clipface.models.backends.onnx.OnnxEncoder`. int8 needs ``onnx``; fp16 and bf16
    cast a torch encoder's weights (:meth:`~clipface.models.base.TorchEncoder.set_precision`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if backend == "dlib":
        native = getattr(encoder, "native", None)
        if native is None:
            raise BackendUnavailableError(f"model {encoder.name}: the dlib backend runs only the dlib model")
        if precision != "fp32":
            raise BackendUnavailableError(f"model {encoder.name}: the dlib backend runs fp32 only, not {precision}")
        return native()
    if backend == "onnx":
        from .onnx import ONNX_PRECISIONS, OnnxEncoder

        if precision not in ONNX_PRECISIONS:
            raise BackendUnavailableError(f"model {encoder.name}: the onnx backend runs fp32 or int8, not {precision}")

        return OnnxEncoder(encoder, precision=precision, threads=threads)
    if precision == "int8":
        raise BackendUnavailableError(f"model {encoder.name}: precision int8 needs the onnx backend")
    if precision in HALF:
        if not isinstance(encoder, TorchEncoder):
            raise BackendUnavailableError(f"model {encoder.name}: precision {precision} needs a PyTorch encoder")
        encoder.set_precision(precision)
    if isinstance(encoder, TorchEncoder):
        configure_torch_threads(threads)
        if backend == "compile":
            encoder.compile()
    elif backend == "compile":
        raise BackendUnavailableError(
            f"model {encoder.name}: the compile backend needs a PyTorch encoder, not {type(encoder).__name__}; use the "
            "torch backend"
        )
    return encoder
