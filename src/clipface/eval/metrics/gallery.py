"""Gallery identification: the search-engine setting (1:N), closed and open set.

A *gallery* of enrolled face embeddings with identity labels is searched with *probe*
embeddings. Similarity is cosine (the dot product of L2-normalised vectors; inputs are
re-normalised defensively). Metrics:

* **rank-k identification rate** (closed set): share of probes whose true identity is among
  the k best-scoring *identities*, where an identity scores its best-matching gallery image
  (max pooling). Ties count against the probe: the rank is 1 + the number of other
  identities scoring at least as high as the true one.
* **mAP** (mean average precision): for each probe, the gallery *images* are ranked by
  similarity and those of the probe's identity are the relevant ones; AP is the mean of
  the precision at each relevant image. Ties are ordered pessimistically (non-relevant
  images first). mAP is the mean AP over probes.
* **DIR@FAR** (open set): *unknown* probes are people with no image in the gallery. For a
  FAR target f, the threshold t is the lowest one that accepts at most ``floor(f * M)`` of
  the M unknown probes (accept when the best gallery score ``>= t``); DIR is the share of
  known probes whose rank-1 identity is correct *and* whose best score is ``>= t``.

This module is pure numpy; the similarity matrix is computed in probe chunks, so a
13k x 13k search needs only about 64 MB of scores at a time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .verification import far_key

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "DEFAULT_RANKS",
    "GallerySplit",
    "SearchResult",
    "identify",
    "split_gallery",
]

DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10)
DEFAULT_FAR_TARGETS: tuple[float, ...] = (0.001, 0.01, 0.1)

#: Scores held at once: probes per chunk = _CHUNK_ELEMENTS // gallery size (64 MB float32).
_CHUNK_ELEMENTS = 1 << 24
#: Above this many relevant gallery images, AP ranks them by sorting the row instead of
#: comparing each relevant score with the whole row.
_SORT_ABOVE = 32


# --------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GallerySplit:
    """Indices into the ``labels`` given to :func:`split_gallery` (sorted, int arrays).

    * ``gallery_idx``: enrolled images;
    * ``probe_idx``: known probes (their identity is enrolled);
    * ``unknown_idx``: open-set probes (all images of ``unknown_identities``);
    * ``enrolled_only_identities``: identities with at most ``n_gallery`` images, enrolled
      entirely and giving no probe.
    """

    gallery_idx: np.ndarray
    probe_idx: np.ndarray
    unknown_idx: np.ndarray
    unknown_identities: tuple[Hashable, ...]
    enrolled_only_identities: tuple[Hashable, ...]
    labels: tuple[Hashable, ...] = field(repr=False, default=())

    @property
    def gallery_labels(self) -> list[Hashable]:
        return [self.labels[i] for i in self.gallery_idx]

    @property
    def probe_labels(self) -> list[Hashable]:
        return [self.labels[i] for i in self.probe_idx]

    @property
    def unknown_labels(self) -> list[Hashable]:
        return [self.labels[i] for i in self.unknown_idx]


def split_gallery(
    labels: Sequence[str],
    n_gallery: int,
    seed: int,
    n_unknown_identities: int | float = 0,
) -> GallerySplit:
    """Split labelled images into gallery, known probes and unknown (open-set) probes.

    Args:
        labels: identity of each image.
        n_gallery: images enrolled per identity, chosen at random; the rest are probes.
        seed: seed of the random choices (``numpy.random.default_rng``); the split depends
            only on the seed and the label sequence.
        n_unknown_identities: identities held out entirely (none of their images enrolled,
            all of them unknown probes), chosen at random among all identities: an ``int``
            is a count, a ``float`` in [0, 1] a share of the identities (rounded).

    Identities with at most ``n_gallery`` images (fewer than ``n_gallery + 1``) are enrolled
    whole and give no probe: as in a search engine, every indexed photo is a possible false
    match, so they stay in the gallery as distractors. They are listed in
    ``enrolled_only_identities``.
    """
    labels = list(labels)
    if isinstance(n_gallery, bool) or not isinstance(n_gallery, numbers.Integral):
        raise TypeError(f"n_gallery must be an int, got {n_gallery!r}")
    if n_gallery < 1:
        raise ValueError(f"n_gallery must be >= 1, got {n_gallery}")

    by_identity: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        by_identity.setdefault(label, []).append(i)
    try:
        identities = sorted(by_identity)
    except TypeError:  # labels of mixed types: fall back to first appearance
        identities = list(by_identity)
    n_ids = len(identities)

    if isinstance(n_unknown_identities, bool):
        raise TypeError("n_unknown_identities must be an int (count) or a float (share)")
    if isinstance(n_unknown_identities, numbers.Integral):
        n_unknown = int(n_unknown_identities)
    elif isinstance(n_unknown_identities, numbers.Real):
        share = float(n_unknown_identities)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a share of unknown identities must be in [0, 1], got {share}")
        n_unknown = int(round(share * n_ids))
    else:
        raise TypeError(f"n_unknown_identities must be an int or a float, got {n_unknown_identities!r}")
    if not 0 <= n_unknown <= n_ids:
        raise ValueError(f"cannot hold out {n_unknown} of {n_ids} identities")

    rng = np.random.default_rng(seed)
    unknown_pos = np.sort(rng.choice(n_ids, size=n_unknown, replace=False)) if n_unknown else []
    unknown = {identities[int(k)] for k in unknown_pos}

    gallery: list[int] = []
    probes: list[int] = []
    unknown_idx: list[int] = []
    enrolled_only: list[Hashable] = []
    for name in identities:
        idx = by_identity[name]
        if name in unknown:
            unknown_idx.extend(idx)
        elif len(idx) <= n_gallery:
            gallery.extend(idx)
            enrolled_only.append(name)
        else:
            perm = rng.permutation(len(idx))
            gallery.extend(idx[p] for p in perm[:n_gallery])
            probes.extend(idx[p] for p in perm[n_gallery:])

    def as_index(values: list[int]) -> np.ndarray:
        return np.sort(np.asarray(values, dtype=np.intp))

    return GallerySplit(
        gallery_idx=as_index(gallery),
        probe_idx=as_index(probes),
        unknown_idx=as_index(unknown_idx),
        unknown_identities=tuple(name for name in identities if name in unknown),
        enrolled_only_identities=tuple(enrolled_only),
        labels=tuple(labels),
    )


# --------------------------------------------------------------------------------------
# identification
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Identification metrics; see :func:`identify` and the module docstring.

    ``rank_rates`` maps k to the rank-k identification rate; ``dir_at_far``,
    ``dir_thresholds`` and ``far_achieved`` are keyed by FAR target and are ``None`` when
    there were no unknown probes (``dir_omitted_reason`` says so). ``probe_ranks``,
    ``probe_ap`` and ``probe_scores`` (best gallery score) are per known probe, in input
    order; ``unknown_scores`` per unknown probe.
    """

    n_identities: int
    n_gallery: int
    n_probes: int
    rank_rates: dict[int, float]
    map: float
    dir_at_far: dict[float, float] | None
    n_unknown_probes: int
    dir_omitted_reason: str | None = None
    dir_thresholds: dict[float, float] | None = None
    far_achieved: dict[float, float] | None = None
    probe_ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    probe_ap: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    probe_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    unknown_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    def rank(self, k: int) -> float:
        """Rank-k identification rate (computed for any k, not only the requested ones)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return float(np.mean(self.probe_ranks <= k))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, ``rank{k}`` per requested k, ``map``, ``dir_at_far``.

        ``dir_at_far`` is ``None`` when it could not be computed; ``dir_at_far_omitted``
        then gives the reason (it is ``None`` otherwise).
        """
        out: dict[str, Any] = {
            "n_identities": int(self.n_identities),
            "n_gallery": int(self.n_gallery),
            "n_probes": int(self.n_probes),
        }
        for k, rate in sorted(self.rank_rates.items()):
            out[f"rank{k}"] = float(rate)
        out["map"] = float(self.map)
        out["dir_at_far"] = (
            None if self.dir_at_far is None else {far_key(f): float(v) for f, v in self.dir_at_far.items()}
        )
        out["dir_at_far_omitted"] = self.dir_omitted_reason
        out["n_unknown_probes"] = int(self.n_unknown_probes)
        return out


