"""A fast CPU inference path: any :class:`~clipface.models.base.TorchEncoder` run by ONNX Runtime.

The image path exported is :meth:`~clipface.models.base.TorchEncoder.embed_pixels` (pixels in
[0, 1], NCHW float32, to the L2-normalised embedding, so the pixel normalisation is inside the
graph); for CLIP the text tower is exported too (``input_ids``, ``attention_mask`` to the
normalised embedding). Batch (and, for text, sequence length) are dynamic. Each graph is exported
once per weights and cached under ``<clipface cache>/onnx/``, written atomically; the text tower is
exported on the first :meth:`OnnxEncoder.encode_text`.

* ``fp32``: the exported graph, run with every ONNX Runtime graph optimisation.
* ``int8``: dynamic quantisation of the weights of every ``MatMul`` (int8, per output channel;
  activations are quantised to uint8 per batch). Convolutions stay float: ONNX Runtime's
  ``ConvInteger`` is slower than its float convolution. Patch embeddings (a convolution whose
  stride equals its kernel, as in ViTs) are exported as a ``MatMul`` so they are quantised too.

Embeddings differ slightly from torch's (cosine >= 0.9999 in fp32, >= 0.99 in int8), so the
encoder's :attr:`~OnnxEncoder.fingerprint`, and with it every cache key, depends on the backend and
precision. ONNX export uses torch's TorchScript exporter (``dynamo=False``), which needs no extra
package and traces transformers' SDPA attention as plain ``MatMul``/``Softmax`` ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...errors import BackendUnavailableError
from ...files import cache_root
from ..base import Aligner, Encoder, TorchEncoder, l2_normalize
from ..tokenizer import clean_text
from .threads import inference_threads

#: Precisions of the ONNX path: float32, or dynamic int8 quantisation of the matrix products.
ONNX_PRECISIONS = ("fp32", "int8")

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

OPSET = 17
#: Texts of different lengths, so that the traced graph sees real padding.
_TRACE_TEXTS = ("a photo of a face.", "a photo of Firstname Middlename Lastname, a person with a long name.")


def _import_ort() -> types.ModuleType:
    try:
        import onnx  # noqa: F401  (the exporter and the quantiser need it)
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the onnx backend needs onnx and onnxruntime ({exc.name} is not installed): pip install 'clipface[onnx]'"
        ) from None
    return onnxruntime


def onnx_dir() -> Path:
    """Folder of exported graphs: ``<clipface cache>/onnx``."""
    return cache_root() / "onnx"


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# -- export -------------------------------------------------------------------------------------
class ImageGraph(nn.Module):
    """What is exported for images: the wrapped encoder's ``embed_pixels``."""

    def __init__(self, encoder: TorchEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = encoder.module

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_pixels(pixels)


class TextGraph(nn.Module):
    """What is exported for text: CLIP's text features, L2-normalised."""

    def __init__(self, encoder: TorchEncoder) -> None:
        super().__init__()
        self.model = encoder.module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)


