"""Our hand-written metrics against the reference implementations: SSIM (scikit-image), ROC/AUC/EER/TAR
(scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipface.cloak.ssim import dssim_uint8, ssim
from clipface.eval.metrics.verification import verify

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a test dependency")
sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a test dependency")


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's SSIM with tf.image.ssim's settings (Gaussian 11-tap window, sigma 1.5, population covariance)."""
    return float(
        skimage_metrics.structural_similarity(
            a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
        )
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(11, 48), w=st.integers(11, 48), noise=st.floats(0.0, 80.0))
def test_ssim_matches_scikit_image(seed: int, h: int, w: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
    ta = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[None]
    ref = reference_ssim(a, b)
    assert float(ssim(ta, tb, data_range=255.0)[0]) == pytest.approx(ref, abs=1e-9)
    assert dssim_uint8(a, b) == pytest.approx((1 - ref) / 2, abs=1e-9)


def reference_eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER where FAR = FRR, by linear interpolation between the ROC points around the crossing."""
    d = fpr - (1 - tpr)
    i = int(np.argmax(d >= 0))
    if d[i] == 0:
        return float(fpr[i])
    w = -d[i - 1] / (d[i] - d[i - 1])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(20, 400), gap=st.floats(0.0, 3.0), levels=st.sampled_from([0, 5, 50])
)
def test_roc_auc_eer_tar_match_scikit_learn(seed: int, n: int, gap: float, levels: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    same[:2] = [True, False]
    scores = rng.normal(0, 1, n) + gap * same
    if levels:  # many ties, as with quantised similarities
        scores = np.round(scores * levels) / levels
    res = verify(scores, same, np.arange(n) % 2, far_targets=(0.01, 0.1, 0.5))
    fpr, tpr, _ = sklearn_metrics.roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(res.roc_far, fpr, atol=1e-12)
    np.testing.assert_allclose(res.roc_tar, tpr, atol=1e-12)
    assert res.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, scores), abs=1e-12)
    assert res.eer == pytest.approx(reference_eer(fpr, tpr), abs=1e-12)
    for far in (0.01, 0.1, 0.5):
        assert res.tar_at_far[far] == pytest.approx(float(tpr[fpr <= far].max()), abs=1e-12)


def pair_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """AUC by its definition (Mann-Whitney): the share of (genuine, impostor) pairs ranked right, ties half."""
    pos, neg = scores[same][:, None], scores[~same][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


@pytest.mark.parametrize(
    ("scores", "same", "auc", "eer"),
    [
        ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], 0.75, 0.5),
        ([1.0, 1.0, 1.0, 0.0], [1, 1, 0, 0], 0.75, 1 / 3),  # tied pairs count half; EER on the ROC's diagonal segment
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5, 0.5),  # one score for all: chance
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0, 1.0),  # scores upside down
        ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 1.0, 0.0),
    ],
)
def test_auc_and_eer_known_answers(scores: list[float], same: list[int], auc: float, eer: float) -> None:
    """Hand-worked cases, ties included, where a ROC that ignores ties (a step per pair) gives another AUC."""
    s, y = np.asarray(scores), np.asarray(same, bool)
    res = verify(s, y, np.arange(len(s)) % 2)
    assert res.auc == pytest.approx(auc, abs=1e-12) == pair_auc(s, y)
    assert res.auc == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert res.eer == pytest.approx(eer, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(4, 200), levels=st.sampled_from([2, 5, 1000]))
def test_auc_equals_the_pair_count_on_the_same_scores(seed: int, n: int, levels: int) -> None:
    """On the same scores, heavily tied or not, the AUC is the pair count (and so scikit-learn's)."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    same[:2] = [True, False]
    scores = np.round(rng.normal(0, 1, n) * levels) / levels
    res = verify(scores, same, np.arange(n) % 2)
    assert res.auc == pytest.approx(pair_auc(scores, same), abs=1e-12)
