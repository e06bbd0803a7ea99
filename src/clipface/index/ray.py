"""Scale-out embedding on Ray: many workers write embedding shards (:mod:`.shards`) that a :class:`FaceIndex` merges.

The driver only lists the files. Ray Data spreads the paths over a pool of actors
(``ray.data.from_items`` -> ``map_batches`` with :class:`EmbedWorker`, one actor per worker,
each holding one encoder); every batch goes through the same single-process pipeline
(:func:`clipface.embed.pipeline.embed_images`: load, ``Encoder.prepare``, ``Encoder.encode_prepared``),
so vectors are identical to a local build. Each batch becomes one shard written by the actor
itself. ``FaceIndex.build_from_shards`` / ``FaceIndex.add_shards`` merge them. Works on a local
cluster (``ray.init(num_cpus=2)``) as on many machines sharing ``out_dir``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import FaceImage, SkippedFile
from ..embed.pipeline import embed_images
from ..errors import BackendUnavailableError
from ..models.runtime import LoadOptions, load_encoder
from ..textsafe import key_bytes
from .ingest import ImageSource, SourceImage, collect_images, describe_image
from .records import EncoderId, ImageRecord
from .shards import SHARD_PREFIX, name_bytes, name_text, write_shard

__all__ = ["EmbedWorker", "RayEmbedding", "embed_with_ray"]


@dataclass
class RayEmbedding:
    """What :func:`embed_with_ray` did."""

    out_dir: Path
    shards: list[str]
    images: int


class EmbedWorker:
    """A Ray Data actor: holds one encoder; turns each batch of paths into one Parquet shard."""

    def __init__(
        self, model_name: str, out_dir: str, weights: str | None, align: str | None, on_no_face: str, device: str
    ) -> None:
        opts = LoadOptions(
            device=device, weights={model_name: weights} if weights else {}, aligner=align, on_no_face=on_no_face
        )
        self.encoder = load_encoder(model_name, opts)
        self.out_dir = Path(out_dir)
        self.meta = {
            **EncoderId.of(self.encoder).__dict__,
            "is_test_model": self.encoder.is_test_model,
            "align": align,
            "on_no_face": on_no_face,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = [
            SourceImage(Path(_text(p)), _text(r), _text(i) or None)
            for p, r, i in zip(batch["path"], batch["relpath"], batch["identity"])
        ]
        h = hashlib.sha256(f"{self.meta['fingerprint']}|{self.meta['preprocess_id']}".encode())
        h.update(key_bytes("\n".join(str(e.path) for e in entries)))
        shard = self.out_dir / f"{SHARD_PREFIX}{h.hexdigest()[:24]}.parquet"
        if not shard.exists():
            self._write(shard, entries)
        return {"shard": np.array([shard.name]), "images": np.array([len(entries)])}

    def _write(self, shard: Path, entries: list[SourceImage]) -> None:
        described = [describe_image(e) for e in entries]
        skipped = [d for d in described if isinstance(d, SkippedFile)]
        records = {d.path: d for d in described if isinstance(d, ImageRecord)}
        result = embed_images(
            self.encoder,
            [FaceImage(Path(p), r.identity or "") for p, r in records.items()],
            None,
            workers=1,
            progress=False,
        )
        rows = [records[str(im.path)] for im in result.images]
        meta = {**self.meta, "skipped": [s.to_dict() for s in skipped + result.skipped]}
        write_shard(shard, rows, result.embeddings, meta)


def embed_with_ray(
    model_name: str,
    image_paths: ImageSource,
    out_dir: str | Path,
    num_workers: int = 2,
    batch_size: int = 256,
    weights: str | Path | None = None,
    *,
    align: str | None = None,
    on_no_face: str = "skip",
    device: str = "cpu",
    cpus_per_worker: float = 1.0,
) -> RayEmbedding:
    """Embed ``image_paths`` (a folder, a dataset or files) on ``num_workers`` Ray actors into ``out_dir`` shards.

    Uses the running Ray cluster, or starts a local one. Identities follow
    :func:`clipface.index.ingest.collect_images` (parent folder name in a folder layout).
    """
    try:
        import ray.data
    except ImportError:
        raise BackendUnavailableError('Ray is not installed: pip install "clipface[ray]"') from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, _ = collect_images(image_paths)
    if not entries:
        return RayEmbedding(out, [], 0)
    # file names travel as bytes: Arrow (under Ray Data) holds no string that is not UTF-8
    items = [
        {"path": name_bytes(str(e.path)), "relpath": name_bytes(e.relpath), "identity": name_bytes(e.identity or "")}
        for e in entries
    ]
    ds = ray.data.from_items(items).map_batches(
        EmbedWorker,
        fn_constructor_kwargs={
            "model_name": model_name,
            "out_dir": str(out),
            "weights": str(weights) if weights else None,
            "align": align,
            "on_no_face": on_no_face,
            "device": device,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
    )
    rows = ds.take_all()
    return RayEmbedding(out, sorted({str(r["shard"]) for r in rows}), int(sum(int(r["images"]) for r in rows)))


def _text(value: object) -> str:
    return name_text(value) if isinstance(value, (bytes, str)) else str(value)  # type: ignore[return-value]