def _patch_as_matmul(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A convolution whose stride equals its kernel (no padding, dilation or groups) as one MatMul."""
    n, c, h, w = x.shape
    kh, kw = self.kernel_size
    gh, gw = h // kh, w // kw
    x = x[:, :, : gh * kh, : gw * kw]
    patches = x.reshape(n, c, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * kh * kw)
    y = patches @ self.weight.reshape(self.out_channels, -1).t()
    if self.bias is not None:
        y = y + self.bias
    return y.reshape(n, gh, gw, self.out_channels).permute(0, 3, 1, 2)


@contextlib.contextmanager
def _export_friendly(module: nn.Module) -> Iterator[None]:
    """Temporarily run patch-embedding convolutions of ``module`` as MatMuls (restored on exit)."""
    patched = [
        m
        for m in module.modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == m.stride
        and m.padding == (0, 0)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.kernel_size != (1, 1)
    ]
    for m in patched:
        m.forward = types.MethodType(_patch_as_matmul, m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _finalise(tmp: Path, produced: Path, dest: Path) -> None:
    """Move ``produced`` (and its weights, if the exporter wrote them as external files) to ``dest`` atomically."""
    if [p.name for p in tmp.iterdir()] == [produced.name]:
        os.replace(produced, dest)
        return
    import onnx  # over 2 GB: protobuf's limit; gather the weights into one ``dest.data`` file

    model = onnx.load(str(produced))
    data = dest.name + ".data"
    single = tmp / "single.onnx"
    onnx.save_model(model, str(single), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
    os.replace(tmp / data, dest.parent / data)
    os.replace(single, dest)


def export_onnx(graph: nn.Module, args: tuple[Any, ...], inputs: dict[str, dict[int, str]], dest: Path) -> None:
    """Export ``graph`` called on ``args`` to ``dest``; ``inputs`` maps input names to their dynamic axes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest.parent) as tmp:
        out = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _export_friendly(graph):
            warnings.simplefilter("ignore")  # tracer warnings about shape checks that are constant for us
            torch.onnx.export(
                graph.eval(),
                args,
                str(out),
                dynamo=False,
                input_names=list(inputs),
                output_names=["embedding"],
                dynamic_axes={**inputs, "embedding": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        _finalise(Path(tmp), out, dest)


def quantize_int8(src: Path, dest: Path) -> None:
    """Dynamic int8 quantisation of ``src``'s MatMul weights (per channel) into ``dest``, atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    data = src.with_name(src.name + ".data")
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=dest.parent) as tmp:
        # The quantiser writes "<input>-inferred.onnx" beside its input: give it a private folder.
        # (onnx refuses external weights with several hard links: those are copied.)
        local = Path(tmp) / src.name
        os.link(src, local)
        if data.exists():
            shutil.copyfile(data, local.with_name(data.name))
        out = Path(tmp) / "int8.onnx"
        logging.disable(logging.WARNING)  # it advises a pre-processing step that changes nothing here
        try:
            quantize_dynamic(
                local,
                out,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            logging.disable(logging.NOTSET)
        os.replace(out, dest)


# -- encoder ------------------------------------------------------------------------------------
class OnnxEncoder(Encoder):
    """A :class:`TorchEncoder`'s image (and text) path run by ONNX Runtime on the CPU.

    Keeps the wrapped encoder's ``name``, ``dim``, ``image_size``, ``aligner`` and ``prepare``;
    its ``fingerprint`` is the torch one combined with the backend and precision.
    """

    def __init__(
        self,
        encoder: Encoder,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        save_optimized: bool = False,
    ) -> None:
        """Export (or reuse) ``encoder``'s image graph and open it.

        ``threads``: intra-op threads (default :func:`~clipface.models.backends.threads.inference_threads`);
        ``cache_dir``: where graphs are kept (default :func:`onnx_dir`); ``save_optimized``: also
        keep ONNX Runtime's optimised graph beside the export and load that next time.
        """
        if precision not in ONNX_PRECISIONS:
            raise ValueError(f"ONNX precision must be one of {', '.join(ONNX_PRECISIONS)}, not {precision!r}")
        if not isinstance(encoder, TorchEncoder):
            extra = " (dlib's C++ network is already its own fast CPU path)" if encoder.name.startswith("dlib") else ""
            raise BackendUnavailableError(
                f"model {encoder.name}: the onnx backend needs a PyTorch encoder, not {type(encoder).__name__}{extra}; "
                f"use the torch backend"
            )
        if getattr(encoder, "device", "cpu") != "cpu":
            raise BackendUnavailableError(
                f"model {encoder.name}: the onnx backend runs on the CPU; create the model with device='cpu'"
            )
        self._ort = _import_ort()
        self.torch_encoder = encoder
        self.precision = precision
        self.threads = inference_threads(threads)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else onnx_dir()
        self.save_optimized = save_optimized
        self.name = encoder.name
        self.dim = encoder.dim
        self.image_size = encoder.image_size
        self.has_text = encoder.has_text and hasattr(encoder, "tokenizer")
        self.pretraining = encoder.pretraining
        self.is_test_model = encoder.is_test_model
        self.batch_size = encoder.batch_size
        #: Graphs this instance had to export or quantise (empty when all came from the cache).
        self.written: list[Path] = []
        self._image = self._open("image")
        self._text: onnxruntime.InferenceSession | None = None

    # -- identity and preparation: those of the wrapped encoder ------------------------------
    @property
    def aligner(self) -> Aligner | None:  # type: ignore[override]
        return self.torch_encoder.aligner

    @aligner.setter
    def aligner(self, value: Aligner | None) -> None:
        self.torch_encoder.aligner = value

    @property
    def n_params(self) -> int:
        return self.torch_encoder.n_params

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.torch_encoder.fingerprint}|onnx-{self.precision}".encode()).hexdigest()

    @property
    def geometry_id(self) -> str:
        return self.torch_encoder.geometry_id

    @property
    def normalization_id(self) -> str:
        return self.torch_encoder.normalization_id

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.torch_encoder.prepare(image)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "backend": "onnx", "precision": self.precision, "threads": self.threads}

    # -- graphs -------------------------------------------------------------------------------
    def graph_path(self, tower: str = "image", precision: str | None = None) -> Path:
        """Where the ``tower`` graph of this model at ``precision`` is cached."""
        suffix = "" if tower == "image" else f"-{tower}"
        stem = f"{_sanitise(self.name)}-{self.torch_encoder.fingerprint[:16]}-{precision or self.precision}{suffix}"
        return self.cache_dir / f"{stem}.onnx"

    def _export(self, tower: str, dest: Path) -> None:
        enc = self.torch_encoder
        if tower == "image":
            pixels = torch.rand(2, 3, enc.image_size, enc.image_size, generator=torch.Generator().manual_seed(0))
            export_onnx(ImageGraph(enc), (pixels,), {"pixels": {0: "batch"}}, dest)
        else:
            tok = self._tokenize(_TRACE_TEXTS, "pt")
            axes = {0: "batch", 1: "sequence"}
            args = (tok["input_ids"], tok["attention_mask"])
            export_onnx(TextGraph(enc), args, {"input_ids": axes, "attention_mask": axes}, dest)
        self.written.append(dest)

    def _graph(self, tower: str) -> Path:
        """The cached graph of ``tower`` at this precision, exported or quantised first if missing."""
        fp32 = self.graph_path(tower, "fp32")
        if not fp32.is_file():
            self._export(tower, fp32)
        if self.precision == "fp32":
            return fp32
        path = self.graph_path(tower)
        if not path.is_file():
            quantize_int8(fp32, path)
            self.written.append(path)
        return path

    def _options(self, level: onnxruntime.GraphOptimizationLevel) -> onnxruntime.SessionOptions:
        so = self._ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning, leaving the cores to the image-decoding threads.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    def _open(self, tower: str) -> onnxruntime.InferenceSession:
        ort = self._ort
        path = self._graph(tower)
        if self.save_optimized:
            # Saved at the portable level; the hardware-specific layout passes run at load time.
            optimized = path.with_name(path.stem + f".ort{ort.__version__}.onnx")
            if not optimized.is_file():
                with tempfile.TemporaryDirectory(prefix=".optimize-", dir=path.parent) as tmp:
                    so = self._options(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
                    so.optimized_model_filepath = str(Path(tmp) / "model.onnx")
                    if path.with_name(path.name + ".data").is_file():  # over 2 GB: weights beside the graph
                        so.add_session_config_entry(
                            "session.optimized_model_external_initializers_file_name", "model.onnx.data"
                        )
                    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                    _finalise(Path(tmp), Path(tmp) / "model.onnx", optimized)
                self.written.append(optimized)
            path = optimized
        so = self._options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    # -- encoding -----------------------------------------------------------------------------
    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected a (N, S, S, 3) uint8 batch, got shape {batch.shape}")
        out = []
        for i in range(0, len(batch), self.batch_size):
            chunk = batch[i : i + self.batch_size].transpose(0, 3, 1, 2)
            pixels = np.ascontiguousarray(chunk, dtype=np.float32)
            pixels /= np.float32(255.0)
            out.append(self._image.run(None, {"pixels": pixels})[0])
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))

    def _tokenize(self, texts: Sequence[str], tensors: str) -> Any:
        return self.torch_encoder.tokenizer(  # type: ignore[attr-defined]
            [clean_text(t) for t in texts], padding=True, truncation=True, max_length=77, return_tensors=tensors
        )

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not self.has_text:
            raise NotImplementedError(f"{self.name} has no text tower")
        if self._text is None:
            self._text = self._open("text")
        step = getattr(self.torch_encoder, "text_batch_size", 256)
        out = []
        for i in range(0, len(texts), step):
            tok = self._tokenize(texts[i : i + step], "np")
            feeds = {k: np.asarray(tok[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
            out.append(self._text.run(None, feeds)[0])
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.torch_encoder!r}, precision={self.precision!r}, threads={self.threads})"
