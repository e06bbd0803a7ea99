"""Hostile input through every entry point: eval zeroshot, eval search, index build (and the server over it), cloak.

One corpus (:mod:`tests.hostile`, made at test time) holds good images of many kinds and files
that must be skipped. Each run must finish, list every bad file under ``skipped`` with its
reason (file names that are not UTF-8 shown with ``\\xNN`` escapes), and score every good file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipface.cli import app
from clipface.data.dataset import display_name
from clipface.files import file_sha256

from .hostile import LATIN1_FOLDER, UNDECODABLE_FILE, Corpus, make_corpus, shown

runner = CliRunner()
MODEL = "test-tiny-random"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def invoke(*args: str) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def reasons(entries: list[dict[str, str]]) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in entries}


def assert_skipped(corpus: Corpus, skipped: dict[str, str], also: dict[Path, str] | None = None) -> None:
    """Every bad file (and those in ``also``) is listed by its readable name with its reason, and no other file is."""
    expected = {**corpus.bad, **(also or {})}
    for path, phrase in expected.items():
        shown = corpus.shown(path)
        assert shown in skipped, f"{shown} not listed as skipped: {sorted(skipped)}"
        assert phrase in skipped[shown], (shown, skipped[shown])
    assert set(skipped) == {corpus.shown(p) for p in expected}
    assert not any(".hidden" in s for s in skipped)


def test_corpus_has_names_that_are_not_utf8(corpus: Corpus) -> None:
    names = {os.fsencode(p.name) for files in corpus.good.values() for p in files}
    assert UNDECODABLE_FILE in names and os.fsdecode(LATIN1_FOLDER) in corpus.good
    with pytest.raises(UnicodeEncodeError):
        os.fsdecode(UNDECODABLE_FILE).encode("utf-8")


def test_eval_zeroshot(corpus: Corpus, tmp_path: Path) -> None:
    invoke("eval", "zeroshot", "-m", MODEL, "-d", corpus.root, "-o", tmp_path, "-q")
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    r = doc["results"][0]
    assert_skipped(corpus, reasons(r["skipped"]))
    assert r["n_images"] == corpus.n_good and r["n_identities"] == len(corpus.good)
    per = {p["name"]: p["n_images"] for p in r["per_identity"]}
    assert per == {display_name(k): len(v) for k, v in corpus.good.items()}
    assert "Folder\\xe9Latin1" in per and "Solo Person" in per and per["Solo Person"] == 1
    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "Folder\\xe9Latin1" in report and "bad\\xff.jpg" in report
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_eval_search(corpus: Corpus, tmp_path: Path) -> None:
    invoke("eval", "search", "-m", MODEL, "-d", corpus.root, "-o", tmp_path, "-q", "--gallery", "1", "--unknown", "0")
    r = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["results"][0]
    assert_skipped(corpus, reasons(r["skipped"]))
    assert r["n_gallery"] + r["n_probes"] == corpus.n_good and r["n_gallery"] == len(corpus.good)


@pytest.fixture(scope="module")
def hostile_index(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("hostile-index") / "idx"
    invoke("index", "build", "-m", MODEL, "--images", corpus.root, "-i", index, "-q")
    return index


def test_index_build_round_trips_every_name(corpus: Corpus, hostile_index: Path) -> None:
    from clipface.index.store import FaceIndex

    idx = FaceIndex.load(hostile_index)
    assert idx.count == corpus.n_good
    assert_skipped(corpus, reasons(idx.meta.skipped()))
    stored = idx.meta.images(range(idx.count))
    expected = {Path(os.path.abspath(p)).resolve() for files in corpus.good.values() for p in files}
    assert {Path(im.path) for im in stored.values()} == expected
    for im in stored.values():  # each stored path opens the very file that was indexed
        assert file_sha256(im.path) == im.sha256
    latin = os.fsdecode(LATIN1_FOLDER)
    assert len(idx.meta.images_of(latin)) == len(corpus.good[latin])
    assert sorted(os.listdir(hostile_index)) == [
        ".write.lock",
        "manifest.json",
        "meta.sqlite",
        "skipped.json",
        "vectors.f32",
    ]


def test_server_answers_about_every_name(corpus: Corpus, hostile_index: Path, tiny) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipface.index.store import FaceIndex
    from clipface.server.app import create_app

    client = TestClient(create_app(hostile_index, model=tiny, require_token=False, rate_limit=None))
    photo = corpus.good["Alice_Smith"][0]
    response = client.post("/api/search/image", files={"file": ("a.jpg", photo.read_bytes())}, data={"k": "100"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == corpus.n_good
    paths = {r["path"] for r in results}
    assert shown(f"Alice_Smith/{os.fsdecode(UNDECODABLE_FILE)}") in paths
    assert {r["identity"] for r in results} >= {"Folder\\xe9Latin1", "José_Müller"}
    odd = next(
        im for im in FaceIndex.load(hostile_index).meta.images(range(corpus.n_good)).values() if "\udcff" in im.path
    )
    thumb = client.get(f"/api/image/{odd.id}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_cloak(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "cloaked"
    invoke("cloak", "--in", corpus.root, "-o", out, "-s", MODEL, "--steps", "1", "-q")
    summary = json.loads((out / "cloak_summary.json").read_text(encoding="utf-8"))
    one_pixel = next(p for p in corpus.good["Alice_Smith"] if p.name == "one_pixel.png")
    assert_skipped(corpus, reasons(summary["skipped"]), also={one_pixel: "image too small to cloak (1x1)"})
    assert summary["n_cloaks"] == corpus.n_good - 1
    for files in corpus.good.values():  # each cloak has its original's name, bytes and all
        for p in files:
            assert (out / p.relative_to(corpus.root)).with_suffix(".png").is_file() == (p != one_pixel), p
    again = runner.invoke(app, ["cloak", "--in", str(corpus.root), "-o", str(out), "-s", MODEL, "--steps", "1", "-q"])
    assert again.exit_code == 0 and f"0 made, {corpus.n_good - 1} reused" in again.output
