"""Embedding shards: Parquet files of image records and vectors, written by many workers, merged into an index.

Columns ``path, relpath, identity, width, height, sha256, embedding``; the schema metadata holds
the encoder's identity, its front end and the files skipped. ``path``, ``relpath`` and
``identity`` are the file names' bytes (binary columns), so names that are not UTF-8 survive;
shards with text columns (written before) are read as well. Each shard is written atomically
and named by a hash of the encoder and its paths, so a rerun reuses finished shards (the layout
of clip-retrieval's embedding shards, which keep metadata beside the vectors in the same order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import SkippedFile
from ..files import atomic_write_bytes
from .records import EncoderId, FaceIndexError, ImageRecord

__all__ = ["SHARD_PREFIX", "ShardSet", "name_bytes", "name_text", "read_shards", "write_shard"]

SHARD_PREFIX = "shard-"
_META_KEY = b"clipface"
#: Columns holding file names, stored as their bytes.
NAMES = ("path", "relpath", "identity")


def name_bytes(text: str | None) -> bytes | None:
    """A file name's bytes (undecodable bytes kept as they were on disk)."""
    return None if text is None else text.encode("utf-8", errors="surrogateescape")


def name_text(value: str | bytes | None) -> str | None:
    """The name Python uses for those bytes (the inverse of :func:`name_bytes`); text passes through."""
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


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


def write_shard(path: Path, records: list[ImageRecord], vectors: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write one shard atomically: ``records`` and their ``vectors`` (same order), ``meta`` in the schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(meta["dim"])
    columns: dict[str, Any] = {f: pa.array([name_bytes(getattr(r, f)) for r in records], pa.binary()) for f in NAMES}
    columns.update({f: [getattr(r, f) for r in records] for f in ("width", "height", "sha256")})
    flat = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    table = pa.table(columns).replace_schema_metadata({_META_KEY: json.dumps(meta)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return atomic_write_bytes(path, sink.getvalue().to_pybytes())


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
            ImageRecord(name_text(p) or "", name_text(r) or "", name_text(i), int(w), int(h), s)
            for p, r, i, w, h, s in zip(
                cols["path"], cols["relpath"], cols["identity"], cols["width"], cols["height"], cols["sha256"]
            )
        ]
        emb = table.column("embedding").combine_chunks()
        vectors.append(
            np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
                len(table), int(meta["dim"])
            )
        )
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
