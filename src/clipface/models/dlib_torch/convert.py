"""dlib's ``.dat`` model file to a PyTorch state dict of :class:`~.arch.DlibResNet`, cached as safetensors.

The parsed layers (:func:`~.network.parse_file`, innermost first) are mapped in order onto the
module's parameters: the 7x7 conv and its affine, then for each of the 14 residual blocks its two
convs and two affines, then the fc (its (in, out) weights transposed); the input layer's channel
means become the ``mean`` buffer. Every shape is checked by a strict ``load_state_dict``.

The result is cached as ``<cache>/weights/dlib-resnet-v1-<sha256 of the .dat, 16 hex>.safetensors``
(``<cache>`` is ``$CLIPFACE_CACHE_DIR`` or ``~/.cache/clipface``), written atomically, with the
source's full SHA-256 in its metadata (the encoder's fingerprint, shared with dlib's own network).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...files import cache_root
from ..fingerprint import file_fingerprint
from .arch import DlibResNet
from .dat_file import Layer, ParsedNet, parse_file
from .serial import DlibFormatError

#: safetensors metadata key holding the SHA-256 of the ``.dat`` file the weights came from.
SOURCE_KEY = "source_sha256"


def _targets(model: DlibResNet) -> list[tuple[str, str]]:
    """``(module name, dlib layer type)`` of every layer with parameters, in the order dlib applies them."""
    out = [("conv", "con_"), ("aff", "affine_")]
    for i in range(len(model.blocks)):
        out += [(f"blocks.{i}.{m}", t) for m, t in (("conv1", "con_"), ("aff1", "affine_"), ("conv2", "con_"))]
        out.append((f"blocks.{i}.aff2", "affine_"))
    return [*out, ("fc", "fc_")]


def _tensors(name: str, layer: Layer) -> dict[str, np.ndarray]:
    if layer.ltype == "con_":
        return {f"{name}.weight": layer.params["weight"], f"{name}.bias": layer.params["bias"]}
    if layer.ltype == "affine_":
        return {f"{name}.gamma": layer.params["gamma"], f"{name}.beta": layer.params["beta"]}
    return {f"{name}.weight": np.ascontiguousarray(layer.params["weight_in_out"].T)}


def state_dict_of(net: ParsedNet) -> dict[str, torch.Tensor]:
    """The state dict of :class:`DlibResNet` held by a parsed model file."""
    with torch.device("meta"):
        model = DlibResNet()
    layers = [layer for layer in net.computational() if layer.ltype in ("con_", "affine_", "fc_")]
    disabled = [layer for layer in net.computational() if layer.info.get("disabled")]
    if disabled:
        first = disabled[0]
        raise DlibFormatError(f"layer<{first.index}> {first.ltype} is disabled: not dlib's face network", first.offset)
    targets = _targets(model)
    if [layer.ltype for layer in layers] != [t for _, t in targets]:
        raise DlibFormatError(f"{len(layers)} layers with parameters, not the network's {len(targets)}", 0)
    inp = net.input.info
    arrays = {"mean": np.array([inp["avg_red"], inp["avg_green"], inp["avg_blue"]], np.float32).reshape(1, 3, 1, 1)}
    for (name, _), layer in zip(targets, layers):
        arrays.update(_tensors(name, layer))
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items()}
    try:
        model.load_state_dict(state, assign=True)  # strict: every tensor mapped, every shape right
    except RuntimeError as exc:
        raise DlibFormatError(
            f"the parameters do not fit the network ({str(exc).splitlines()[-1].strip()})", 0
        ) from None
    return state


def weights_dir() -> Path:
    """Folder of converted weights: ``<cache root>/weights``."""
    return cache_root() / "weights"


def cache_file(dat_sha256: str) -> Path:
    """Converted weights of the ``.dat`` file with this SHA-256."""
    return weights_dir() / f"dlib-resnet-v1-{dat_sha256[:16]}.safetensors"


def convert(dat_path: Path, out: Path, sha256: str | None = None) -> Path:
    """Convert a dlib face-recognition model file to ``out`` (safetensors), atomically."""
    from safetensors.torch import save_file

    sha256 = sha256 or file_fingerprint(Path(dat_path))
    state = state_dict_of(parse_file(dat_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata={"source": Path(dat_path).name, SOURCE_KEY: sha256, "format": "pt"})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def ensure_converted(dat_path: Path) -> Path:
    """The cached conversion of ``dat_path``, converting it first if needed."""
    sha = file_fingerprint(Path(dat_path))
    out = cache_file(sha)
    return out if out.is_file() else convert(dat_path, out, sha)


def load_converted(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A converted state dict and the SHA-256 of its source ``.dat`` (``None`` if not recorded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        source = (fh.metadata() or {}).get(SOURCE_KEY)
    return load_file(str(path)), source
