"""Every face in a photo (``index build --faces all``): a group photo is found through each of its people.

The group photo is two LFW faces side by side (Tony Blair left, Colin Powell right), with no
label, among other lfw-mini people; the queries are other photos of the two. With ``--faces
all`` both find it, with the matching face's box in the answer; with one face per image (the
central rule) only one of them can, and the audit counts it for both only in the first case.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from clipface.audit.person import audit_person
from clipface.data.images import load_image
from clipface.embed.options import RunOptions
from clipface.index.store import FaceIndex
from clipface.jobs import build_index
from clipface.models.registry import get_spec
from clipface.models.runtime import load_encoder

from .conftest import LFW_MINI

pytest.importorskip("dlib")

LEFT, RIGHT = "Tony_Blair", "Colin_Powell"


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> tuple[FaceIndex, FaceIndex]:
    root = tmp_path_factory.mktemp("group")
    photos = root / "photos"
    for person in ("Ariel_Sharon", "Hugo_Chavez", "Jacques_Chirac"):
        (photos / person).mkdir(parents=True)
        for p in sorted((LFW_MINI / person).glob("*.jpg"))[:5]:
            shutil.copy(p, photos / person / p.name)
    a, b = (Image.open(LFW_MINI / n / f"{n}_0001.jpg").convert("RGB") for n in (LEFT, RIGHT))
    group = Image.new("RGB", (a.width + b.width, max(a.height, b.height)))
    group.paste(a, (0, 0))
    group.paste(b, (a.width, 0))
    group.save(photos / "group.jpg", quality=95)
    opts = RunOptions(progress=False)
    every, _ = build_index("dlib", str(photos), root / "all", opts, faces="all")
    central, _ = build_index("dlib", str(photos), root / "central", opts)
    return every, central


def test_group_photo_is_found_through_either_person(indexes: tuple[FaceIndex, FaceIndex]) -> None:
    every, central = indexes
    dlib = load_encoder("dlib")
    threshold = get_spec("dlib").verify_threshold
    assert every.faces is not None and every.faces.model.mode == "all" and central.faces is None
    group = next(i for i, im in every.meta.images(range(every.count)).items() if im.relpath == "group.jpg")
    assert sorted(every.faces.store.image_ids.tolist()).count(group) == 2  # both faces of the group photo are stored
    found_central = []
    for person, side in ((LEFT, "left"), (RIGHT, "right")):
        query = load_image(LFW_MINI / person / f"{person}_0002.jpg")
        best = every.query_image(dlib, query, k=3)[0]
        assert best.relpath == "group.jpg" and best.score >= threshold, (person, best)
        x0, _, x1, _ = best.box
        assert (x1 <= 250) if side == "left" else (x0 >= 250), best.box  # the box of the person asked for
        audit = audit_person(every, dlib, person.replace("_", " "), image=query, k=5)
        assert audit.matches == 1 and audit.in_index == 1 and audit.identifies  # the unlabelled group photo counts
        hits = central.query_image(dlib, query, k=3)
        found_central.append(any(h.relpath == "group.jpg" and h.score >= threshold for h in hits))
        assert all(h.box is None for h in hits)
        assert audit_person(central, dlib, person.replace("_", " "), image=query, k=5).matches == 0
    assert sorted(found_central) == [False, True]  # one face per image: only the central person finds it


def test_answers_carry_the_face_box(indexes: tuple[FaceIndex, FaceIndex]) -> None:
    import base64

    from fastapi.testclient import TestClient

    from clipface.server.app import create_app

    every, _ = indexes
    client = TestClient(create_app(every.dir, require_token=False, clip_retrieval=True))
    photo = (LFW_MINI / RIGHT / f"{RIGHT}_0002.jpg").read_bytes()
    best = client.post("/api/search/image", files={"file": photo}, data={"k": "3"}).json()["results"][0]
    assert best["path"] == "group.jpg" and best["box"][0] >= 250 and (best["width"], best["height"]) == (500, 250)
    body = {"image": base64.b64encode(photo).decode(), "modality": "image", "num_images": 3, "indice_name": "all"}
    top = client.post("/knn-service", json=body).json()[0]
    assert top["image_path"] == "group.jpg" and top["box"] == best["box"]
    stats = client.get("/api/stats").json()
    assert stats["faces"]["mode"] == "all" and stats["faces"]["count"] >= every.count + 1


def test_web_page_draws_the_box(indexes: tuple[FaceIndex, FaceIndex]) -> None:
    """Headless Chromium: the first card of a photo search outlines the matching face, right half of the group photo."""
    import threading
    import time

    from .test_browser import ARTIFACTS, CHROMIUM, FLAGS, _free_port, cards

    sync_api = pytest.importorskip("playwright.sync_api")
    uvicorn = pytest.importorskip("uvicorn")
    if CHROMIUM is None:
        pytest.skip("Chromium not installed")
    from clipface.server.app import create_app

    port, token = _free_port(), "faces-token"
    app = create_app(indexes[0].dir, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#token", token)
            page.click("#token-form button")
            page.wait_for_function(
                "() => document.getElementById('stats').textContent.includes('images of')", timeout=20_000
            )
            # a dlib index has no text tower: the page shows no text box, and says why
            assert not page.locator("#text-form").is_visible() and "no text tower" in page.inner_text("#no-text")
            page.set_input_files("#image-file", str(LFW_MINI / RIGHT / f"{RIGHT}_0002.jpg"))
            page.fill("#image-k", "3")
            page.click("#image-form button")
            cards(page, 3)
            first = page.locator("#results .card").first
            img, face = first.locator("img").bounding_box(), first.locator(".face-box").bounding_box()
            assert img is not None and face is not None
            assert (
                face["x"] >= img["x"] + img["width"] / 2 - 1
                and face["x"] + face["width"] <= img["x"] + img["width"] + 1
            )
            assert 0.2 * img["width"] < face["width"] < 0.5 * img["width"]  # a face, not the whole photo
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "search-face-box.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_add_keeps_faces_and_a_cut_face_file_is_refused(indexes: tuple[FaceIndex, FaceIndex], tmp_path: Path) -> None:
    from clipface.index.records import FaceIndexError

    copy = tmp_path / "copy"
    shutil.copytree(indexes[0].dir, copy)
    index = FaceIndex.load(copy, mmap=False)
    before, n = index.faces.store.count, index.count
    update = index.add(load_encoder("dlib"), [LFW_MINI / LEFT / f"{LEFT}_0003.jpg"])
    again = FaceIndex.load(copy)
    assert update.added == 1 and again.count == n + 1 and again.faces.store.count > before
    assert (
        set(again.faces.store.image_ids[before:].tolist()) == {n}
        and again.manifest.faces["count"] == again.faces.store.count
    )
    (copy / "faces.f32").write_bytes(b"\x00" * 16)
    with pytest.raises(FaceIndexError, match="faces.f32: not a readable face file"):
        FaceIndex.load(copy)
