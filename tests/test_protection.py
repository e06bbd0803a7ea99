"""Protection evaluation: hand-built cases with known nearest neighbours, then the commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from typer.testing import CliRunner

from clipface.cli import app
from clipface.cloak.ssim import dssim_uint8
from clipface.data.dataset import FaceImage
from clipface.eval.metrics.protection import (
    facecure_split,
    link_stats,
    nearest,
    poison_gallery,
    poisoning_metrics,
    poisoning_split,
    protection_metrics,
    protection_rate,
)
from clipface.models.runtime import load_encoder

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread."""


def unit(deg: float) -> np.ndarray:
    """A 2-D unit vector at ``deg`` degrees: cosine similarity falls with the angle between vectors."""
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)], np.float32)


# -- pure metrics on hand-built embeddings ------------------------------------------------------
def test_nearest_and_protection_rate():
    gallery = np.stack([unit(0), unit(90), unit(180)])
    assert nearest(gallery, np.stack([unit(10), unit(100), unit(200)])).tolist() == [0, 1, 2]
    assert nearest(np.stack([unit(0), unit(0), unit(90)]), np.stack([unit(10)])).tolist() == [
        0
    ]  # a tie goes to the first
    assert protection_rate(gallery, ["u", "v", "w"], np.stack([unit(10), unit(80), unit(170)]), "u") == pytest.approx(
        2 / 3
    )


