"""LFW face verification metrics: 10-fold accuracy, ROC, EER and TAR@FAR (pair files: :mod:`clipface.data.lfw_pairs`).

The protocol follows the LFW "view 2" convention used by facenet and insightface:

* ``pairs.txt`` holds 10 folds of 300 same-person and 300 different-person pairs.
* For each fold, the decision threshold is the one that maximises accuracy on the other
  9 folds; it is then applied to the held-out fold. The reported accuracy is the mean of
  the 10 held-out accuracies, and ``accuracy_std`` their **population** standard deviation
  (``ddof=0``, as ``np.std`` in the facenet/insightface evaluation code; LFW's own README
  reports the standard error ``std(ddof=1) / sqrt(10)`` instead).
* ROC, AUC, EER and TAR@FAR are computed once over all pairs, threshold-free.

Scores are similarities (higher means "more likely the same person"), and a pair is
accepted as "same" when ``score >= threshold``. Accuracies and rates are fractions in
[0, 1], not percentages. Pairs whose similarity is NaN (an image without an embedding)
are excluded from every metric and counted in ``n_missing``.

This module is pure numpy: it takes similarities, not models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...data.lfw_pairs import Pair

__all__ = ["DEFAULT_FAR_TARGETS", "VerificationResult", "best_threshold", "pair_similarities", "verify"]

#: FAR operating points reported by :func:`verify` unless told otherwise.
DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-3, 1e-2)


def pair_similarities(pairs: Sequence[Pair], embeddings: Mapping[str, np.ndarray]) -> np.ndarray:
    """Cosine similarity of each pair, NaN where either image has no embedding.

    ``embeddings`` maps relative paths (``Pair.path_a`` / ``path_b``) to L2-normalised
    vectors; the similarity is their dot product, in float64.
    """
    sims = np.full(len(pairs), np.nan, dtype=np.float64)
    for k, pair in enumerate(pairs):
        a = embeddings.get(pair.path_a)
        b = embeddings.get(pair.path_b)
        if a is not None and b is not None:
            sims[k] = float(np.dot(np.asarray(a, np.float64), np.asarray(b, np.float64)))
    return sims


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------


def far_key(far: float) -> str:
    """The JSON key of a false-accept rate (``0.001`` -> ``"0.001"``), the same in every results file."""
    return str(float(far))


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """Metrics of one model on one pairs file; see :func:`verify` for definitions.

    ``tar_at_far`` and ``tar_thresholds`` are keyed by the FAR target (a float);
    ``roc_far``, ``roc_tar`` and ``roc_thresholds`` are the ROC points, from (0, 0) to (1, 1),
    thresholds decreasing (the first lies just above the highest score).
    """

    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    auc: float
    eer: float
    tar_at_far: dict[float, float]
    n_pairs: int
    n_missing: int
    folds: list[int] = field(default_factory=list)
    tar_thresholds: dict[float, float] = field(default_factory=dict)
    n_same: int = 0
    n_different: int = 0
    roc_far: np.ndarray = field(default_factory=lambda: np.zeros(0))
    roc_tar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    roc_thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain floats, ints and lists; FAR keys as strings)."""
        return {
            "accuracy": float(self.accuracy),
            "accuracy_std": float(self.accuracy_std),
            "fold_accuracies": [float(a) for a in self.fold_accuracies],
            "thresholds": [float(t) for t in self.thresholds],
            "auc": float(self.auc),
            "eer": float(self.eer),
            "tar_at_far": {far_key(f): float(v) for f, v in self.tar_at_far.items()},
            "tar_thresholds": {far_key(f): float(v) for f, v in self.tar_thresholds.items()},
            "n_pairs": int(self.n_pairs),
            "n_missing": int(self.n_missing),
            "n_same": int(self.n_same),
            "n_different": int(self.n_different),
            "roc": roc_points(self.roc_far, self.roc_tar),
        }


