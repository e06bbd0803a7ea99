"""LFW face verification: ``pairs.txt`` parsing, 10-fold accuracy, ROC, EER and TAR@FAR.

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
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DatasetError

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "Pair",
    "ResolvedPairs",
    "VerificationResult",
    "best_threshold",
    "lfw_image_path",
    "pair_similarities",
    "parse_pairs",
    "plot_roc",
    "resolve_pairs",
    "verify",
]

#: FAR operating points reported by :func:`verify` unless told otherwise.
DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-3, 1e-2)


# --------------------------------------------------------------------------------------
# pairs.txt
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One LFW pair: two image paths relative to the dataset root, ``Name/Name_0001.jpg``.

    ``fold`` counts from 0 (``pairs.txt`` has folds 0-9; ``pairsDevTrain.txt`` only fold 0).
    """

    path_a: str
    path_b: str
    same: bool
    fold: int


class ResolvedPairs(NamedTuple):
    """Result of :func:`resolve_pairs`: absolute paths (one tuple per pair) and missing pairs."""

    paths: list[tuple[Path, Path]]
    missing: list[Pair]


def lfw_image_path(name: str, number: int) -> str:
    """Relative path of image ``number`` (1-based) of ``name``: ``Name/Name_0001.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_number(field_: str, where: str, line: str) -> int:
    try:
        value = int(field_)
    except ValueError:
        raise DatasetError(
            f"{where}: image number {field_!r} is not an integer in line {_clip(line)!r}"
        ) from None
    if value < 1:
        raise DatasetError(f"{where}: image number {value} must be >= 1 in line {_clip(line)!r}")
    return value


def parse_pairs(pairs_file: Path) -> list[Pair]:
    """Parse an LFW pairs file into :class:`Pair` objects, in file order.

    Two layouts are accepted:

    * ``pairs.txt``: header ``n_folds n_per_class`` (``10 300``), then for each fold
      ``n_per_class`` same-person lines ``name i j`` followed by ``n_per_class``
      different-person lines ``name1 i name2 j``;
    * ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``n_per_class`` only (one fold).

    Fields may be separated by tabs or spaces; blank lines are ignored. A malformed file
    raises :class:`~clipface.errors.DatasetError` with a one-line message naming the file
    and the line number.
    """
    pairs_file = Path(pairs_file)
    try:
        text = pairs_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{pairs_file}: pairs file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{pairs_file}: cannot read pairs file ({_clip(str(exc))})") from None

    lines = [(no, line.strip()) for no, line in enumerate(text.splitlines(), start=1)]
    lines = [(no, line) for no, line in lines if line]
    if not lines:
        raise DatasetError(f"{pairs_file}: pairs file is empty")

    header_no, header = lines[0]
    where = f"{pairs_file}:{header_no}"
    head = header.split()
    try:
        numbers = [int(x) for x in head]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        n_folds, n_per_class = 1, numbers[0]
    elif len(numbers) == 2:
        n_folds, n_per_class = numbers
    else:
        raise DatasetError(
            f"{where}: header must be 'n_folds n_per_class' (e.g. '10 300') or "
            f"'n_per_class', got {_clip(header)!r}"
        )
    if n_folds < 1 or n_per_class < 1:
        raise DatasetError(f"{where}: header numbers must be positive, got {_clip(header)!r}")

    expected = n_folds * 2 * n_per_class
    body = lines[1:]
    pairs: list[Pair] = []
    for k, (no, line) in enumerate(body):
        where = f"{pairs_file}:{no}"
        if k >= expected:
            raise DatasetError(
                f"{where}: extra line after the {expected} pairs announced by header "
                f"{header!r}: {_clip(line)!r}"
            )
        fold, pos = divmod(k, 2 * n_per_class)
        same = pos < n_per_class
        fields = line.split()
        if same:
            if len(fields) != 3:
                raise DatasetError(
                    f"{where}: expected a same-person pair 'name i j' (fold {fold}, pair "
                    f"{pos + 1} of {n_per_class}), got {len(fields)} fields: {_clip(line)!r}"
                )
            name, i, j = fields
            pairs.append(
                Pair(
                    lfw_image_path(name, _image_number(i, where, line)),
                    lfw_image_path(name, _image_number(j, where, line)),
                    True,
                    fold,
                )
            )
        else:
            if len(fields) != 4:
                raise DatasetError(
                    f"{where}: expected a different-person pair 'name1 i name2 j' (fold "
                    f"{fold}, pair {pos - n_per_class + 1} of {n_per_class}), got "
                    f"{len(fields)} fields: {_clip(line)!r}"
                )
            name_a, i, name_b, j = fields
            pairs.append(
                Pair(
                    lfw_image_path(name_a, _image_number(i, where, line)),
                    lfw_image_path(name_b, _image_number(j, where, line)),
                    False,
                    fold,
                )
            )
    if len(pairs) < expected:
        raise DatasetError(
            f"{pairs_file}: header {header!r} announces {expected} pairs but the file has "
            f"only {len(pairs)}"
        )
    return pairs


def resolve_pairs(root: Path, pairs: Sequence[Pair]) -> ResolvedPairs:
    """Absolute image paths of ``pairs`` under ``root``, and the pairs with a missing file.

    ``root`` is the folder holding one sub-folder per person (``root/Name/Name_0001.jpg``).
    ``paths`` is aligned with ``pairs`` (missing files are still listed there); ``missing``
    holds, in order, every pair for which at least one of its two files does not exist.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    root = root.resolve()
    exists: dict[str, bool] = {}

    def check(rel: str) -> bool:
        if rel not in exists:
            exists[rel] = (root / rel).is_file()
        return exists[rel]

    paths: list[tuple[Path, Path]] = []
    missing: list[Pair] = []
    for pair in pairs:
        paths.append((root / pair.path_a, root / pair.path_b))
        ok_a, ok_b = check(pair.path_a), check(pair.path_b)
        if not (ok_a and ok_b):
            missing.append(pair)
    return ResolvedPairs(paths, missing)


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


def _far_key(far: float) -> str:
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
            "tar_at_far": {_far_key(f): float(v) for f, v in self.tar_at_far.items()},
            "n_pairs": int(self.n_pairs),
            "n_missing": int(self.n_missing),
        }


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


# --------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------


def plot_roc(
    results: Mapping[str, VerificationResult],
    path: Path,
    *,
    title: str = "Face verification ROC",
) -> Path:
    """Write one ROC curve per model (TAR against log-scale FAR) to ``path``; return it.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). The legend
    gives each model's AUC. Points at FAR = 0 cannot be shown on a log axis and are drawn
    at the left edge, one decade below the finest FAR step (``1 / n_different``).
    """
    if not results:
        raise ValueError("plot_roc needs at least one result")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finest = min(1.0 / max(r.n_different, 1) for r in results.values())
    left = 10 ** math.floor(math.log10(finest) - 1e-9)

    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, res in results.items():
        far = np.maximum(np.asarray(res.roc_far, dtype=np.float64), left)
        ax.plot(far, res.roc_tar, label=f"{name} (AUC {res.auc:.4f})", linewidth=1.5)
    for far in sorted({f for r in results.values() for f in r.tar_at_far}):
        if far >= left:
            ax.axvline(far, color="0.7", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path
