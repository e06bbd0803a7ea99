"""``dlib_face_recognition_resnet_model_v1.dat`` parsed against the network's C++ type, layer by layer.

The file holds one object, ``deserialize(file) >> net`` with ``net`` of dlib's ``anet_type``
(``tools/python/src/face_recognition.cpp``; the same type as ``examples/dnn_face_recognition_ex.cpp``)::

    loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
      max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>
    block<N,BN,stride> = BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>
    ares<N>      = relu<add_prev1<block<N,affine,1, tag1<SUBNET>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,affine,2, tag1<SUBNET>>>>>>>
    alevel4 = 3 x ares<32>; alevel3 = ares_down<64> + 3 x ares<64>; alevel2 = ares_down<128> + 2 x ares<128>;
    alevel1 = ares_down<256> + 2 x ares<256>; alevel0 = ares_down<256>

Which tag an ``add_prev``/``skip`` refers to, and whether a wrapper is a tag or a skip, are
template parameters: the file does not store them (tag and skip both write only a version int),
so the chain is rebuilt here from the type and the file is read *against* it, as dlib's
type-driven ``deserialize`` does, checking every version tag, hyper-parameter and size.

Byte layout (``dlib/dnn/core.h`` ``add_layer::serialize`` writes ``version, subnetwork, details,
bookkeeping``): the loss (version, ``loss_metric_2``, margin, distance threshold), then the
130 wrapper version ints outermost first, then the input layer, then the layers' details
innermost first (the 7x7 conv first, the fc last), each followed by add_layer's bookkeeping
(three bools and two or three empty tensors). Nothing may be left over at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .serial import DlibFormatError, Reader


# -- the C++ type as a chain of nodes, outermost first -------------------------------------------
@dataclass(frozen=True)
class Node:
    """One wrapper of the type: ``layer`` (a layer type and its template arguments), ``tag``, ``skip`` or ``input``."""

    kind: str
    ltype: str = ""
    args: tuple[tuple[str, int], ...] = ()

    @property
    def arg(self) -> dict[str, int]:
        return dict(self.args)


Chain = list[Node]


def _layer(ltype: str, sub: Chain, **args: int) -> Chain:
    return [Node("layer", ltype, tuple(args.items())), *sub]


def _window(nr: int, nc: int, sy: int, sx: int) -> dict[str, int]:
    # layers.h: _padding_y = _stride_y != 1 ? 0 : _nr / 2 (same for x), for con_ and the pools
    return dict(
        nr=nr, nc=nc, stride_y=sy, stride_x=sx, padding_y=0 if sy != 1 else nr // 2, padding_x=0 if sx != 1 else nc // 2
    )


def con(n: int, nr: int, nc: int, sy: int, sx: int, sub: Chain) -> Chain:
    return _layer("con_", sub, num_filters=n, **_window(nr, nc, sy, sx))


def affine(sub: Chain) -> Chain:
    return _layer("affine_", sub)


def relu(sub: Chain) -> Chain:
    return _layer("relu_", sub)


def block(n: int, stride: int, sub: Chain) -> Chain:
    return affine(con(n, 3, 3, 1, 1, relu(affine(con(n, 3, 3, stride, stride, sub)))))


def ares(n: int, sub: Chain) -> Chain:
    return relu(_layer("add_prev_", block(n, 1, [Node("tag", args=(("id", 1),)), *sub]), tag=1))


def ares_down(n: int, sub: Chain) -> Chain:
    inner = [
        Node("skip", args=(("id", 1),)),
        Node("tag", args=(("id", 2),)),
        *block(n, 2, [Node("tag", args=(("id", 1),)), *sub]),
    ]
    return relu(_layer("add_prev_", _layer("avg_pool_", inner, **_window(2, 2, 2, 2)), tag=2))


def _repeat(fn: Callable[[int, Chain], Chain], n: int, times: int, sub: Chain) -> Chain:
    for _ in range(times):
        sub = fn(n, sub)
    return sub


def anet_type() -> Chain:
    """dlib's ``anet_type`` without its loss, outermost (the fc) first, the input last."""
    x: Chain = [Node("input", "input_rgb_image_sized", (("NR", 150), ("NC", 150)))]
    x = _layer("max_pool_", relu(affine(con(32, 7, 7, 2, 2, x))), **_window(3, 3, 2, 2))
    x = _repeat(ares, 32, 3, x)  # alevel4
    x = _repeat(ares, 64, 3, ares_down(64, x))  # alevel3
    x = _repeat(ares, 128, 2, ares_down(128, x))  # alevel2
    x = _repeat(ares, 256, 2, ares_down(256, x))  # alevel1
    x = ares_down(256, x)  # alevel0
    x = _layer("avg_pool_", x, nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)  # avg_pool_everything
    return _layer("fc_", x, num_outputs=128, bias_mode=1)  # fc_no_bias: FC_NO_BIAS = 1