def roc_points(far: np.ndarray, tar: np.ndarray, n: int = 200) -> dict[str, list[float]]:
    """At most about ``n`` ROC points, evenly spaced in log FAR, for plots made from saved results.

    The first and last points and every point where FAR first reaches a new log-spaced step are
    kept, so the curve's shape at low FAR survives.
    """
    far, tar = np.asarray(far, np.float64), np.asarray(tar, np.float64)
    if far.size <= n:
        return {"far": [float(v) for v in far], "tar": [float(v) for v in tar]}
    positive = far[far > 0]
    steps = np.geomspace(positive.min(), 1.0, n) if positive.size else np.array([1.0])
    keep = np.unique(
        np.concatenate([[0, far.size - 1], np.searchsorted(far, steps, side="left").clip(0, far.size - 1)])
    )
    return {"far": [float(v) for v in far[keep]], "tar": [float(v) for v in tar[keep]]}


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy of ``same == (scores >= t)`` on these pairs.

    Candidates are the midpoints between consecutive sorted unique scores, plus one value
    just below the lowest and one just above the highest score (accept all / reject all).
    Among equally accurate candidates the lowest threshold wins (as ``np.argmax`` over the
    ascending candidate list in facenet's evaluation).
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.size == 0:
        raise ValueError("best_threshold needs at least one pair")
    uniq, inv = np.unique(scores, return_inverse=True)
    m = uniq.size
    pos = np.bincount(inv[same], minlength=m)
    neg = np.bincount(inv[~same], minlength=m)
    # Candidate j (0..m) accepts the scores uniq[j:].
    pos_accepted = int(pos.sum()) - np.concatenate(([0], np.cumsum(pos)))
    neg_rejected = np.concatenate(([0], np.cumsum(neg)))
    j = int(np.argmax(pos_accepted + neg_rejected))
    if j == 0:
        return float(np.nextafter(uniq[0], -np.inf))
    if j == m:
        return float(np.nextafter(uniq[-1], np.inf))
    t = (uniq[j - 1] + uniq[j]) / 2.0
    if not uniq[j - 1] < t <= uniq[j]:  # adjacent floats: the midpoint rounds onto one end
        t = uniq[j]
    return float(t)


class _Roc(NamedTuple):
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    fps: np.ndarray  # false accepts at each point (int)
    tps: np.ndarray  # true accepts at each point (int)
    n_pos: int
    n_neg: int


def _roc(scores: np.ndarray, same: np.ndarray) -> _Roc:
    """ROC at every distinct score (accept ``score >= t``), starting at (0, 0)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = same[order]
    ends = np.concatenate((np.flatnonzero(s[1:] != s[:-1]), [s.size - 1]))
    tps = np.concatenate(([0], np.cumsum(y, dtype=np.int64)[ends]))
    fps = np.concatenate(([0], np.cumsum(~y, dtype=np.int64)[ends]))
    thresholds = np.concatenate(([np.nextafter(s[0], np.inf)], s[ends]))
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    return _Roc(fps / n_neg, tps / n_pos, thresholds, fps, tps, n_pos, n_neg)


def _auc(roc: _Roc) -> float:
    """Exact trapezoidal AUC = P(score_same > score_diff) + 0.5 P(tie) (Mann-Whitney)."""
    dfp = np.diff(roc.fps)
    area2 = int(np.sum(dfp * (roc.tps[1:] + roc.tps[:-1])))  # twice the area, in counts
    return area2 / (2 * roc.n_pos * roc.n_neg)


def _eer(roc: _Roc) -> float:
    """Equal error rate, linearly interpolated between the two ROC points around FAR = FRR."""
    # d = FAR - FRR, scaled by n_pos * n_neg to stay exact in integers.
    d = roc.fps * roc.n_pos - (roc.n_pos - roc.tps) * roc.n_neg
    i = int(np.argmax(d >= 0))  # d goes from -n_pos*n_neg at (0, 0) to +n_pos*n_neg at (1, 1)
    if d[i] == 0:
        return float(roc.far[i])
    w = -d[i - 1] / (d[i] - d[i - 1])
    return float(roc.far[i - 1] + w * (roc.far[i] - roc.far[i - 1]))


def _tar_at_far(roc: _Roc, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the lowest ROC threshold whose FAR <= ``far`` (no interpolation)."""
    allowed = math.floor(far * roc.n_neg + 1e-9)
    i = int(np.searchsorted(roc.fps, allowed, side="right")) - 1
    return float(roc.tar[i]), float(roc.thresholds[i])


def _as_bool(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or 0/1)")
    return arr.astype(bool)


def verify(
    sim: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
) -> VerificationResult:
    """LFW-protocol metrics from per-pair similarities.

    Args:
        sim: similarity of each pair (higher = same person); NaN marks a pair with a
            missing embedding, which is excluded and counted in ``n_missing``.
        same: whether each pair shows the same person.
        folds: fold id of each pair (any integers; ``pairs.txt`` gives 0-9).
        far_targets: FAR operating points for ``tar_at_far``.

    Returns:
        :class:`VerificationResult` with

        * ``accuracy`` / ``accuracy_std``: mean and population std (``ddof=0``) of the
          held-out fold accuracies; for each fold the threshold (:func:`best_threshold`)
          maximises accuracy on the other folds. With a single fold the threshold is fitted
          and evaluated on the same pairs (optimistic).
        * ``auc``: exact area under the ROC over all pairs, ties counting one half.
        * ``eer``: equal error rate, linearly interpolated on the ROC.
        * ``tar_at_far``: conservative TAR, i.e. that of the lowest observed threshold whose
          FAR on these pairs does not exceed the target (no interpolation); with ``N``
          different-person pairs FAR moves in steps of ``1/N``, so a target below ``1/N``
          allows no false accept.
        * ``n_pairs``: pairs scored; ``n_missing``: NaN pairs excluded
          (``n_pairs + n_missing == len(sim)``).
    """
    sim = np.asarray(sim, dtype=np.float64)
    same_arr = _as_bool(same, "same")
    folds_arr = np.asarray(folds)
    if sim.ndim != 1 or same_arr.shape != sim.shape or folds_arr.shape != sim.shape:
        raise ValueError(
            f"sim, same and folds must be 1-D arrays of equal length, got shapes "
            f"{sim.shape}, {same_arr.shape}, {folds_arr.shape}"
        )
    if folds_arr.size and not np.issubdtype(folds_arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(folds_arr, 1), 0)):
            raise ValueError("folds must be integers")
        folds_arr = folds_arr.astype(np.int64)
    if np.isinf(sim).any():
        raise ValueError("sim must be finite (NaN marks a missing pair)")
    far_targets = tuple(float(f) for f in far_targets)
    if any(not 0.0 < f <= 1.0 for f in far_targets):
        raise ValueError(f"far_targets must be in (0, 1], got {far_targets}")

    valid = ~np.isnan(sim)
    n_missing = int(sim.size - valid.sum())
    s, y, f = sim[valid], same_arr[valid], folds_arr[valid]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"need both same-person and different-person pairs with a similarity, got "
            f"{n_pos} same and {n_neg} different ({n_missing} missing)"
        )

    fold_ids = [int(k) for k in np.unique(folds_arr)]
    accuracies: list[float] = []
    thresholds: list[float] = []
    for k in fold_ids:
        if not (f == k).any():
            raise ValueError(f"fold {k} has no pair with a similarity (all missing)")
    for k in fold_ids:
        test = f == k
        train = ~test if len(fold_ids) > 1 else test
        t = best_threshold(s[train], y[train])
        accuracies.append(float(np.mean((s[test] >= t) == y[test])))
        thresholds.append(t)

    roc = _roc(s, y)
    tar: dict[float, float] = {}
    tar_thr: dict[float, float] = {}
    for far in far_targets:
        tar[far], tar_thr[far] = _tar_at_far(roc, far)

    return VerificationResult(
        accuracy=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=accuracies,
        thresholds=thresholds,
        auc=_auc(roc),
        eer=_eer(roc),
        tar_at_far=tar,
        n_pairs=int(s.size),
        n_missing=n_missing,
        folds=fold_ids,
        tar_thresholds=tar_thr,
        n_same=n_pos,
        n_different=n_neg,
        roc_far=roc.far,
        roc_tar=roc.tar,
        roc_thresholds=roc.thresholds,
    )
