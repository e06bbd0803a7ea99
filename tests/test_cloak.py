"""Cloaking: DSSIM against an independent reference, exact budgets, front-end views, the cloak run, readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from clipface.cloak import (
    CloakSettings,
    View,
    cloak_folder,
    fawkes,
    fit_budget,
    image_stats,
    lowkey,
    to_tensor,
    view_for,
)
from clipface.cloak.io import (
    CloakedTriple,
    originals_only,
    read_cloaked,
    read_paired_roots,
    read_suffix_layout,
    scan_input,
)
from clipface.cloak.ssim import dssim, dssim_uint8, ssim
from clipface.data.dataset import FaceDataset
from clipface.embed.options import RunOptions
from clipface.errors import ClipfaceError
from clipface.models.base import resize_center_crop
from clipface.models.registry import create_encoder

from .cloak_checks import noise_at_dssim, rgb_of, shift
from .conftest import LFW_MINI


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread."""


def reference_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM written out independently: explicit 11x11 Gaussian windows at every valid position."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for ch in range(a.shape[2]):
        wa = sliding_window_view(a[..., ch].astype(np.float64), (11, 11))
        wb = sliding_window_view(b[..., ch].astype(np.float64), (11, 11))
        ma, mb = (wa * w).sum((-1, -2)), (wb * w).sum((-1, -2))
        va = (wa * wa * w).sum((-1, -2)) - ma**2
        vb = (wb * wb * w).sum((-1, -2)) - mb**2
        cov = (wa * wb * w).sum((-1, -2)) - ma * mb
        per_channel.append((((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean())
    return float(np.mean(per_channel))


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random colour image (noise blurred by upsampling), uint8."""
    small = np.random.default_rng(seed).integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


# -- SSIM / DSSIM ---------------------------------------------------------------------------------
def test_dssim_of_identical_images_is_zero():
    a = rgb(40, 36, 0)
    assert dssim_uint8(a, a) == 0.0


def test_dssim_of_a_constant_shift_has_the_closed_form():
    # Flat images: no variance, so SSIM is the luminance term alone.
    a, b = np.full((20, 20, 3), 100, np.uint8), np.full((20, 20, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert dssim_uint8(a, b) == pytest.approx((1 - expected) / 2, abs=1e-12)


def test_dssim_matches_an_independent_reference():
    a = rgb(37, 45, 1)
    noise = np.random.default_rng(2).normal(0, 12, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    want = reference_ssim(a, b)
    assert 0.3 < want < 0.99  # a real, partial dissimilarity
    assert dssim_uint8(a, b) == pytest.approx((1 - want) / 2, abs=1e-12)
    # the [0, 1] float path used in optimisation agrees
    got = dssim(to_tensor(b)[None].double(), to_tensor(a)[None].double())
    assert float(got[0]) == pytest.approx((1 - want) / 2, abs=1e-6)  # float32 pixels


def test_ssim_is_differentiable_and_rejects_tiny_images():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    ssim(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 30), torch.rand(1, 3, 10, 30))


# -- budget ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [0.001, 0.004, 0.017])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_budget_is_never_exceeded(budget, seed, tmp_path):
    original = rgb(48, 40, seed)
    delta = np.random.default_rng(seed + 10).normal(0, 30, original.shape)  # far over any budget
    assert dssim_uint8(original, np.clip(np.rint(original + delta), 0, 255).astype(np.uint8)) > budget
    cloak, scale, value = fit_budget(original, delta, budget)
    # measured again on the PNG actually written
    Image.fromarray(cloak).save(tmp_path / "c.png")
    saved = np.asarray(Image.open(tmp_path / "c.png"))
    assert (saved == cloak).all()
    assert dssim_uint8(original, saved) == pytest.approx(value, abs=1e-12)
    assert value <= budget
    assert 0 < scale < 1 and value > 0.8 * budget  # scaled down, but not needlessly far


def test_fit_budget_keeps_a_cloak_within_budget_and_measures_a_box():
    original = rgb(40, 40, 3)
    small = np.random.default_rng(4).normal(0, 1.0, original.shape)
    cloak, scale, value = fit_budget(original, small, 0.05)
    assert scale == 1.0 and value == dssim_uint8(original, cloak)
    big = np.zeros(original.shape)
    big[10:30, 12:32] = np.random.default_rng(5).normal(0, 40, (20, 20, 3))
    box = (12, 10, 32, 30)
    cloak, scale, value = fit_budget(original, big, 0.01, box)
    assert value == dssim_uint8(original[10:30, 12:32], cloak[10:30, 12:32]) <= 0.01
    assert dssim_uint8(original, cloak) < value  # the rest of the image is untouched
    assert fit_budget(original, big, None)[1] == 1.0


def test_image_stats():
    a = np.full((20, 20, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110
    stats = image_stats(a, b, (0, 0, 12, 12))
    assert stats["linf"] == 10
    assert stats["psnr"] == pytest.approx(10 * np.log10(255**2 / (100 / 1200)))
    assert stats["dssim_crop"] > stats["dssim"] > 0
    assert image_stats(a, a)["psnr"] is None


# -- views ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(61, 47), (40, 90), (224, 224)])
def test_center_view_reproduces_the_encoders_crop(tiny, size):
    image = Image.fromarray(rgb(size[1], size[0], 6))
    view = view_for(tiny, image)
    assert isinstance(view, View) and view.resized is not None
    mine = view(to_tensor(np.asarray(image))[None])[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(mine - resize_center_crop(image, tiny.image_size)).mean() < 1.5


def test_box_view_crops_then_resizes():
    x = torch.zeros(1, 3, 30, 40)
    x[..., 10:20, 5:25] = 1.0
    out = View(box=(5, 10, 25, 20), size=8)(x)
    assert out.shape == (1, 3, 8, 8) and torch.allclose(out, torch.ones_like(out))


# -- the cloak run ----------------------------------------------------------------------------------
@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """Three people x two small images, and one broken file."""
    root = tmp_path / "people"
    for p, person in enumerate(("Ann_Lee", "Bo_Chen", "Cy_Diaz")):
        (root / person).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rgb(44, 40, 10 * p + i)).save(root / person / f"{person}_{i:04d}.jpg", quality=95)
    (root / "Ann_Lee" / "broken.jpg").write_text("not an image")
    return root


def quick(method: str) -> CloakSettings:
    params = fawkes.fawkes_params("high", max_step=4) if method == "fawkes" else lowkey.LowKeyParams(steps=3)
    return CloakSettings(method=method, mode="high", params=params)


@pytest.mark.parametrize("method", ["fawkes", "lowkey"])
def test_cloak_folder_writes_png_and_json_within_budget_and_resumes(faces, tmp_path, method):
    out = tmp_path / "out"
    opts = RunOptions(progress=False)
    run = cloak_folder(faces, out, quick(method), ["test-tiny-random"], opts, batch_size=4)
    assert run.computed == 6 and run.reused == 0
    assert [Path(s.path).name for s in run.skipped] == ["broken.jpg"]
    for r in run.records:
        png = Path(r["cloak"])
        assert png.suffix == ".png" and png.parent.name == r["identity"]
        saved = np.asarray(Image.open(png).convert("RGB"))
        original = np.asarray(Image.open(r["source"]).convert("RGB"))
        assert dssim_uint8(original, saved) == pytest.approx(r["dssim"], abs=1e-12)
        assert r["dssim"] <= 0.017 and r["linf"] > 0
        assert json.loads(png.with_suffix(".json").read_text())["settings_hash"] == run.digest
        assert r["feature_shift"]["test-tiny-random"] > 0
        if method == "fawkes":
            assert r["target"] != r["identity"]
    if method == "fawkes":  # every cloak is pulled toward its target
        sims = [r["target_similarity"]["test-tiny-random"] for r in run.records]
        assert all(s["cloak"] > s["original"] for s in sims), sims
    else:  # LowKey moves the features further than random noise of the same DSSIM in the same box
        encoder = create_encoder("test-tiny-random")
        for r in run.records:
            original, cloak = rgb_of(r["source"]), rgb_of(r["cloak"])
            noise = [shift(encoder, original, noise_at_dssim(original, cloak, seed)) for seed in range(3)]
            assert r["feature_shift"]["test-tiny-random"] > 2 * max(noise), (r["feature_shift"], noise)
    summary = json.loads((out / "cloak_summary.json").read_text())
    assert summary["within_budget"] is True and summary["dssim_max"] <= 0.017 and summary["n_cloaks"] == 6
    again = cloak_folder(faces, out, quick(method), ["test-tiny-random"], opts, batch_size=4)
    assert again.computed == 0 and again.reused == 6


def test_flat_folder_takes_fawkes_targets_from_the_bundled_set_or_target_dir(faces, tmp_path):
    flat = faces / "Bo_Chen"
    root, images, skipped = scan_input(flat)
    assert root == flat and len(images) == 2 and {im.identity for im in images} == {"Bo_Chen"} and not skipped
    opts = RunOptions(progress=False)
    shipped = cloak_folder(flat, tmp_path / "o1", quick("fawkes"), ["test-tiny-random"], opts)  # as Fawkes does
    assert shipped.computed == 2 and {r["target"] for r in shipped.records} <= set(
        FaceDataset.from_folder(LFW_MINI).identities
    )
    run = cloak_folder(flat, tmp_path / "o2", quick("fawkes"), ["test-tiny-random"], opts, target_dir=faces)
    assert run.computed == 2 and (tmp_path / "o2" / "Bo_Chen_0000.png").is_file()
    assert {r["target"] for r in run.records} <= {"Ann_Lee", "Cy_Diaz"}


def test_settings_are_checked():
    with pytest.raises(ClipfaceError, match="mode=.extreme.: choose one of low, mid, high"):
        CloakSettings(mode="extreme")
    with pytest.raises(ClipfaceError, match="method=.*: choose one of fawkes, lowkey"):
        CloakSettings(method="glaze")
    assert CloakSettings(method="lowkey", mode="mid", enforce_budget=False).budget is None
    assert fawkes.fawkes_params("low") == fawkes.FawkesParams(th=0.004, max_step=40, lr=25.0)


def test_select_target_takes_the_farthest_centroid():
    user = np.array([[1.0, 0.0], [0.9, 0.1]])
    candidates = {
        "near": np.array([[1.0, 0.0]]),
        "far": np.array([[-1.0, 0.0], [-0.8, -0.2]]),
        "mid": np.array([[0.0, 1.0]]),
    }
    rng = np.random.default_rng(0)
    assert fawkes.select_target(user, candidates, 1, rng) == "far"
    assert {fawkes.select_target(user, candidates, 2, np.random.default_rng(s)) for s in range(20)} == {"far", "mid"}
    pairs = fawkes.pair_targets(5, 2, rng)
    assert len(pairs) == 5 and set(pairs) == {0, 1}  # Fawkes repeats the target list, then samples


# -- readers of cloaks made elsewhere -------------------------------------------------------------
def test_read_suffix_layout_and_paired_roots(tmp_path):
    root = tmp_path / "released"
    for name in ("Ann_Lee", "Bo_Chen"):
        (root / name).mkdir(parents=True)
        for f in (
            f"{name}_0001.jpg",
            f"{name}_0001_cloaked.png",
            f"{name}_0002.jpg",
            f"{name}_0002_high_cloaked.png",
            f"{name}_0002_attacked.png",
            f"{name}_0002_small.png",
            f"{name}_0003.jpg",
        ):
            Image.fromarray(rgb(16, 16, 0)).save(root / name / f)
    (root / "Cy" / "face").mkdir(parents=True)  # FaceScrub layout NAME/face/*.jpg
    for f in ("a.jpg", "a_attacked.png"):
        Image.fromarray(rgb(16, 16, 0)).save(root / "Cy" / "face" / f)
    fawkes_triples = read_suffix_layout(root, "fawkes")
    assert len(fawkes_triples) == 4
    assert (
        CloakedTriple(
            root / "Ann_Lee" / "Ann_Lee_0002.jpg", root / "Ann_Lee" / "Ann_Lee_0002_high_cloaked.png", "Ann_Lee"
        )
        in fawkes_triples
    )
    lowkey_triples = read_suffix_layout(root, "lowkey")
    assert sorted(t.identity for t in lowkey_triples) == ["Ann_Lee", "Bo_Chen", "Cy"]
    assert all(t.original.stem + "_attacked" == t.cloaked.stem for t in lowkey_triples)
    assert len(read_suffix_layout(root)) == 7
    ds = originals_only(FaceDataset.from_folder(root, validate=False))
    assert sorted(p.path.name for p in ds.images if p.identity == "Ann_Lee") == [
        "Ann_Lee_0001.jpg",
        "Ann_Lee_0002.jpg",
        "Ann_Lee_0003.jpg",
    ]

    originals, cloaks = tmp_path / "orig", tmp_path / "cloaks"
    for base, suffix in ((originals, ".jpg"), (cloaks, ".png")):
        (base / "Ann_Lee").mkdir(parents=True)
        Image.fromarray(rgb(16, 16, 0)).save(base / "Ann_Lee" / f"Ann_Lee_0001{suffix}")
    assert read_paired_roots(originals, cloaks) == [
        CloakedTriple(originals / "Ann_Lee" / "Ann_Lee_0001.jpg", cloaks / "Ann_Lee" / "Ann_Lee_0001.png", "Ann_Lee")
    ]
    assert read_cloaked(cloaks, originals) == read_paired_roots(originals, cloaks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipfaceError, match="no cloaked images matched"):
        read_cloaked(tmp_path / "empty", originals)


def test_cloak_command(faces, tmp_path):
    from typer.testing import CliRunner

    from clipface.cli import app

    out = tmp_path / "cli"
    args = [
        "cloak",
        "--method",
        "lowkey",
        "--mode",
        "mid",
        "--surrogate",
        "test-tiny-random",
        "--in",
        str(faces),
        "--out",
        str(out),
        "--steps",
        "2",
        "--region",
        "face",
        "-q",
        "--no-cache",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "6 cloaks (6 made, 0 reused, 1 skipped)" in res.output and "broken.jpg" in res.output
    summary = json.loads((out / "cloak_summary.json").read_text())
    assert summary["settings"]["region"] == "face" and summary["settings"]["params"]["steps"] == 2
    assert summary["budget_measure"] == "dssim_crop" and summary["dssim_crop_max"] <= 0.012 and summary["within_budget"]
    from clipface.cloak.run import load_surrogates
    from clipface.embed.options import RunOptions

    with pytest.raises(ClipfaceError, match="surrogate dlib is not differentiable"):  # dlib's own network
        load_surrogates(["dlib"], RunOptions(backend="dlib"))


def test_large_images_are_optimised_at_the_working_resolution(tmp_path):
    root = tmp_path / "big"
    (root / "Ann_Lee").mkdir(parents=True)
    Image.fromarray(rgb(260, 300, 7)).save(root / "Ann_Lee" / "a.png")
    settings = CloakSettings(method="lowkey", mode="low", work_side=64, params=lowkey.LowKeyParams(steps=2))
    run = cloak_folder(root, tmp_path / "out", settings, ["test-tiny-random"], RunOptions(progress=False))
    (r,) = run.records
    saved = np.asarray(Image.open(r["cloak"]))
    assert saved.shape == (260, 300, 3) and r["work_scale"] == pytest.approx(64 / 300)
    assert dssim_uint8(np.asarray(Image.open(root / "Ann_Lee" / "a.png")), saved) <= 0.004


def test_jittered_view_moves_each_edge_within_bounds():
    view = View(box=(10, 12, 50, 60), size=16)
    gen = torch.Generator().manual_seed(0)
    boxes = {view.jittered(3, gen, 56, 64).box for _ in range(200)}
    assert len(boxes) > 50
    for left, top, right, bottom in boxes:
        assert 7 <= left <= 13 and 9 <= top <= 15 and 47 <= right <= 53 and 57 <= bottom <= 63
    assert view.jittered(0, gen, 56, 64) is view
    centre = View(box=(0, 0, 40, 40), size=16, resized=(16, 16))
    assert centre.jittered(3, gen, 40, 40) is centre
    with pytest.raises(ClipfaceError, match="jitter=-1: must be at least 0"):
        CloakSettings(jitter=-1)


def test_robust_setting_is_the_default_and_published_is_one_flag_away() -> None:
    from clipface.cloak.settings import ROBUST
    from clipface.jobs import cloak_settings

    default = cloak_settings("fawkes", "high")
    assert (default.jitter, default.eot, default.published) == (ROBUST["jitter"], tuple(ROBUST["eot"]), False)
    assert default.to_dict()["setting"] == "robust" and CloakSettings().jitter == ROBUST["jitter"]
    published = cloak_settings("fawkes", "high", published=True)
    assert (published.jitter, published.eot, published.published) == (0, (), True)
    both = cloak_settings("lowkey", "mid", eot="jpeg, resize", jitter=3)
    assert both.eot == ("jpeg", "resize") and both.jitter == 3
    assert len({s.digest([]) for s in (default, published, both)}) == 3  # each setting has its own cloak folder
    with pytest.raises(ClipfaceError, match="eot='blur'"):
        cloak_settings("fawkes", "low", eot="blur")


def test_eot_transforms_keep_shape_and_pass_gradients() -> None:
    import io

    from clipface.cloak.eot import apply_eot, jpeg_bpda, random_resize

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = random_resize(x, gen)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x2 = torch.rand(1, 3, 32, 32, requires_grad=True)
    z = jpeg_bpda(x2, torch.Generator().manual_seed(1))
    z.sum().backward()
    assert torch.equal(x2.grad, torch.ones_like(x2))  # BPDA: the backward pass is the identity
    q = int(round(60 + 35 * float(torch.rand((), generator=torch.Generator().manual_seed(1)))))
    buf = io.BytesIO()
    Image.fromarray((x2.detach()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
        buf, "JPEG", quality=q
    )
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(z.detach()[0].permute(1, 2, 0).numpy(), decoded, atol=1e-6)  # forward: the real JPEG
    assert apply_eot(x, (), gen) is x


@pytest.mark.parametrize("seed", [0, 1])
def test_region_dssim_is_the_full_image_dssim_in_bounded_bands(seed: int) -> None:
    from clipface.cloak.budget import region_dssim, ssim_sum

    rng = np.random.default_rng(seed)
    original = rgb(80, 64, seed)
    box = (13, 9, 41, 50)
    cloak = original.copy()
    cloak[9:50, 13:41] = np.clip(original[9:50, 13:41] + rng.normal(0, 12, (41, 28, 3)), 0, 255).astype(np.uint8)
    assert region_dssim(original, cloak[9:50, 13:41], box) == pytest.approx(dssim_uint8(original, cloak), abs=1e-12)
    whole, n = ssim_sum(original, cloak)
    banded, m = ssim_sum(original, cloak, band_pixels=150)  # bands of two rows: the same windows, summed in pieces
    assert n == m == 3 * (80 - 10) * (64 - 10) and banded == pytest.approx(whole, rel=1e-12)
    stats = image_stats(original, cloak, box, changed=box)
    assert stats == pytest.approx(image_stats(original, cloak, box), rel=1e-9)


@pytest.mark.parametrize("method", ["fawkes", "lowkey"])
def test_shipped_cloaks_are_reused_only_for_the_same_photo_and_settings(faces, tmp_path, method):
    """Cloaks shipped as their changed box (cloak.io.ship_cloaks) come back pixel for pixel, but never for a photo
    whose bytes changed nor under other settings: those are made anew."""
    from clipface.cloak import cloak_images, load_surrogates
    from clipface.cloak.io import ship_cloaks

    opts = RunOptions(progress=False)
    surrogates = load_surrogates(["test-tiny-random"], opts)
    ds = FaceDataset.from_folder(faces)
    first = cloak_images(ds.images, faces, tmp_path / "made", quick(method), surrogates, opts, ds.by_identity())
    assert first.computed == 6
    seed = tmp_path / "shipped"
    assert ship_cloaks(tmp_path / "made", faces, seed) == 6
    assert all(not Path(json.loads(p.read_text())["source"]).is_absolute() for p in seed.rglob("*.json"))
    edited = faces / "Bo_Chen" / "Bo_Chen_0001.jpg"
    if method == "lowkey":  # (for Fawkes another photo moves a centroid, so other targets may change too)
        Image.fromarray(rgb(44, 40, 99)).save(edited, quality=95)  # the same name, other bytes
    ds = FaceDataset.from_folder(faces)
    out = tmp_path / "again"
    run = cloak_images(ds.images, faces, out, quick(method), surrogates, opts, ds.by_identity(), seed=seed)
    assert (run.reused, run.computed) == ((5, 1) if method == "lowkey" else (6, 0))
    made = {r["source"]: r for r in first.records}
    for r in run.records:
        if Path(r["source"]) == edited and method == "lowkey":
            assert "seeded_from" not in r
            continue
        assert r["seeded_from"] == "shipped" and Path(r["cloak"]).parent.parent == out
        saved = np.asarray(Image.open(r["cloak"]).convert("RGB"))
        assert np.array_equal(saved, np.asarray(Image.open(made[r["source"]]["cloak"]).convert("RGB")))
        assert r["dssim"] == pytest.approx(made[r["source"]]["dssim"], abs=1e-12)
    other = CloakSettings(method=method, mode="low", params=quick(method).params if method == "lowkey" else None)
    run = cloak_images(ds.images, faces, tmp_path / "other", other, surrogates, opts, ds.by_identity(), seed=seed)
    assert run.reused == 0 and run.computed == 6