# -- parsed layers -----------------------------------------------------------------------------
@dataclass
class Layer:
    """One wrapper as read: dlib's ``layer<index>`` (0 = the fc), kind, type, version, offset, values."""

    index: int
    kind: str
    ltype: str
    offset: int
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ParsedNet:
    """The whole file: the loss settings and every layer, outermost first (the input last)."""

    loss: dict[str, Any]
    layers: list[Layer]
    file_size: int

    def computational(self) -> list[Layer]:
        """Layers with details (no tags, skips or input), innermost (the 7x7 conv) first."""
        return [layer for layer in reversed(self.layers) if layer.kind == "layer"]

    @property
    def input(self) -> Layer:
        return self.layers[-1]

    def n_params(self) -> int:
        return int(sum(a.size for layer in self.layers for a in layer.params.values()))


def _check_args(r: Reader, name: str, spec: Node, got: dict[str, int], start: int) -> None:
    for key, want in spec.args:
        if key in got and got[key] != want:
            raise r.error(
                f"{name} {key} is {got[key]} in the file but the network type says {want} "
                f"(hyper-parameters from byte {start})",
                start,
            )


def _read_con(r: Reader, spec: Node, layer: Layer) -> None:
    # layers.h con_::deserialize: "con_4" (+ use_bias in con_5, + use_relu in con_6)
    v = layer.version = r.expect_string(("con_4", "con_5", "con_6"), "con_ version")
    params = r.tensor()
    start = r.pos
    got = {k: r.int_("long") for k in ("num_filters", "nr", "nc")}
    got.update({k: r.int_("int") for k in ("stride_y", "stride_x", "padding_y", "padding_x")})
    filters, biases = r.alias_tensor(), r.alias_tensor()
    multipliers = [r.float_("double") for _ in range(4)]
    use_bias = r.bool_() if v in ("con_5", "con_6") else True
    use_relu = r.bool_() if v == "con_6" else False
    _check_args(r, "con_", spec, got, start)
    if use_relu:
        raise r.error("con_ with a fused relu (use_relu) is not part of this network", start)
    if filters.shape[0] != got["num_filters"] or filters.shape[2:] != (got["nr"], got["nc"]):
        raise r.error(f"con_ filter shape {filters.shape} disagrees with its hyper-parameters {got}", start)
    n_bias = biases.size if use_bias else 0
    if params.size != filters.size + n_bias:
        raise r.error(f"con_ params hold {params.size} floats, not {filters.size} filter + {n_bias} bias values", start)
    flat = params.data.reshape(-1)
    layer.params["weight"] = flat[: filters.size].reshape(filters.shape)  # (out, in, nr, nc): torch's OIHW
    if use_bias:
        layer.params["bias"] = flat[filters.size : filters.size + n_bias]
    layer.info.update(got, use_bias=use_bias, multipliers=multipliers)


