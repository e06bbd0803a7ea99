"""Tests of clipface.data.lfw_pairs and clipface.eval.metrics.verification: pairs parsing, fold thresholds, ROC
metrics, plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.data.lfw_pairs import Pair, parse_pairs, resolve_pairs
from clipface.errors import DatasetError
from clipface.eval.metrics.verification import VerificationResult, best_threshold, pair_similarities, verify
from clipface.report.plots import plot_roc

REPO_ROOT = Path(__file__).resolve().parents[1]
LFW_ROOT = REPO_ROOT.parent / "shared" / "datasets" / "lfw-deepfunneled"


# --------------------------------------------------------------------------------------
# reference implementations (brute force, for cross-checks)
# --------------------------------------------------------------------------------------


def auc_bruteforce(scores: np.ndarray, same: np.ndarray) -> float:
    pos, neg = scores[same], scores[~same]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def best_threshold_bruteforce(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(best training accuracy, threshold) trying every candidate in ascending order."""
    u = np.unique(scores)
    cands = [np.nextafter(u[0], -np.inf)] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:])]
    cands.append(np.nextafter(u[-1], np.inf))
    accs = [np.mean((scores >= t) == same) for t in cands]
    k = int(np.argmax(accs))
    return float(accs[k]), float(cands[k])