def test_protection_metrics_on_a_hand_built_gallery():
    # A near 0 deg, B near 120 deg, C near 240 deg; each person: 2 gallery photos, 1 probe.
    angles = {"a1": 0, "a2": 5, "a3": 10, "b1": 120, "b2": 125, "b3": 121, "c1": 240, "c2": 245, "c3": 178}
    images = [FaceImage(Path(f"{n}.png"), n[0].upper()) for n in angles]
    is_probe = np.array([n.endswith("3") for n in angles])
    original = {im.path: unit(angles[im.path.stem]) for im in images}
    cloaked = {
        Path("a1.png"): unit(235),
        Path("a2.png"): unit(245),  # A's cloaks sit among C's photos: effective
        Path("b1.png"): unit(122),
        Path("b2.png"): unit(118),  # B's cloaks barely move: no protection
        Path("c1.png"): unit(240),
        Path("c2.png"): unit(245),  # C's cloaks are the originals
    }
    m = protection_metrics(images, is_probe, ["A", "B", "C"], original, cloaked)
    per_user = {
        u["user"]: (u["protection_rate"], u["protection_rate_clean"], u["n_gallery_cloaks"]) for u in m["per_user"]
    }
    # a3 (10 deg): clean NN a2 (A); with A cloaked, NN is b1 at 120 deg (110 away) before A's cloaks (125 away).
    # b3 (121 deg): B's cloak at 122 deg is its NN either way. c3 (178 deg) is nearer B (53) than C (62) even clean.
    assert per_user == {"A": (1.0, 0.0, 2), "B": (0.0, 0.0, 2), "C": (1.0, 1.0, 2)}
    assert (m["protection_rate"], m["protection_rate_clean"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert (m["n_users"], m["n_probes"]) == (3, 3)
    # other people's probes with each user cloaked: A: b3 right, c3 wrong; B: a3 right, c3 wrong (NN B's cloak
    # at 122); C: a3 and b3 right -> 4 of 6
    assert m["others_rank1"] == pytest.approx(4 / 6)
    # a cloak the model cannot use is not in the gallery: with A left without gallery photos, it stays protected
    m = protection_metrics(images, is_probe, ["A"], original, {})
    assert m["per_user"][0]["n_gallery_cloaks"] == 0 and m["protection_rate"] == 1.0


def test_link_stats():
    originals = np.stack([unit(0), unit(90), unit(180)])
    cloaks = np.stack([unit(10), unit(170)])  # cloak of 0 stays by it; cloak of 1 drifts next to 2
    stats = link_stats(originals, cloaks, [0, 1])
    assert stats["n"] == 2 and stats["nn_own_share"] == 0.5
    assert stats["mean_cosine"] == pytest.approx((np.cos(np.deg2rad(10)) + np.cos(np.deg2rad(80))) / 2, abs=1e-6)


def test_facecure_split():
    labels = ["a"] * 10 + ["b"] * 4 + ["c"] * 2 + ["d"]
    probe = facecure_split(labels, 0.3, seed=1)
    counts = {x: int(probe[[i for i, y in enumerate(labels) if y == x]].sum()) for x in "abcd"}
    assert counts == {"a": 3, "b": 1, "c": 1, "d": 0}  # int(0.3 n), at least one, never every photo
    assert (facecure_split(labels, 0.3, seed=1) == probe).all() and not (
        facecure_split(labels, 0.3, seed=2) == probe
    ).all()


def test_poisoning_on_a_hand_built_gallery():
    # person A near 0 deg, B near 90 deg: gallery photo, pool photo (poison source), probe
    emb = np.stack([unit(0), unit(3), unit(6), unit(90), unit(93), unit(96), unit(200)])
    labels = ["A", "A", "A", "B", "B", "B", "A"]  # index 6: a cloak of A's pool photo, far from everyone
    gallery, probes, pool = [0, 3], [2, 5], {"A": [1], "B": [4]}
    assert poisoning_metrics(emb, labels, gallery, probes, []) == {"rank1": 1.0, "poison_hits": 0.0}
    mislabel = poison_gallery("mislabel", 1, pool, seed=0)
    assert sorted(mislabel) == [(1, "B"), (4, "A")]  # each person's name now also files the other's photo
    assert poisoning_metrics(emb, labels, gallery, probes, mislabel) == {"rank1": 0.0, "poison_hits": 1.0}
    cloak = poison_gallery("cloak", 1, pool, seed=0, cloak_of={1: 6})
    assert cloak == [(6, "A")]
    assert poisoning_metrics(emb, labels, gallery, probes, cloak) == {"rank1": 1.0, "poison_hits": 0.0}
    g, split_pool, p = poisoning_split(["A"] * 5 + ["B"] * 2, n_gallery=2, n_pool=2, seed=0)
    assert len(g) == 2 and len(p) == 1 and list(split_pool) == ["A"] and len(split_pool["A"]) == 2  # B too small


# -- commands end to end (tiny random CLIP, small images) -----------------------------------------
@pytest.fixture
def people(tmp_path: Path) -> Path:
    root = tmp_path / "people"
    rng = np.random.default_rng(0)
    for person in ("Ann_Lee", "Bo_Chen", "Cy_Diaz"):
        (root / person).mkdir(parents=True)
        base = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        for i in range(5):
            jitter = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(jitter).resize((36, 40), Image.BICUBIC).save(root / person / f"{person}_{i:04d}.png")
    return root


def oracle_rate(root: Path, cloak_of: dict[Path, Path], cloaked: bool) -> float:
    """FaceCure's protection rate recomputed from the files, with scikit-learn's exact cosine 1-NN.

    Probes: FaceCure's split (checked against the saved cloaks: a user's photos are probes exactly
    where they were not cloaked). For each user, the gallery is everyone's non-probe photos, the
    user's swapped for their saved cloaks (or left clean); the rate is the share of all users' probes
    whose nearest gallery photo shows someone else.
    """
    encoder = load_encoder("test-tiny-random")
    cloak_of = {Path(k).resolve(): v for k, v in cloak_of.items()}
    photos = sorted(p.resolve() for p in root.glob("*/*.png"))
    is_probe = facecure_split([p.parent.name for p in photos])
    users = sorted({p.parent.name for p in cloak_of})
    assert {p for p, q in zip(photos, is_probe) if p.parent.name in users and not q} == set(cloak_of)
    files = [*photos, *cloak_of.values()]
    vector = dict(zip(files, encoder.encode_images([Image.open(p).convert("RGB") for p in files])))

    missed, n = 0, 0
    gallery = [p for p, q in zip(photos, is_probe) if not q]
    for user in users:
        probes = [p for p, q in zip(photos, is_probe) if q and p.parent.name == user]
        shown = [cloak_of[p] if cloaked and p.parent.name == user else p for p in gallery]
        nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit([vector[p] for p in shown])
        hit = nn.kneighbors([vector[p] for p in probes], return_distance=False)[:, 0]
        missed += sum(gallery[i].parent.name != user for i in hit)
        n += len(probes)
    return missed / n


def test_eval_protection_end_to_end_and_reuse(people, tmp_path):
    out = tmp_path / "prot"
    args = [
        "eval",
        "protection",
        "--method",
        "lowkey",
        "--mode",
        "high",
        "--surrogate",
        "test-tiny-random",
        "--model",
        "test-tiny-random",
        "--dataset",
        str(people),
        "--out",
        str(out),
        "-q",
        "--no-cache",
        "--user",
        "Ann_Lee",
        "--user",
        "Bo_Chen",
        "--steps",
        "4",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    doc = json.loads((out / "results.json").read_text())
    (r,) = doc["results"]
    made = {Path(rec["source"]): Path(rec["cloak"]) for rec in doc["per_image"]}
    assert r["model"] == "test-tiny-random" and r["white_box"] and r["surrogates"] == ["test-tiny-random"]
    assert r["protection_rate"] == pytest.approx(oracle_rate(people, made, cloaked=True))
    assert r["protection_rate_clean"] == pytest.approx(oracle_rate(people, made, cloaked=False))
    assert (r["n_users"], r["n_probes"], r["n_cloaks"]) == (2, 2, 8)  # int(0.3 * 5) = 1 probe, 4 gallery photos each
    assert r["zeroshot"]["n_original"] == r["zeroshot"]["n_cloaked"] == 8 and r["link"]["n"] == 8
    assert doc["budget"] == 0.017 and doc["within_budget"] is True and doc["dssim_max"] <= 0.017
    assert len(doc["per_image"]) == 8
    for rec in doc["per_image"]:  # every saved cloak within budget, measured again from the files
        orig = np.asarray(Image.open(rec["source"]).convert("RGB"))
        assert dssim_uint8(orig, np.asarray(Image.open(rec["cloak"]).convert("RGB"))) <= 0.017
    md = (out / "results.md").read_text()
    assert "protection rate" in md and "white-box" in md
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads((out / "results.json").read_text())["surrogate_sets"][0]["summary"]["reused"] == 8

    # the same cloaks read back as cloaks made elsewhere (a folder mirroring the dataset)
    folder = doc["surrogate_sets"][0]["folder"]

    def external(cloaks: str | Path, out: Path) -> list[str]:
        common = ["--model", "test-tiny-random", "--dataset", str(people), "-q", "--no-cache"]
        users = ["--user", "Ann_Lee", "--user", "Bo_Chen"]
        return ["eval", "protection", *common, "--cloaked", str(cloaks), "--out", str(out), *users]

    ext = runner.invoke(app, external(folder, tmp_path / "ext"))
    assert ext.exit_code == 0, ext.output
    (e,) = json.loads((tmp_path / "ext" / "results.json").read_text())["results"]
    assert e["surrogates"] == ["external"] and e["protection_rate"] == r["protection_rate"]

    # "cloaks" that hide the face entirely (flat grey): the user's probes now find other people
    far = tmp_path / "grey"
    for source in made:
        (far / source.parent.name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", Image.open(source).size, (128, 128, 128)).save(far / source.parent.name / source.name)
    grey = runner.invoke(app, external(far, tmp_path / "grey-out"))
    assert grey.exit_code == 0, grey.output
    (g,) = json.loads((tmp_path / "grey-out" / "results.json").read_text())["results"]
    hidden = {src: far / src.parent.name / src.name for src in made}
    assert g["protection_rate"] == pytest.approx(oracle_rate(people, hidden, cloaked=True))
    assert g["protection_rate"] > g["protection_rate_clean"] == r["protection_rate_clean"]


def test_eval_protection_one_line_errors(people, tmp_path):
    res = runner.invoke(
        app, ["eval", "protection", "--model", "test-tiny-random", "--dataset", str(people), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "give --surrogate" in res.output
    res = runner.invoke(
        app,
        [
            "eval",
            "protection",
            "--model",
            "test-tiny-random",
            "--surrogate",
            "dlib",
            "--dataset",
            str(people),
            "--out",
            str(tmp_path),
            "--user",
            "Nobody",
        ],
    )
    assert res.exit_code == 2 and "'Nobody' is not in the dataset" in res.output


def test_eval_poisoning_end_to_end(people, tmp_path):
    out = tmp_path / "poison"
    res = runner.invoke(
        app,
        [
            "eval",
            "poisoning",
            "--model",
            "test-tiny-random",
            "--dataset",
            str(people),
            "--out",
            str(out),
            "-q",
            "--no-cache",
            "--poison-k",
            "0,1,2",
            "--gallery",
            "2",
            "--kind",
            "mislabel",
            "--kind",
            "cloak",
            "--method",
            "lowkey",
            "--surrogate",
            "test-tiny-random",
            "--steps",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    (r,) = doc["results"]
    curve = {(p["kind"], p["k"]): p for p in r["curve"]}
    assert set(curve) == {(k, n) for k in ("mislabel", "cloak") for n in (0, 1, 2)}
    assert curve[("mislabel", 2)]["n_poisons"] == 6 and curve[("cloak", 1)]["n_poisons"] == 3
    assert curve[("mislabel", 0)]["drop"] == 0 and r["n_probes"] == 3  # 5 photos: 2 gallery, 2 pool, 1 probe
    assert doc["cloak"]["n_cloaks"] == 6 and "Index poisoning" in (out / "results.md").read_text()
