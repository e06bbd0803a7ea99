"""clip-retrieval's own back end, run as ``clip-retrieval back`` runs it, over indices written here.

``python tests/clip_back_engine.py INDICES_JSON PORT MODEL`` calls ``clip_retrieval.clip_back.clip_back`` from the
installed 2.45.0 wheel: its own index and metadata loading (``image.index`` read by FAISS, the ``metadata/``
parquet folder), its own Flask routes, deduplication and result mapping. Three things are stood in for, because
the wheel is installed without its dependencies (``pip install --no-deps``, as the client tests use it):

* the package ``__init__`` (it imports every clip-retrieval tool) is skipped: the package is a bare namespace;
* ``all_clip.load_clip`` (which would download a CLIP model) hands back clipface's ``MODEL`` (a face model, or the
  random-weight test CLIP) in the shape clip_back calls: ``preprocess(img).unsqueeze(0).to(device)``,
  ``model.encode_image``, ``tokenizer([text]).to(device)``, ``model.encode_text``;
* ``pkg_resources.resource_filename`` (setuptools no longer ships it) points at the wheel's front-end folder.

:func:`write_index` lays out one clip-retrieval index folder from vectors and metadata columns.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def write_index(folder: Path, vectors: np.ndarray, columns: dict[str, Sequence[Any]]) -> Path:
    """``folder/image.index`` (exact inner product) and ``folder/metadata/0.parquet``, as clip-retrieval's
    ``clip_index`` writes them."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(folder / "image.index"))
    pq.write_table(pa.table({k: list(v) for k, v in columns.items()}), folder / "metadata" / "0.parquet")
    return folder


class _Prepared:
    """What clip_back's ``preprocess(img)`` returns: it calls ``.unsqueeze(0).to(device)`` on it."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def unsqueeze(self, _dim: int) -> _Prepared:
        return self

    def to(self, _device: str) -> _Prepared:
        return self


class _Model:
    """clipface's encoder in the place of the CLIP model all_clip would load."""

    def __init__(self, name: str) -> None:
        from clipface.models.runtime import load_encoder

        self.encoder = load_encoder(name)

    def encode_image(self, prepared: _Prepared):
        import torch

        return torch.tensor(self.encoder.encode_images([prepared.payload.convert("RGB")]))

    def encode_text(self, prepared: _Prepared):
        import torch

        return torch.tensor(self.encoder.encode_text(list(prepared.payload)))


def _stand_ins(model: str) -> None:
    spec = importlib.util.find_spec("clip_retrieval")
    folder = Path(next(iter(spec.submodule_search_locations)))  # type: ignore[union-attr]
    package = types.ModuleType("clip_retrieval")
    package.__path__ = [str(folder)]
    sys.modules["clip_retrieval"] = package
    loaded = _Model(model)
    all_clip = types.ModuleType("all_clip")
    all_clip.load_clip = lambda name, use_jit=False, device="cpu": (loaded, _Prepared, _Prepared)  # type: ignore[attr-defined]
    sys.modules["all_clip"] = all_clip
    resources = types.ModuleType("pkg_resources")
    resources.resource_filename = lambda pkg, rel: str(folder / rel)  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = resources


def main(indices: str, port: str, model: str) -> None:
    _stand_ins(model)
    from clip_retrieval.clip_back import clip_back

    clip_back(
        indices_paths=indices,
        port=int(port),
        clip_model=model,
        enable_mclip_option=False,
        provide_aesthetic_embeddings=False,
        use_jit=False,
        columns_to_return=["url", "image_path", "caption"],
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.splitlines()[2])
    json.loads(Path(sys.argv[1]).read_text())  # a readable indices file, before anything loads
    main(*sys.argv[1:])
