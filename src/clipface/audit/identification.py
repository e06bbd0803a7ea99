"""How well an index identifies people: query held-out probe photos and score the rank-1 result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import FaceDataset, FaceImage, SkippedFile
from ..embed.cache import EmbeddingCache, NullCache
from ..embed.pipeline import embed_images
from ..files import file_sha256
from ..index.records import identity_key
from ..index.store import FaceIndex
from ..models.base import Encoder

__all__ = ["IdentificationResult", "evaluate_index_identification"]


@dataclass
class IdentificationResult:
    """Rank-1 identification of held-out probe photos against an index."""

    n_probes: int
    rank1: float
    topk: float
    k: int
    per_probe: list[dict[str, Any]]
    skipped: list[SkippedFile]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_probes": self.n_probes,
            "rank1": self.rank1,
            f"top{self.k}": self.topk,
            "k": self.k,
            "per_probe": self.per_probe,
            "skipped": [s.to_dict() for s in self.skipped],
        }


def evaluate_index_identification(
    index: FaceIndex | str | Path,
    probes: Sequence[FaceImage] | FaceDataset,
    encoder: Encoder | None = None,
    k: int = 10,
    cache: EmbeddingCache | NullCache | None = None,
    progress: bool = False,
) -> IdentificationResult:
    """Query each probe photo and score whether its rank-1 result is the same person.

    ``rank1`` is the share of usable probes whose best result has the probe's identity; ``topk``
    the share with that identity among the ``k`` best. A result that is the probe file itself
    (same SHA-256) is ignored, so a probe accidentally left in the index cannot match itself.
    Probes without a usable face are listed in ``skipped`` and not counted.
    """
    index = index if isinstance(index, FaceIndex) else FaceIndex.load(index)
    encoder = encoder or index.load_encoder()
    index.check_encoder(encoder)
    images = list(probes.images if isinstance(probes, FaceDataset) else probes)
    emb = embed_images(encoder, images, cache if cache is not None else NullCache(), progress=progress)
    rows: list[dict[str, Any]] = []
    for probe, vec in zip(emb.images, emb.embeddings):
        sha = file_sha256(probe.path)
        hits = index.search_vectors(vec, k, exclude=lambda im, sha=sha: im.sha256 == sha)[0]
        want = identity_key(probe.identity)
        top = hits[0] if hits else None
        rows.append(
            {
                "probe": str(probe.path),
                "identity": probe.identity,
                "top_identity": top.identity if top else None,
                "top_path": top.path if top else None,
                "top_score": top.score if top else None,
                "correct": bool(top and top.identity and identity_key(top.identity) == want),
                "in_top_k": any(h.identity and identity_key(h.identity) == want for h in hits),
            }
        )
    n = len(rows)
    return IdentificationResult(
        n_probes=n,
        rank1=sum(r["correct"] for r in rows) / n if n else float("nan"),
        topk=sum(r["in_top_k"] for r in rows) / n if n else float("nan"),
        k=k,
        per_probe=rows,
        skipped=emb.skipped,
    )