def separable(n: int = 600, n_folds: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    sim = np.where(same, rng.uniform(0.6, 1.0, n), rng.uniform(-0.2, 0.4, n))
    folds = np.arange(n) // (n // n_folds)
    return sim, same, folds


# --------------------------------------------------------------------------------------
# pairs.txt
# --------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SMALL_PAIRS = """2\t2
Alice_A\t1\t2
Bob_B\t3\t12
Alice_A\t1\tBob_B\t2
Carol_C\t4\tDave_D\t1
Carol_C\t1\t2
Dave_D\t2\t3
Alice_A\t2\tCarol_C\t3

Bob_B\t1\tDave_D\t4
"""


def test_parse_pairs_small_file(tmp_path: Path) -> None:
    pairs = parse_pairs(write(tmp_path, SMALL_PAIRS))
    assert len(pairs) == 8
    assert pairs[0] == Pair("Alice_A/Alice_A_0001.jpg", "Alice_A/Alice_A_0002.jpg", True, 0)
    assert pairs[1].path_b == "Bob_B/Bob_B_0012.jpg"
    assert pairs[2] == Pair("Alice_A/Alice_A_0001.jpg", "Bob_B/Bob_B_0002.jpg", False, 0)
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    assert pairs[-1] == Pair("Bob_B/Bob_B_0001.jpg", "Dave_D/Dave_D_0004.jpg", False, 1)


def test_parse_pairs_spaces_crlf_and_dev_layout(tmp_path: Path) -> None:
    text = "2\r\nA 1 2\r\nB 1 3\r\nA 1 B 1\r\nC 2 D 3\r\n"
    pairs = parse_pairs(write(tmp_path, text, "pairsDevTrain.txt"))
    assert [p.same for p in pairs] == [True, True, False, False]
    assert {p.fold for p in pairs} == {0}
    assert pairs[3] == Pair("C/C_0002.jpg", "D/D_0003.jpg", False, 0)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1 1\nA 1 2\nA 1 B\n", 3, "different-person"),  # 3 fields where 4 are expected
        ("1 1\nA 1 B 2\nA 1 B 2\n", 2, "same-person"),  # 4 fields where 3 are expected
        ("1 1\nA x 2\nA 1 B 2\n", 2, "not an integer"),
        ("1 1\nA 0 2\nA 1 B 2\n", 2, ">= 1"),
        ("1 1\nA 1 2\nA 1 B 2\nA 1 2\n", 4, "extra line"),
        ("ten 300\nA 1 2\n", 1, "header"),
        ("1 2 3\n", 1, "header"),
    ],
)
def test_parse_pairs_malformed_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        parse_pairs(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}:")
    assert words in message


def test_parse_pairs_too_short_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="announces 4 pairs but the file has only 3"):
        parse_pairs(write(tmp_path, "1 2\nA 1 2\nB 1 2\nA 1 B 1\n"))
    with pytest.raises(DatasetError, match="empty"):
        parse_pairs(write(tmp_path, "\n\n", "empty.txt"))
    with pytest.raises(DatasetError, match="not found"):
        parse_pairs(tmp_path / "nope.txt")


def test_resolve_pairs(tmp_path: Path) -> None:
    for rel in ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    pairs = [
        Pair("A/A_0001.jpg", "A/A_0002.jpg", True, 0),
        Pair("A/A_0001.jpg", "B/B_0002.jpg", False, 0),
        Pair("C/C_0001.jpg", "B/B_0001.jpg", False, 0),
    ]
    paths, missing = resolve_pairs(tmp_path, pairs)
    assert len(paths) == 3
    assert paths[0] == (tmp_path.resolve() / "A/A_0001.jpg", tmp_path.resolve() / "A/A_0002.jpg")
    assert all(p.is_absolute() for pair in paths for p in pair)
    assert missing == pairs[1:]
    with pytest.raises(DatasetError, match="not found"):
        resolve_pairs(tmp_path / "absent", pairs)


def test_pair_similarities() -> None:
    e = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8]), "c": np.array([0.0, 1.0])}
    pairs = [Pair("a", "b", True, 0), Pair("b", "c", False, 0), Pair("a", "zz", False, 0)]
    sims = pair_similarities(pairs, e)
    np.testing.assert_allclose(sims[:2], [0.6, 0.8])
    assert math.isnan(sims[2])


#: LFW's official protocol file (a copy of ../shared/datasets/lfw-deepfunneled/pairs.txt, 155 kB).
PAIRS = Path(__file__).resolve().parent / "fixtures" / "lfw" / "pairs.txt"


def test_real_lfw_pairs() -> None:
    """LFW's pairs.txt parses to its published protocol: 10 folds of 300 same and 300 different pairs."""
    pairs = parse_pairs(PAIRS)
    assert len(pairs) == 6000
    assert sorted({p.fold for p in pairs}) == list(range(10))
    assert sum(p.same for p in pairs) == 3000
    for k in range(10):
        fold = [p for p in pairs if p.fold == k]
        assert len(fold) == 600 and sum(p.same for p in fold) == 300
        assert all(p.same for p in fold[:300]) and not any(p.same for p in fold[300:])
    assert pairs[0].path_a.count("/") == 1 and pairs[0].path_a.endswith("_0001.jpg")
    assert all(p.path_a.split("/")[0] == p.path_b.split("/")[0] for p in pairs if p.same)
    assert not any(p.path_a.split("/")[0] == p.path_b.split("/")[0] for p in pairs if not p.same)


@pytest.mark.skipif(not LFW_ROOT.is_dir(), reason="LFW deep-funneled is not beside the repository")
def test_real_lfw_pairs_resolve() -> None:
    """Every pair names two photos that the full dataset holds."""
    paths, missing = resolve_pairs(LFW_ROOT, parse_pairs(PAIRS))
    assert missing == []
    assert len(paths) == 6000


# --------------------------------------------------------------------------------------
# thresholds and folds
# --------------------------------------------------------------------------------------


def test_best_threshold_hand_example() -> None:
    # sorted: .2d .3d .35s .45d .52d .55s .7s .8s -> best split between .52 and .55 (7/8)
    s = np.array([0.8, 0.35, 0.52, 0.2, 0.7, 0.55, 0.45, 0.3])
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    assert best_threshold(s, y) == pytest.approx(0.535)


def test_best_threshold_ties_pick_lowest_and_extremes() -> None:
    # accept-all, the midpoint 0.55 and reject-all all reach 2/4: the lowest wins.
    s = np.array([0.6, 0.4, 0.5, 0.7])
    y = np.array([1, 1, 0, 0], bool)
    t = best_threshold(s, y)
    assert t < 0.4 and t == np.nextafter(0.4, -np.inf)
    # all different: rejecting all is the only perfect choice
    t = best_threshold(np.array([0.1, 0.9]), np.array([False, False]))
    assert t > 0.9 and t == np.nextafter(0.9, np.inf)
    # all same: accept all
    assert best_threshold(np.array([0.1, 0.9]), np.array([True, True])) < 0.1


def test_fold_procedure_hand_example() -> None:
    # 3 folds x (2 same, 2 different); thresholds worked out by hand:
    #   held-out 0: train on folds 1+2 -> t = (0.52 + 0.55) / 2 = 0.535 -> fold 0 acc 4/4
    #   held-out 1: train on folds 0+2 (separable) -> t = (0.45 + 0.55) / 2 = 0.5
    #               fold 1: 0.8 ok, 0.35 missed, 0.52 falsely accepted, 0.2 ok -> 2/4
    #   held-out 2: train on folds 0+1 -> t = (0.52 + 0.6) / 2 = 0.56
    #               fold 2: 0.7 ok, 0.55 missed, 0.45 and 0.3 rejected -> 3/4
    sim = np.array([0.9, 0.6, 0.4, 0.1, 0.8, 0.35, 0.52, 0.2, 0.7, 0.55, 0.45, 0.3])
    same = np.array([1, 1, 0, 0] * 3, bool)
    folds = np.repeat([0, 1, 2], 4)
    res = verify(sim, same, folds)
    assert res.fold_accuracies == pytest.approx([1.0, 0.5, 0.75])
    assert res.thresholds == pytest.approx([0.535, 0.5, 0.56])
    assert res.accuracy == pytest.approx(0.75)
    assert res.accuracy_std == pytest.approx(math.sqrt((0.25**2 + 0.25**2 + 0.0) / 3))  # ddof=0
    assert res.folds == [0, 1, 2]


def test_single_fold_fits_on_itself() -> None:
    sim = np.array([0.9, 0.8, 0.3, 0.85])
    same = np.array([1, 1, 0, 0], bool)
    res = verify(sim, same, np.zeros(4, int))
    # sorted .3d .8s .85d .9s: t = .55 and t = .875 both get 3/4; the lower one wins
    assert res.thresholds == pytest.approx([0.55])
    assert res.fold_accuracies == [0.75]
    assert res.accuracy_std == 0.0


# --------------------------------------------------------------------------------------
# ROC metrics
# --------------------------------------------------------------------------------------


def test_perfectly_separable() -> None:
    sim, same, folds = separable()
    res = verify(sim, same, folds)
    assert res.accuracy == 1.0 and res.accuracy_std == 0.0
    assert res.fold_accuracies == [1.0] * 10
    assert res.auc == 1.0
    assert res.eer == 0.0
    assert res.tar_at_far == {0.001: 1.0, 0.01: 1.0}
    assert res.n_pairs == 600 and res.n_missing == 0
    assert all(0.4 < t < 0.6 for t in res.thresholds)


def test_perfectly_wrong_scores() -> None:
    sim, same, folds = separable()
    res = verify(-sim, same, folds)
    assert res.auc == 0.0 and res.eer == 1.0
    assert res.tar_at_far[0.01] == 0.0
    # the best training threshold then accepts everything: about half right
    assert res.accuracy == pytest.approx(0.5, abs=0.05)


def test_random_scores_auc_half() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    same = rng.random(n) < 0.5
    sim = rng.standard_normal(n)
    res = verify(sim, same, np.arange(n) % 10)
    assert res.auc == pytest.approx(0.5, abs=0.02)
    assert res.eer == pytest.approx(0.5, abs=0.02)
    assert res.accuracy == pytest.approx(0.5, abs=0.03)
    assert res.tar_at_far[0.01] == pytest.approx(0.01, abs=0.01)


def test_auc_and_eer_with_ties_by_hand() -> None:
    # same: 0.9, 0.5; different: 0.5, 0.1.
    # AUC: (0.9>0.5) + (0.9>0.1) + 0.5*(0.5=0.5) + (0.5>0.1) = 3.5 of 4 pairs.
    # ROC: (0,0) -> t=0.9 (FAR 0, TAR .5) -> t=0.5 (FAR .5, TAR 1) -> t=0.1 (1, 1).
    # FAR-FRR goes -0.5 -> +0.5 across the t=0.5 segment: EER at its middle, 0.25.
    sim = np.array([0.9, 0.5, 0.5, 0.1])
    same = np.array([True, True, False, False])
    res = verify(sim, same, np.array([0, 0, 1, 1]))
    assert res.auc == 0.875
    assert res.eer == pytest.approx(0.25)
    np.testing.assert_allclose(res.roc_far, [0, 0, 0.5, 1])
    np.testing.assert_allclose(res.roc_tar, [0, 0.5, 1, 1])
    assert res.roc_thresholds[0] > 0.9
    np.testing.assert_allclose(res.roc_thresholds[1:], [0.9, 0.5, 0.1])


def test_eer_exact_crossing_and_unbalanced() -> None:
    # same .9 .6 .4, diff .7 .3 .2: after t=.6, FAR = FRR = 1/3 exactly.
    res = verify(np.array([0.9, 0.6, 0.4, 0.7, 0.3, 0.2]), np.array([1, 1, 1, 0, 0, 0], bool), np.zeros(6, int))
    assert res.eer == pytest.approx(1 / 3)
    # 2 same (.9, .5), 3 different (.8, .3, .2): FAR stays 1/3 while FRR falls 1/2 -> 0.
    res = verify(np.array([0.9, 0.5, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0, 0], bool), np.zeros(5, int))
    assert res.eer == pytest.approx(1 / 3)
    assert res.auc == pytest.approx(5 / 6)


def test_tar_at_far_is_conservative() -> None:
    # 1000 different pairs scored 0..999 / 1000, 10 same pairs scored above each decile.
    neg = np.arange(1000) / 1000.0
    pos = np.array([0.9995, 0.9985, 0.9975, 0.95, 0.9, 0.5, 0.3, 0.2, 0.1, 0.0005])
    sim = np.concatenate([pos, neg])
    same = np.arange(sim.size) < pos.size
    res = verify(sim, same, np.arange(sim.size) % 2, far_targets=(1e-3, 1e-2, 0.0005))
    # FAR <= 1e-3 allows one false accept (0.999); the lowest threshold keeping it is the
    # next score down, 0.9985 (a same pair): 2 same pairs accepted.
    assert res.tar_at_far[1e-3] == pytest.approx(0.2)
    assert res.tar_thresholds[1e-3] == pytest.approx(0.9985)
    # FAR <= 1e-2 allows 10 false accepts: accept >= 0.990 -> 3 same pairs.
    assert res.tar_at_far[1e-2] == pytest.approx(0.3)
    # below 1/N: no false accept allowed.
    assert res.tar_at_far[0.0005] == pytest.approx(0.1)
    assert res.tar_thresholds[0.0005] > 0.999
    for far, t in res.tar_thresholds.items():
        assert np.mean(neg >= t) <= far


def test_missing_pairs_are_excluded() -> None:
    sim, same, folds = separable()
    ref = verify(sim, same, folds)
    sim2 = sim.copy()
    sim2[[3, 50, 51]] = np.nan
    res = verify(sim2, same, folds)
    assert res.n_missing == 3 and res.n_pairs == 597
    assert res.auc == 1.0 and res.accuracy == 1.0
    keep = ~np.isnan(sim2)
    direct = verify(sim[keep], same[keep], folds[keep])
    assert res.to_dict() | {"n_missing": 0} == direct.to_dict()
    assert ref.n_pairs == 600


def test_verify_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        verify(np.zeros(3), np.zeros(2, bool), np.zeros(3, int))
    with pytest.raises(ValueError, match="both"):
        verify(np.zeros(3), np.ones(3, bool), np.zeros(3, int))
    with pytest.raises(ValueError, match="finite"):
        verify(np.array([np.inf, 0.0]), np.array([True, False]), np.zeros(2, int))
    with pytest.raises(ValueError, match="all missing"):
        verify(np.array([0.5, 0.1, np.nan]), np.array([True, False, True]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="boolean"):
        verify(np.zeros(2), np.array([2, 0]), np.zeros(2, int))


def test_to_dict_keys_and_json() -> None:
    sim, same, folds = separable(seed=3)
    d = verify(sim, same, folds).to_dict()
    assert set(d) == {
        "accuracy",
        "accuracy_std",
        "fold_accuracies",
        "thresholds",
        "auc",
        "eer",
        "tar_at_far",
        "tar_thresholds",
        "n_pairs",
        "n_missing",
        "n_same",
        "n_different",
        "roc",
    }
    assert set(d["tar_at_far"]) == set(d["tar_thresholds"]) == {"0.001", "0.01"}
    assert d["roc"]["far"][0] == 0.0 and d["roc"]["far"][-1] == 1.0 and d["roc"]["tar"][-1] == 1.0
    assert len(d["fold_accuracies"]) == len(d["thresholds"]) == 10
    assert json.loads(json.dumps(d)) == d


def test_plot_roc(tmp_path: Path) -> None:
    sim, same, folds = separable()
    rng = np.random.default_rng(0)
    results = [
        {"model": "perfect", **verify(sim, same, folds).to_dict()},
        {"model": "noisy", **verify(sim + rng.normal(0, 0.3, sim.size), same, folds).to_dict()},
    ]
    out = plot_roc(results, tmp_path / "plots" / "roc.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_roc([], tmp_path / "x.png")


# --------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------

scores_strategy = st.lists(
    st.tuples(st.integers(0, 8), st.booleans(), st.integers(0, 3)), min_size=2, max_size=40
).filter(lambda xs: len({b for _, b, _ in xs}) == 2)


def unpack(xs):
    sim = np.array([s / 8 for s, _, _ in xs], float)
    same = np.array([b for _, b, _ in xs], bool)
    folds = np.array([f for _, _, f in xs], int)
    return sim, same, folds


@settings(max_examples=150, deadline=None)
@given(scores_strategy)
def test_metrics_match_bruteforce(xs) -> None:
    sim, same, folds = unpack(xs)
    res = verify(sim, same, folds)
    assert res.auc == pytest.approx(auc_bruteforce(sim, same), abs=1e-12)
    assert 0.0 <= res.eer <= 1.0
    assert 0.0 <= res.accuracy <= 1.0 and res.accuracy_std >= 0.0
    fold_ids = sorted(set(folds.tolist()))
    assert res.folds == fold_ids
    for k, t, acc in zip(fold_ids, res.thresholds, res.fold_accuracies):
        train = folds != k if len(fold_ids) > 1 else folds == k
        _, t_ref = best_threshold_bruteforce(sim[train], same[train])
        assert t == pytest.approx(t_ref)
        test = folds == k
        assert acc == pytest.approx(np.mean((sim[test] >= t) == same[test]))
    for far, t in res.tar_thresholds.items():
        accepted = sim >= t
        assert np.mean(accepted[~same]) <= far + 1e-12
        assert res.tar_at_far[far] == pytest.approx(np.mean(accepted[same]))
    # the ROC is monotone and spans (0, 0) -> (1, 1)
    assert res.roc_far[0] == 0 and res.roc_tar[0] == 0
    assert res.roc_far[-1] == 1 and res.roc_tar[-1] == 1
    assert np.all(np.diff(res.roc_far) >= 0) and np.all(np.diff(res.roc_tar) >= 0)


@settings(max_examples=100, deadline=None)
@given(scores_strategy, st.sampled_from([0.25, 0.5, 2.0, 8.0]), st.integers(-8, 8))
def test_invariant_to_increasing_affine_map_and_order(xs, scale, shift) -> None:
    # powers of two and shifts in 1/8 keep the arithmetic exact, so a held-out score lying
    # exactly on a midpoint threshold stays exactly on it
    shift = shift / 8
    sim, same, folds = unpack(xs)
    a = verify(sim, same, folds)
    b = verify(sim * scale + shift, same, folds)
    perm = np.random.default_rng(len(xs)).permutation(len(xs))
    c = verify(sim[perm], same[perm], folds[perm])
    for other in (b, c):
        assert other.auc == pytest.approx(a.auc)
        assert other.eer == pytest.approx(a.eer)
        assert other.fold_accuracies == pytest.approx(a.fold_accuracies)
        assert other.tar_at_far == pytest.approx(a.tar_at_far)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=30))
def test_eer_is_where_far_meets_frr(neg) -> None:
    # adding a perfectly separated positive set leaves EER 0 and AUC 1
    neg = np.array(neg)
    sim = np.concatenate([neg, np.full(5, 2.0)])
    same = np.arange(sim.size) >= neg.size
    res = verify(sim, same, np.zeros(sim.size, int))
    assert res.eer == 0.0 and res.auc == 1.0
    assert isinstance(res, VerificationResult)
