"""Scale-out embedding on Ray: many workers write embedding shards that a :class:`FaceIndex` merges.

The driver only lists the files. Ray Data spreads the paths over a pool of actors
(``ray.data.from_items`` -> ``map_batches`` with :class:`EmbedWorker`, one actor per worker,
each holding one encoder); every batch goes through the same single-process pipeline
(:func:`clipface.embed.embed_images`: load, ``Encoder.prepare``, ``Encoder.encode_prepared``),
so vectors are identical to a local build. Each batch becomes one Parquet shard written by the
actor itself (atomically, named by a hash of the encoder and the batch's paths, so a rerun
reuses finished shards), with columns ``path, relpath, identity, width, height, sha256,
embedding`` and, in the schema metadata, the encoder's identity and the files skipped.
``FaceIndex.build_from_shards`` / ``FaceIndex.add_shards`` merge them. Works on a local
cluster (``ray.init(num_cpus=2)``) as on many machines sharing ``out_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import FaceImage, SkippedFile
from .embed import embed_images
from .errors import BackendUnavailableError
from .index import EncoderId, FaceIndexError, ImageRecord, ImageSource, describe_image, SourceImage, collect_images

SHARD_PREFIX = "shard-"
_META_KEY = b"clipface"


@dataclass
class ShardSet:
    """Every shard of a folder, concatenated (rows sorted by path)."""

    encoder_id: EncoderId
    is_test_model: bool
    align: str | None
    on_no_face: str
    records: list[ImageRecord]
    vectors: np.ndarray
    skipped: list[SkippedFile]


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
        from .evaluate import RunOptions, load_encoder

        opts = RunOptions(device=device, weights={model_name: weights} if weights else {}, aligner=align, on_no_face=on_no_face)
        self.encoder = load_encoder(model_name, opts)
        self.out_dir = Path(out_dir)
        self.meta = {
            **EncoderId.of(self.encoder).__dict__, "is_test_model": self.encoder.is_test_model,
            "align": align, "on_no_face": on_no_face,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = [
            SourceImage(Path(str(p)), str(r), None if i is None or i == "" else str(i))
            for p, r, i in zip(batch["path"], batch["relpath"], batch["identity"])
        ]
        h = hashlib.sha256(f"{self.meta['fingerprint']}|{self.meta['preprocess_id']}".encode())
        h.update("\n".join(str(e.path) for e in entries).encode())
        shard = self.out_dir / f"{SHARD_PREFIX}{h.hexdigest()[:24]}.parquet"
        if not shard.exists():
            self._write(shard, entries)
        return {"shard": np.array([shard.name]), "images": np.array([len(entries)])}

    def _write(self, shard: Path, entries: list[SourceImage]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        described = [describe_image(e) for e in entries]
        skipped = [d for d in described if isinstance(d, SkippedFile)]
        records = {d.path: d for d in described if isinstance(d, ImageRecord)}
        result = embed_images(
            self.encoder, [FaceImage(Path(p), r.identity or "") for p, r in records.items()], None, workers=1, progress=False
        )
        rows = [records[str(im.path)] for im in result.images]
        dim = int(self.meta["dim"])
        columns: dict[str, Any] = {f: [getattr(r, f) for r in rows] for f in ("path", "relpath", "identity", "width", "height", "sha256")}
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(result.embeddings.reshape(-1), pa.float32()), dim)
        meta = {**self.meta, "skipped": [s.to_dict() for s in skipped + result.skipped]}
        table = pa.table(columns).replace_schema_metadata({_META_KEY: json.dumps(meta)})
        tmp = shard.with_name("." + shard.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, shard)


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
    """Embed ``image_paths`` (a folder, a dataset or a list of files) on ``num_workers`` Ray actors into ``out_dir`` shards.

    Uses the running Ray cluster, or starts a local one. Identities follow
    :func:`clipface.index.collect_images` (parent folder name in a folder layout).
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
    items = [{"path": str(e.path), "relpath": e.relpath, "identity": e.identity or ""} for e in entries]
    ds = ray.data.from_items(items).map_batches(
        EmbedWorker,
        fn_constructor_kwargs={
            "model_name": model_name, "out_dir": str(out), "weights": str(weights) if weights else None,
            "align": align, "on_no_face": on_no_face, "device": device,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
    )
    rows = ds.take_all()
    return RayEmbedding(out, sorted({str(r["shard"]) for r in rows}), int(sum(int(r["images"]) for r in rows)))


def read_shards(shard_dir: str | Path) -> ShardSet:
    """Load every shard of ``shard_dir``; all must come from the same encoder."""
    import pyarrow.parquet as pq

    paths = sorted(Path(shard_dir).glob(f"{SHARD_PREFIX}*.parquet"))
    if not paths:
        raise FaceIndexError(f"{shard_dir}: no embedding shards ({SHARD_PREFIX}*.parquet)")
    records: list[ImageRecord] = []
    vectors: list[np.ndarray] = []
    skipped: list[SkippedFile] = []
    first: dict[str, Any] | None = None
    for path in paths:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        eid = {k: meta.get(k) for k in ("model", "fingerprint", "preprocess_id", "dim")}
        if first is None:
            first = meta
        elif eid != {k: first.get(k) for k in eid}:
            raise FaceIndexError(f"{path}: shard made by another encoder than {paths[0].name}")
        cols = table.to_pydict()
        records += [
            ImageRecord(p, r, i, int(w), int(h), s)
            for p, r, i, w, h, s in zip(cols["path"], cols["relpath"], cols["identity"], cols["width"], cols["height"], cols["sha256"])
        ]
        emb = table.column("embedding").combine_chunks()
        vectors.append(np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(table), int(meta["dim"])))
        skipped += [SkippedFile(s["file"], s["reason"]) for s in meta.get("skipped", [])]
    assert first is not None
    order = sorted(range(len(records)), key=lambda i: records[i].path)
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, int(first["dim"])), np.float32)
    return ShardSet(
        encoder_id=EncoderId(first["model"], first["fingerprint"], first["preprocess_id"], int(first["dim"])),
        is_test_model=bool(first.get("is_test_model")),
        align=first.get("align"),
        on_no_face=first.get("on_no_face", "skip"),
        records=[records[i] for i in order],
        vectors=stacked[order],
        skipped=skipped,
    )
