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


def test_reference_checks_can_fail() -> None:
    """The comparison is sharp: a 1% error in the scores' ranking moves the AUC away from scikit-learn's."""
    rng = np.random.default_rng(0)
    same = rng.random(300) < 0.5
    scores = rng.normal(0, 1, 300) + same
    res = verify(scores, same, np.arange(300) % 2)
    flipped = scores.copy()
    flipped[:3] = -flipped[:3]
    assert res.auc != pytest.approx(sklearn_metrics.roc_auc_score(same, flipped), abs=1e-6)