def _read_affine(r: Reader, spec: Node, layer: Layer) -> None:
    # layers.h affine_::deserialize: "affine_"/"affine_2", or a bn_ record folded into an affine
    v = layer.version = r.expect_string(("affine_", "affine_2", "bn_con2", "bn_fc2"), "affine_ version")
    start = r.pos
    params = r.tensor()
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    if v.startswith("bn_"):  # affine_(const bn_&): g = gamma / sqrt(var + eps), b = beta - g * mean
        r.tensor(), r.tensor()  # means, invstds of the last training batch
        means, variances = r.tensor(), r.tensor()
        r.int_("unsigned long"), r.int_("unsigned long")
        [r.float_("double") for _ in range(4)]
        eps = r.float_("double")
        flat = params.data.reshape(-1).astype(np.float64)
        g = flat[: gamma.size] / np.sqrt(variances.data.reshape(-1).astype(np.float64) + eps)
        b = flat[gamma.size : gamma.size + beta.size] - g * means.data.reshape(-1)
        layer.params.update(gamma=g.astype(np.float32), beta=b.astype(np.float32))
        layer.info.update(mode=0 if v == "bn_con2" else 1, disabled=False)
        return
    mode = r.int_("int")
    disabled = r.bool_() if v == "affine_2" else False
    if mode != 0:
        raise r.error(f"affine_ layer mode {mode}: this network has per-channel (CONV_MODE = 0) affines only", start)
    if params.size != gamma.size + beta.size:
        raise r.error(f"affine_ params hold {params.size} floats, not gamma {gamma.size} + beta {beta.size}", start)
    flat = params.data.reshape(-1)
    layer.params.update(gamma=flat[: gamma.size], beta=flat[gamma.size :])
    layer.info.update(mode=mode, disabled=disabled)


def _read_relu(r: Reader, spec: Node, layer: Layer) -> None:
    v = layer.version = r.expect_string(("relu_", "relu_2"), "relu_ version")
    layer.info["disabled"] = r.bool_() if v == "relu_2" else False


def _read_pool(r: Reader, spec: Node, layer: Layer) -> None:
    name = spec.ltype
    layer.version = r.expect_string(f"{name}2", f"{name} version")
    start = r.pos
    got = {k: r.int_("long") for k in ("nr", "nc")}
    got.update({k: r.int_("int") for k in ("stride_y", "stride_x", "padding_y", "padding_x")})
    _check_args(r, name, spec, got, start)
    layer.info.update(got)


def _read_add_prev(r: Reader, spec: Node, layer: Layer) -> None:
    layer.version = r.expect_string("add_prev_", "add_prev_ version")
    layer.info["tag"] = spec.arg["tag"]  # a template parameter, not in the file


def _read_fc(r: Reader, spec: Node, layer: Layer) -> None:
    # layers.h fc_::deserialize; the weights are stored (num_inputs, num_outputs): out = in * W
    v = layer.version = r.expect_string(("fc_2", "fc_3"), "fc_ version")
    start = r.pos
    num_outputs, num_inputs = r.int_("unsigned long"), r.int_("unsigned long")
    params = r.tensor()
    weights, _ = r.alias_tensor(), r.alias_tensor()
    bias_mode = r.int_("int")
    [r.float_("double") for _ in range(4)]
    use_bias = r.bool_() if v == "fc_3" else True
    _check_args(r, "fc_", spec, {"num_outputs": num_outputs, "bias_mode": bias_mode}, start)
    if weights.shape[:2] != (num_inputs, num_outputs) or params.size < weights.size:
        raise r.error(f"fc_ weights {weights.shape} disagree with {num_inputs} inputs x {num_outputs} outputs", start)
    if bias_mode == 0 and use_bias:
        raise r.error("fc_ with a bias is not part of this network (fc_no_bias)", start)
    layer.params["weight_in_out"] = params.data.reshape(-1)[: weights.size].reshape(num_inputs, num_outputs)
    layer.info.update(num_inputs=num_inputs, num_outputs=num_outputs, bias_mode=bias_mode)


def _read_input(r: Reader, spec: Node, layer: Layer) -> None:
    # input.h input_rgb_image_sized: the channel means (float) and NR, NC (size_t)
    layer.version = r.expect_string("input_rgb_image_sized", "input layer version")
    layer.info.update({c: r.float_("float") for c in ("avg_red", "avg_green", "avg_blue")})
    start = r.pos
    size = (r.int_("size_t"), r.int_("size_t"))
    if size != (spec.arg["NR"], spec.arg["NC"]):
        raise r.error(
            f"input size {size[0]}x{size[1]} but the network type says {spec.arg['NR']}x{spec.arg['NC']}", start
        )
    layer.info.update(NR=size[0], NC=size[1])


_DETAILS: dict[str, Callable[[Reader, Node, Layer], None]] = {
    "con_": _read_con,
    "affine_": _read_affine,
    "relu_": _read_relu,
    "max_pool_": _read_pool,
    "avg_pool_": _read_pool,
    "add_prev_": _read_add_prev,
    "fc_": _read_fc,
}
_BOOLS = ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled")