def _unit_rows(emb: Any, name: str) -> np.ndarray:
    arr = np.asarray(emb, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if arr.shape[0] and (norms == 0).any():
        raise ValueError(f"{name} contains all-zero vectors")
    return np.ascontiguousarray(arr / norms) if arr.shape[0] else arr


def _average_precision(row: np.ndarray, start: int, stop: int) -> float:
    """AP of the relevant columns ``row[start:stop]``, ties ordered pessimistically."""
    rel = np.sort(row[start:stop])  # ascending
    n_rel = rel.size
    if n_rel <= _SORT_ABOVE:
        n_ge = np.count_nonzero(row[None, :] >= rel[:, None], axis=1)
    else:
        n_ge = row.size - np.searchsorted(np.sort(row), rel, side="left")
    rel_ge = n_rel - np.searchsorted(rel, rel, side="left")  # relevant scoring >= each
    # The i-th relevant image from the top (i = n_rel..1 along `rel`) sits after every
    # non-relevant image scoring at least as high: position = non-relevant >= + i.
    i = np.arange(n_rel, 0, -1)
    position = n_ge - rel_ge + i
    return float(np.mean(i / position))


def identify(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    ranks: Sequence[int] = DEFAULT_RANKS,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    unknown_probe_emb: np.ndarray | None = None,
    *,
    chunk_size: int | None = None,
) -> SearchResult:
    """Search every probe against the gallery and compute rank-k, mAP and DIR@FAR.

    Args:
        gallery_emb, probe_emb: (n, dim) embeddings (re-normalised to unit length).
        gallery_labels, probe_labels: identity of each row; every probe identity must be
            enrolled (pass people absent from the gallery as ``unknown_probe_emb``).
        ranks: k values for the rank-k identification rates.
        far_targets: FAR targets in (0, 1] for open-set DIR@FAR.
        unknown_probe_emb: (m, dim) probes of people not in the gallery; without them
            DIR@FAR is omitted (``dir_at_far`` is ``None``, with ``dir_omitted_reason``).
        chunk_size: probes scored at once (default: about 16M similarities per chunk).

    Definitions (ties, pooling, thresholds) are in the module docstring. With M unknown
    probes FAR moves in steps of 1/M, so a target below 1/M allows no false accept.
    """
    gallery = _unit_rows(gallery_emb, "gallery_emb")
    probes = _unit_rows(probe_emb, "probe_emb")
    gallery_labels = list(gallery_labels)
    probe_labels = list(probe_labels)
    n_gallery, dim = gallery.shape
    if n_gallery == 0:
        raise ValueError("the gallery is empty")
    if probes.shape[0] == 0:
        raise ValueError("there are no probes")
    if probes.shape[1] != dim:
        raise ValueError(f"probe_emb has dimension {probes.shape[1]}, gallery_emb {dim}")
    if len(gallery_labels) != n_gallery:
        raise ValueError(f"{len(gallery_labels)} gallery labels for {n_gallery} gallery embeddings")
    if len(probe_labels) != probes.shape[0]:
        raise ValueError(f"{len(probe_labels)} probe labels for {probes.shape[0]} probe embeddings")
    ranks = tuple(sorted({int(k) for k in ranks}))
    if any(k < 1 for k in ranks):
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    far_targets = tuple(float(f) for f in far_targets)
    if any(not 0.0 < f <= 1.0 for f in far_targets):
        raise ValueError(f"far_targets must be in (0, 1], got {far_targets}")

    # Identity ids by first appearance; gallery columns grouped by identity.
    ident: dict[Hashable, int] = {}
    for label in gallery_labels:
        ident.setdefault(label, len(ident))
    gallery_id = np.fromiter((ident[x] for x in gallery_labels), np.int64, n_gallery)
    order = np.argsort(gallery_id, kind="stable")
    gallery = np.ascontiguousarray(gallery[order])
    counts = np.bincount(gallery_id, minlength=len(ident))
    stops = np.cumsum(counts)
    starts = stops - counts
    unknown_labels = [x for x in dict.fromkeys(probe_labels) if x not in ident]
    if unknown_labels:
        shown = ", ".join(repr(x) for x in unknown_labels[:3])
        raise ValueError(
            f"{len(unknown_labels)} probe identities are not in the gallery ({shown}"
            f"{', ...' if len(unknown_labels) > 3 else ''}); pass them as unknown_probe_emb"
        )
    probe_id = np.fromiter((ident[x] for x in probe_labels), np.int64, len(probe_labels))

    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    step = chunk_size or max(1, _CHUNK_ELEMENTS // n_gallery)
    n_probes = probes.shape[0]
    probe_ranks = np.empty(n_probes, np.int64)
    probe_ap = np.empty(n_probes, np.float64)
    probe_scores = np.empty(n_probes, np.float32)
    for lo in range(0, n_probes, step):
        hi = min(lo + step, n_probes)
        scores = probes[lo:hi] @ gallery.T  # (chunk, n_gallery), columns grouped by identity
        best = np.maximum.reduceat(scores, starts, axis=1)  # (chunk, n_identities)
        pid = probe_id[lo:hi]
        true = best[np.arange(hi - lo), pid]
        probe_ranks[lo:hi] = np.count_nonzero(best >= true[:, None], axis=1)
        probe_scores[lo:hi] = best.max(axis=1)
        for r, k in enumerate(pid):
            probe_ap[lo + r] = _average_precision(scores[r], int(starts[k]), int(stops[k]))

    rank_rates = {k: float(np.mean(probe_ranks <= k)) for k in ranks}

    unknown_scores = np.zeros(0, np.float32)
    if unknown_probe_emb is not None:
        unknown = _unit_rows(unknown_probe_emb, "unknown_probe_emb")
        if unknown.shape[0] and unknown.shape[1] != dim:
            raise ValueError(f"unknown_probe_emb has dimension {unknown.shape[1]}, gallery_emb {dim}")
        unknown_scores = np.empty(unknown.shape[0], np.float32)
        for lo in range(0, unknown.shape[0], step):
            hi = min(lo + step, unknown.shape[0])
            unknown_scores[lo:hi] = (unknown[lo:hi] @ gallery.T).max(axis=1)

    n_unknown = int(unknown_scores.size)
    dir_at_far: dict[float, float] | None = None
    dir_thr: dict[float, float] | None = None
    far_got: dict[float, float] | None = None
    reason: str | None = None
    if n_unknown == 0:
        reason = "no unknown probes (people absent from the gallery), so FAR is undefined"
    else:
        dir_at_far, dir_thr, far_got = {}, {}, {}
        desc = np.sort(unknown_scores)[::-1]
        correct = probe_ranks == 1
        for far in far_targets:
            allowed = math.floor(far * n_unknown + 1e-9)
            # the next float32 above the (allowed+1)-th best unknown score: exact for float32
            # scores whether compared in float32 or float64
            t = np.float32(-np.inf) if allowed >= n_unknown else np.nextafter(desc[allowed], np.float32(np.inf))
            dir_at_far[far] = float(np.mean(correct & (probe_scores >= t)))
            dir_thr[far] = float(t)
            far_got[far] = float(np.mean(desc >= t))

    return SearchResult(
        n_identities=len(ident),
        n_gallery=n_gallery,
        n_probes=n_probes,
        rank_rates=rank_rates,
        map=float(np.mean(probe_ap)),
        dir_at_far=dir_at_far,
        n_unknown_probes=n_unknown,
        dir_omitted_reason=reason,
        dir_thresholds=dir_thr,
        far_achieved=far_got,
        probe_ranks=probe_ranks,
        probe_ap=probe_ap,
        probe_scores=probe_scores,
        unknown_scores=unknown_scores,
    )
