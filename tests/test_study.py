"""The study as the main job: `clipface run` offline on the bundled default, its results, reports and the HTML page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipface.cli import app
from clipface.data.dataset import FaceDataset
from clipface.eval.study import cloaked_photos
from clipface.models.dlib_resnet import availability

from .conftest import LFW_MINI, REPO

runner = CliRunner()
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FACE_MODELS = availability()[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default study with the test CLIP added; cloaks made with the test CLIP in 1 step, so it stays fast."""
    out = tmp_path_factory.mktemp("study") / "main"
    args = [
        "run",
        "--include-test-models",
        "--surrogate",
        "test-tiny-random",
        "--steps",
        "1",
        "--out",
        str(out),
        "-q",
        "--cache-dir",
        str(out.parent / "cache"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "skip ViT-B-32:openai:" in res.output and "--weights DIR" in res.output  # offline: skipped with one line
    return out


def test_results_have_clean_and_cloaked_figures_for_every_model(study: Path) -> None:
    doc = json.loads((study / "results.json").read_text())
    assert doc["task"] == "main" and doc["dataset"]["n_images"] == 100
    assert {m["model"] for m in doc["models_skipped"]} >= {"ViT-B-32:openai", "ViT-B-32:laion2b_s34b_b79k"}
    assert [c["name"] for c in doc["cloaks"]] == ["fawkes", "fawkes-published", "lowkey", "lowkey-published"]
    assert all(c["n_cloaks"] == 20 for c in doc["cloaks"])  # 2 photos of each of the 10 people
    by_model = {r["model"]: r for r in doc["results"]}
    tiny = by_model["test-tiny-random"]
    for cond in ("clean", "fawkes", "lowkey"):
        assert {"top1", "top5"} <= set(tiny["zeroshot"][cond])
    assert tiny["zeroshot"]["fawkes"]["n_images"] == 20 and tiny["zeroshot"]["clean"]["n_images"] == 100
    inf = tiny["zeroshot"]["idia"]["identity_inference"]
    assert inf["n_prompts"] == 21 and [c["k"] for c in inf["k_curve"]] == [3, 5, 7, 9, 10]
    # one population at every k: the 10 people, each with 10 photos; at k = 10 every draw takes all of a person's
    # photos, so that point is the headline (all photos vote) exactly, with no spread between draws
    assert all((c["n_members"], c["n_left_out"]) == (10, 0) for c in inf["k_curve"])
    assert inf["n_members"] == 10 and len(inf["people"]) == 10 and inf["fpr"] is None  # no non-members declared
    assert inf["tpr"] == pytest.approx(sum(p["recognised"] for p in inf["people"]) / 10)
    last = inf["k_curve"][-1]
    assert last["tpr"] == pytest.approx(inf["tpr"]) and last["tpr_std"] == 0.0
    assert inf["tau_curve"][inf["tau"] - 1]["tpr"] == pytest.approx(inf["tpr"])
    assert tiny["zeroshot"]["clean"]["n_candidates"] == 1000  # the attack's pool by default
    expected = {"test-tiny-random", *(["dlib", "facenet-casia"] if FACE_MODELS else [])}
    assert set(by_model) == expected
    for r in doc["results"]:
        gal = r["gallery"]
        for cond in ("clean", "fawkes", "lowkey", "fawkes-published", "lowkey-published"):
            assert gal[cond]["n_gallery"] == 20 and gal[cond]["n_probes"] == 80, (r["model"], cond)
            assert gal[cond]["protection_rate"] == pytest.approx(1 - gal[cond]["rank1"])
    if FACE_MODELS:
        assert by_model["dlib"]["gallery"]["clean"]["rank1"] >= 0.9  # a real recogniser on real faces
        assert "zeroshot" not in by_model["dlib"]


def test_cloaked_photos_are_each_persons_first() -> None:
    ds = FaceDataset.from_folder(LFW_MINI)
    chosen = cloaked_photos(ds, 2)
    assert len(chosen) == 20 and {im.identity for im in chosen} == set(ds.identities)
    assert [im.path.name for im in chosen[:2]] == sorted(p.name for p in (LFW_MINI / "Ariel_Sharon").iterdir())[:2]


def test_reports_and_rerender(study: Path, tmp_path: Path) -> None:
    md = (study / "report.md").read_text()
    assert "Zero-shot name identification and identity inference" in md and "Protection rate" in md
    assert "ViT-B-32:openai" in md and "weights" in md
    page = (study / "report.html").read_text()
    for ident in ("fig-accuracy-params", "fig-cloaks", "fig-idia-k", "fig-protection"):
        assert f'id="{ident}"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained, offline
    res = runner.invoke(app, ["report", str(study / "results.json"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.md").read_text() == md
    assert (tmp_path / "report.html").read_text() == page
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = runner.invoke(app, ["report", str(bad)])
    assert res.exit_code == 2 and "not a results document" in res.output


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_html_report_in_chromium(study: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((study / "report.html").as_uri())
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.closest('figure').id, e.complete, e.naturalWidth])"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "study-report.png"), full_page=True)
        browser.close()
    assert len(images) >= 5 and all(ok and width > 100 for _, ok, width in images), images
    assert {"fig-accuracy-params", "fig-cloaks", "fig-idia-k", "fig-protection"} <= {i for i, _, _ in images}
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
