"""Tests of clipface.eval.metrics.gallery: gallery split, rank-k, mAP, open-set DIR@FAR."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.eval.metrics import gallery as search
from clipface.eval.metrics.gallery import identify, split_gallery

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def probes_with_similarities(rows: list[list[float]]) -> np.ndarray:
    """Unit probes whose cosine with gallery image g (the basis vector e_g) is rows[p][g].

    One extra dimension absorbs the remaining norm, so any row with sum of squares <= 1
    is reachable. The gallery is ``np.eye(n_gallery, n_gallery + 1)``.
    """
    sims = np.asarray(rows, dtype=np.float64)
    rest = np.sqrt(1.0 - (sims**2).sum(axis=1, keepdims=True))
    return np.hstack([sims, rest]).astype(np.float32)


def basis_gallery(n: int) -> np.ndarray:
    return np.eye(n, n + 1, dtype=np.float32)


def reference(gallery, g_labels, probes, p_labels):
    """Brute-force rank (ties against the probe) and AP (non-relevant first on ties)."""
    sims = probes.astype(np.float64) @ gallery.astype(np.float64).T
    g_labels = list(g_labels)
    ranks, aps = [], []
    for row, label in zip(sims, p_labels):
        best = {}
        for s, g in zip(row, g_labels):
            best[g] = max(best.get(g, -np.inf), s)
        ranks.append(1 + sum(1 for g, s in best.items() if g != label and s >= best[label]))
        order = sorted(range(len(row)), key=lambda j: (-row[j], g_labels[j] == label))
        hits, precisions = 0, []
        for pos, j in enumerate(order, start=1):
            if g_labels[j] == label:
                hits += 1
                precisions.append(hits / pos)
        aps.append(float(np.mean(precisions)))
    return np.array(ranks), np.array(aps)


def assert_same_summary(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert value == pytest.approx(b[key], abs=1e-12), key
        elif isinstance(value, dict):
            assert value == pytest.approx(b[key], abs=1e-12), key
        else:
            assert value == b[key], key


# --------------------------------------------------------------------------------------
# split_gallery
# --------------------------------------------------------------------------------------

LABELS = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + ["e"] * 4 + ["f"] * 6


def test_split_gallery_closed_set() -> None:
    split = split_gallery(LABELS, n_gallery=2, seed=0)
    g = Counter(split.gallery_labels)
    p = Counter(split.probe_labels)
    assert g == {"a": 2, "b": 2, "c": 2, "d": 1, "e": 2, "f": 2}
    assert p == {"a": 3, "b": 1, "e": 2, "f": 4}
    assert split.enrolled_only_identities == ("c", "d")
    assert split.unknown_idx.size == 0 and split.unknown_identities == ()
    everything = np.concatenate([split.gallery_idx, split.probe_idx])
    assert sorted(everything.tolist()) == list(range(len(LABELS)))
    assert np.all(np.diff(split.gallery_idx) > 0)


def test_split_gallery_is_seeded() -> None:
    a = split_gallery(LABELS, 1, seed=7, n_unknown_identities=2)
    b = split_gallery(LABELS, 1, seed=7, n_unknown_identities=2)
    assert np.array_equal(a.gallery_idx, b.gallery_idx)
    assert a.unknown_identities == b.unknown_identities
    draws = {tuple(split_gallery(LABELS, 1, seed=s).gallery_idx) for s in range(20)}
    assert len(draws) > 1


@pytest.mark.parametrize(("n_unknown", "expected"), [(2, 2), (0.5, 3), (1.0, 6), (0, 0)])
def test_split_gallery_unknown_identities(n_unknown, expected: int) -> None:
    split = split_gallery(LABELS, 2, seed=3, n_unknown_identities=n_unknown)
    assert len(split.unknown_identities) == expected
    unknown = set(split.unknown_identities)
    assert set(split.unknown_labels) == unknown
    assert Counter(split.unknown_labels) == {u: LABELS.count(u) for u in unknown}
    assert not unknown & set(split.gallery_labels)
    assert not unknown & set(split.probe_labels)
    all_idx = np.concatenate([split.gallery_idx, split.probe_idx, split.unknown_idx])
    assert sorted(all_idx.tolist()) == list(range(len(LABELS)))


def test_split_gallery_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        split_gallery(LABELS, 0, seed=0)
    with pytest.raises(ValueError):
        split_gallery(LABELS, 1, seed=0, n_unknown_identities=7)
    with pytest.raises(ValueError):
        split_gallery(LABELS, 1, seed=0, n_unknown_identities=1.5)
    with pytest.raises(TypeError):
        split_gallery(LABELS, 1, seed=0, n_unknown_identities=True)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=40),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.integers(0, 3),
)
def test_split_gallery_partitions(ids, n_gallery, seed, n_unknown) -> None:
    labels = [f"id{i}" for i in ids]
    n_unknown = min(n_unknown, len(set(labels)))
    split = split_gallery(labels, n_gallery, seed, n_unknown)
    all_idx = np.concatenate([split.gallery_idx, split.probe_idx, split.unknown_idx])
    assert sorted(all_idx.tolist()) == list(range(len(labels)))
    g = Counter(split.gallery_labels)
    assert all(count <= n_gallery for count in g.values())
    assert set(split.probe_labels) <= set(g)  # every known probe is enrolled
    for name in split.enrolled_only_identities:
        assert labels.count(name) <= n_gallery and name not in split.probe_labels


# --------------------------------------------------------------------------------------
# identify: hand-computed cases
# --------------------------------------------------------------------------------------

G_LABELS = ["A", "A", "B", "C", "D", "E"]
P_ROWS = [
    # A: identities A .30 B .40 C .20 D .05 E .15 -> rank 2; A images at positions 2 and 5
    [0.30, 0.10, 0.40, 0.20, 0.05, 0.15],
    # B: best -> rank 1, AP 1
    [0.20, 0.10, 0.50, 0.30, 0.00, 0.10],
    # C: A .5, D .4, E .3, C .15 -> rank 4; C image at position 5 -> AP 1/5
    [0.50, 0.45, 0.10, 0.15, 0.40, 0.30],
    # E: A .6, B .5, C .45, D .4, E .05 -> rank 5; E image last -> AP 1/6
    [0.60, 0.10, 0.50, 0.45, 0.40, 0.05],
]
P_LABELS = ["A", "B", "C", "E"]


def test_identify_hand_example() -> None:
    res = identify(
        basis_gallery(6),
        G_LABELS,
        probes_with_similarities(P_ROWS),
        P_LABELS,
        ranks=(1, 2, 4, 5, 10),
    )
    assert res.probe_ranks.tolist() == [2, 1, 4, 5]
    np.testing.assert_allclose(res.probe_ap, [(1 / 2 + 2 / 5) / 2, 1.0, 1 / 5, 1 / 6])
    assert res.rank_rates == pytest.approx({1: 0.25, 2: 0.5, 4: 0.75, 5: 1.0, 10: 1.0})
    assert res.map == pytest.approx((0.45 + 1 + 0.2 + 1 / 6) / 4)
    assert (res.n_identities, res.n_gallery, res.n_probes) == (5, 6, 4)
    np.testing.assert_allclose(res.probe_scores, [0.4, 0.5, 0.5, 0.6], rtol=1e-6)
    assert res.dir_at_far is None and "unknown" in res.dir_omitted_reason
    d = res.to_dict()
    assert d["rank1"] == 0.25 and d["rank5"] == 1.0 and d["rank10"] == 1.0
    assert d["dir_at_far"] is None and d["dir_at_far_omitted"]
    assert d["n_unknown_probes"] == 0


def test_identify_gallery_order_and_label_order_do_not_matter() -> None:
    perm = [5, 3, 0, 4, 2, 1]
    rows = np.asarray(P_ROWS)[:, perm].tolist()
    res = identify(
        basis_gallery(6), [G_LABELS[i] for i in perm], probes_with_similarities(rows), P_LABELS, ranks=(1, 2, 4, 5)
    )
    assert res.probe_ranks.tolist() == [2, 1, 4, 5]
    assert res.map == pytest.approx((0.45 + 1 + 0.2 + 1 / 6) / 4)


def test_dir_at_far_constructed() -> None:
    gallery = basis_gallery(3)
    g_labels = ["X", "Y", "Z"]
    known = probes_with_similarities(
        [[0.99, 0, 0], [0, 0.9, 0], [0, 0, 0.8], [0.2, 0.97, 0]]  # last one: X mistaken for Y
    )
    k_labels = ["X", "Y", "Z", "X"]
    tops = [0.05 + 0.1 * i for i in range(10)]  # unknown best scores .05 .15 ... .95
    unknown = probes_with_similarities([[t, 0, 0] for t in tops])
    res = identify(
        gallery, g_labels, known, k_labels, ranks=(1,), far_targets=(0.01, 0.1, 0.2, 1.0), unknown_probe_emb=unknown
    )
    assert res.rank_rates[1] == 0.75
    assert res.n_unknown_probes == 10
    # FAR 0.01 of 10 -> no false accept: t just above .95 -> only X (.99)
    # FAR 0.1 -> one false accept (.95): t just above .85 -> X (.99), Y (.9)
    # FAR 0.2 -> two (.95, .85): t just above .75 -> X, Y, Z (.8); the wrong one never counts
    # FAR 1.0 -> all accepted: DIR = rank-1 rate
    assert res.dir_at_far == pytest.approx({0.01: 0.25, 0.1: 0.5, 0.2: 0.75, 1.0: 0.75})
    assert res.far_achieved == pytest.approx({0.01: 0.0, 0.1: 0.1, 0.2: 0.2, 1.0: 1.0})
    assert res.dir_thresholds[0.01] == pytest.approx(0.95, abs=1e-6)
    assert res.dir_thresholds[0.01] > res.unknown_scores.max()
    d = res.to_dict()
    assert d["dir_at_far"] == pytest.approx({"0.01": 0.25, "0.1": 0.5, "0.2": 0.75, "1.0": 0.75})
    assert d["dir_at_far_omitted"] is None
    assert json.loads(json.dumps(d)) == d


def test_dir_at_far_ties_among_unknown_are_conservative() -> None:
    gallery = basis_gallery(2)
    known = probes_with_similarities([[0.9, 0], [0, 0.7]])
    unknown = probes_with_similarities([[0.8, 0], [0, 0.8], [0.3, 0]])
    # FAR 0.34 of 3 allows one false accept, but the two top unknown scores tie at .8:
    # accepting either accepts both, so the threshold goes above .8.
    res = identify(gallery, ["X", "Y"], known, ["X", "Y"], far_targets=(0.34,), unknown_probe_emb=unknown)
    assert res.far_achieved[0.34] == 0.0
    assert res.dir_at_far[0.34] == 0.5


def test_empty_unknown_set_omits_dir() -> None:
    res = identify(
        basis_gallery(2),
        ["X", "Y"],
        probes_with_similarities([[0.9, 0]]),
        ["X"],
        unknown_probe_emb=np.zeros((0, 3), np.float32),
    )
    assert res.dir_at_far is None and res.n_unknown_probes == 0


def test_ties_count_against_the_probe() -> None:
    # two identical gallery images of different people: the probe cannot be rank 1
    gallery = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    res = identify(gallery, ["P", "Q", "R"], np.array([[1, 0]], np.float32), ["P"], ranks=(1, 2))
    assert res.probe_ranks.tolist() == [2]
    assert res.probe_ap.tolist() == [0.5]


def test_identify_rejects_bad_input() -> None:
    g = basis_gallery(2)
    p = probes_with_similarities([[0.5, 0.1]])
    with pytest.raises(ValueError, match="not in the gallery"):
        identify(g, ["X", "Y"], p, ["Z"])
    with pytest.raises(ValueError, match="labels"):
        identify(g, ["X"], p, ["X"])
    with pytest.raises(ValueError, match="dimension"):
        identify(g, ["X", "Y"], p[:, :2], ["X"])
    with pytest.raises(ValueError, match="NaN"):
        identify(g, ["X", "Y"], p * np.nan, ["X"])
    with pytest.raises(ValueError, match="zero"):
        identify(g, ["X", "Y"], p * 0, ["X"])
    with pytest.raises(ValueError, match="ranks"):
        identify(g, ["X", "Y"], p, ["X"], ranks=(0,))
    with pytest.raises(ValueError, match="far_targets"):
        identify(g, ["X", "Y"], p, ["X"], far_targets=(0.0,))
    with pytest.raises(ValueError, match="chunk_size"):
        identify(g, ["X", "Y"], p, ["X"], chunk_size=0)
    with pytest.raises(ValueError, match="no probes"):
        identify(g, ["X", "Y"], p[:0], [])


def test_random_embeddings_near_chance_and_clusters_perfect() -> None:
    rng = np.random.default_rng(0)
    n_ids, dim = 50, 64
    centers = rng.standard_normal((n_ids, dim))
    labels = np.repeat(np.arange(n_ids), 4).astype(str)
    ids = np.repeat(np.arange(n_ids), 4)
    split = split_gallery(labels.tolist(), 1, seed=0)
    tight = centers[ids] + 0.05 * rng.standard_normal((ids.size, dim))
    noise = rng.standard_normal((ids.size, dim))
    gi, pi = split.gallery_idx, split.probe_idx
    good = identify(tight[gi], labels[gi], tight[pi], labels[pi])
    assert good.rank_rates[1] == 1.0 and good.map == 1.0
    bad = identify(noise[gi], labels[gi], noise[pi], labels[pi])
    assert bad.rank_rates[1] < 0.15 and bad.rank_rates[10] < 0.45


def test_chunking_and_sorting_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(30), rng.integers(1, 60, 30)).astype(str)
    emb = rng.standard_normal((labels.size, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    split = split_gallery(labels.tolist(), 40, seed=1)
    gi, pi = split.gallery_idx, split.probe_idx
    args = (emb[gi], labels[gi], emb[pi], labels[pi])
    a = identify(*args)
    b = identify(*args, chunk_size=7)
    monkeypatch.setattr(search, "_SORT_ABOVE", 0)  # force the sort + searchsorted AP path
    c = identify(*args, chunk_size=1)
    for other in (b, c):
        np.testing.assert_array_equal(other.probe_ranks, a.probe_ranks)
        np.testing.assert_allclose(other.probe_ap, a.probe_ap, rtol=1e-12)
    ranks, aps = reference(*args)
    np.testing.assert_array_equal(a.probe_ranks, ranks)
    np.testing.assert_allclose(a.probe_ap, aps, rtol=1e-9)


# --------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------

# 4-D unit vectors with exactly representable dot products (0, +-0.5, +-1): many exact ties.
POOL = np.array(
    [np.eye(4)[i] * s for i in range(4) for s in (1, -1)] + list(itertools.product((0.5, -0.5), repeat=4)),
    dtype=np.float32,
)


@st.composite
def search_case(draw):
    n_ids = draw(st.integers(1, 5))
    g_ids = draw(st.lists(st.integers(0, n_ids - 1), min_size=1, max_size=12))
    enrolled = sorted(set(g_ids))
    p_ids = draw(st.lists(st.sampled_from(enrolled), min_size=1, max_size=8))
    vec = st.integers(0, len(POOL) - 1)
    g_vec = draw(st.lists(vec, min_size=len(g_ids), max_size=len(g_ids)))
    p_vec = draw(st.lists(vec, min_size=len(p_ids), max_size=len(p_ids)))
    u_vec = draw(st.lists(vec, max_size=6))
    return (
        POOL[g_vec],
        [f"id{i}" for i in g_ids],
        POOL[p_vec],
        [f"id{i}" for i in p_ids],
        POOL[u_vec] if u_vec else None,
    )


@settings(max_examples=120, deadline=None)
@given(search_case(), st.randoms(use_true_random=False))
def test_identify_properties(case, rnd) -> None:
    gallery, g_labels, probes, p_labels, unknown = case
    ranks = (1, 2, 3, 5, 10)
    res = identify(
        gallery, g_labels, probes, p_labels, ranks=ranks, unknown_probe_emb=unknown, far_targets=(0.2, 0.5, 1.0)
    )
    rates = [res.rank_rates[k] for k in ranks]
    assert all(0.0 <= r <= 1.0 for r in rates)
    assert rates == sorted(rates)  # rank-k is monotone in k
    assert res.rank(res.n_identities) == 1.0
    assert 0.0 < res.map <= 1.0
    assert np.all(res.probe_ap <= 1.0) and np.all(res.probe_ap > 0.0)
    # matches the brute-force reference, ties included
    ref_ranks, ref_aps = reference(gallery, g_labels, probes, p_labels)
    np.testing.assert_array_equal(res.probe_ranks, ref_ranks)
    np.testing.assert_allclose(res.probe_ap, ref_aps, rtol=1e-12)
    if unknown is None:
        assert res.dir_at_far is None
    else:
        for far, value in res.dir_at_far.items():
            assert 0.0 <= value <= res.rank_rates[1]
            assert res.far_achieved[far] <= far
        dirs = [res.dir_at_far[f] for f in (0.2, 0.5, 1.0)]
        assert dirs == sorted(dirs)
        assert res.dir_at_far[1.0] == res.rank_rates[1]
    # permutation invariance (gallery, probes and identity names)
    gp = list(range(len(g_labels)))
    pp = list(range(len(p_labels)))
    rnd.shuffle(gp)
    rnd.shuffle(pp)
    rename = {name: f"other-{name}" for name in set(g_labels)}
    res2 = identify(
        gallery[gp],
        [rename[g_labels[i]] for i in gp],
        probes[pp],
        [rename[p_labels[i]] for i in pp],
        ranks=ranks,
        unknown_probe_emb=unknown,
        far_targets=(0.2, 0.5, 1.0),
    )
    assert_same_summary(res2.to_dict(), res.to_dict())
    np.testing.assert_array_equal(res2.probe_ranks, res.probe_ranks[pp])


def test_to_dict_keys() -> None:
    res = identify(basis_gallery(6), G_LABELS, probes_with_similarities(P_ROWS), P_LABELS)
    d = res.to_dict()
    assert set(d) == {
        "n_identities",
        "n_gallery",
        "n_probes",
        "rank1",
        "rank5",
        "rank10",
        "map",
        "dir_at_far",
        "dir_at_far_omitted",
        "n_unknown_probes",
    }
    assert (d["rank1"], d["rank5"], d["rank10"], d["n_identities"], d["n_gallery"], d["n_probes"]) == (
        0.25,
        1.0,
        1.0,
        5,
        6,
        4,
    )
    assert d["map"] == pytest.approx((0.45 + 1 + 0.2 + 1 / 6) / 4) and d["n_unknown_probes"] == 0
    assert json.loads(json.dumps(d)) == d