def _bookkeeping(r: Reader, names: list[str]) -> None:
    for name in names:
        with r.context(name):
            if name in _BOOLS:
                r.bool_()
            elif name == "_sample_expansion_factor":
                r.int_("unsigned int")
            else:
                r.tensor()


def _details(r: Reader, spec: Node, layer: Layer, bookkeeping: list[str]) -> None:
    layer.offset = r.pos
    with r.context(f"layer<{layer.index}> {spec.ltype} details"):
        _DETAILS[spec.ltype](r, spec, layer)
    with r.context(f"layer<{layer.index}> add_layer bookkeeping"):
        _bookkeeping(r, bookkeeping)


def _parse_chain(r: Reader, chain: Chain) -> list[Layer]:
    """The recursion of ``core.h`` unrolled: version ints outermost first, then details innermost first."""
    layers, pending = [], []
    for i, spec in enumerate(chain[:-1]):
        on_input = chain[i + 1].kind == "input"
        layer = Layer(i, spec.kind, spec.ltype, r.pos, info=dict(spec.args))
        what = {"layer": f"add_layer<{spec.ltype}>", "tag": "add_tag_layer", "skip": "add_skip_layer"}[spec.kind]
        allowed = {"layer": (2, 3) if on_input else (1, 2), "tag": (1, 2) if on_input else (1,), "skip": (1,)}
        with r.context(f"layer<{i}> {what} version"):
            layer.info["wrapper_version"] = r.expect_int(allowed[spec.kind], f"{what} version")
        layers.append(layer)
        pending.append((layer, spec))
    inp = Layer(len(chain) - 1, "input", chain[-1].ltype, r.pos)
    with r.context(f"layer<{inp.index}> {inp.ltype}"):
        _read_input(r, chain[-1], inp)
    layer, spec = pending.pop()  # add_layer<LAYER, INPUT_LAYER>: the special case (core.h, version 3)
    if spec.kind != "layer":
        raise r.error("a tag directly on the input layer is not part of this network")
    extra = ["_sample_expansion_factor"] if layer.info["wrapper_version"] >= 3 else []
    _details(r, spec, layer, [*_BOOLS, "x_grad", "cached_output", "grad_final", *extra])
    while pending:
        layer, spec = pending.pop()
        if spec.kind == "layer":  # tags and skips write nothing after their subnetwork
            extra = ["params_grad"] if layer.info["wrapper_version"] == 2 else []
            _details(r, spec, layer, [*_BOOLS, "x_grad", "cached_output", *extra])
    return [*layers, inp]


def parse_bytes(buf: bytes) -> ParsedNet:
    """Parse the model file's bytes (see the module docstring); :class:`DlibFormatError` on any mismatch."""
    if buf[:3] == b"BZh":
        raise DlibFormatError("the file is bzip2-compressed (starts with 'BZh'): decompress it first", 0)
    r = Reader(buf)
    with r.context("add_loss_layer<loss_metric_>"):
        r.expect_int(1, "add_loss_layer version")
        v = r.expect_string(("loss_metric_", "loss_metric_2"), "loss_metric_ version")
        loss: dict[str, Any] = {"version": v, "margin": 0.1, "dist_thresh": 0.75}
        if v == "loss_metric_2":
            loss.update(margin=r.float_("float"), dist_thresh=r.float_("float"))
    layers = _parse_chain(r, anet_type())
    if r.remaining():
        raise r.error(f"{r.remaining()} unread byte(s) after the network (not this network type?)")
    return ParsedNet(loss, layers, len(buf))


def parse_file(path: str | Path) -> ParsedNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; errors name the file, the offset and the part."""
    path = Path(path)
    try:
        return parse_bytes(path.read_bytes())
    except DlibFormatError as exc:
        raise DlibFormatError(exc.problem, exc.offset, exc.context, str(path)) from None


def summary(net: ParsedNet) -> str:
    """One line per layer: index, kind, type, version, byte offset and parameter shapes."""
    lines = [f"{net.file_size} bytes; loss {net.loss}"]
    for layer in net.layers:
        shapes = ", ".join(f"{k}{v.shape}" for k, v in layer.params.items())
        lines.append(f"layer<{layer.index}> {layer.kind} {layer.ltype} {layer.version} @{layer.offset} {shapes}")
    lines.append(f"parameters: {net.n_params():,}")
    return "\n".join(lines)
