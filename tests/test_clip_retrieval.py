"""clip-retrieval's back-end API served by clipface: its own ClipClient, its own web front end, the same policies."""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from PIL import Image

from clipface.embed.options import RunOptions
from clipface.jobs import build_index

from .conftest import LFW_MINI, REPO
from .live_server import serve

CLIENT_SPEC = importlib.util.find_spec("clip_retrieval")
pytestmark = pytest.mark.skipif(
    CLIENT_SPEC is None, reason="clip-retrieval not installed (pip install --no-deps clip-retrieval)"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "cr-token"


def clip_client_module() -> Any:
    """clip-retrieval's ``clip_client.py`` loaded from its installed file (the package ``__init__`` imports the whole
    back end)."""
    folder = Path(next(iter(CLIENT_SPEC.submodule_search_locations)))  # type: ignore[union-attr]
    spec = importlib.util.spec_from_file_location("clip_client_only", folder / "clip_client.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cr")
    folder = root / "lfw-engine"
    build_index("test-tiny-random", str(LFW_MINI), folder, RunOptions(progress=False))
    (root / "optout.txt").write_text("Colin Powell\n")
    return folder


@pytest.fixture(scope="module")
def engine(index: Path) -> Iterator[str]:
    opt_out = index.parent / "optout.txt"
    with serve(
        index, "--clip-retrieval", "--no-auth", "--opt-out", str(opt_out), "--cors-origin", "http://127.0.0.1:1"
    ) as (
        port,
        _,
    ):
        yield f"http://127.0.0.1:{port}"


def test_clip_client_queries_by_text_and_by_image(engine: str) -> None:
    client_mod = clip_client_module()
    client = client_mod.ClipClient(url=f"{engine}/knn-service", indice_name="lfw-engine", num_images=5)
    by_text = client.query(text="a photo of Tony Blair.")
    assert isinstance(by_text, list) and len(by_text) == 5
    for r in by_text:
        assert {"id", "similarity", "caption", "image_path"} <= set(r)
        Image.open(io.BytesIO(base64.b64decode(r["image"]))).verify()  # a real JPEG the client can read
    assert [r["similarity"] for r in by_text] == sorted((r["similarity"] for r in by_text), reverse=True)
    photo = LFW_MINI / "Tony_Blair" / "Tony_Blair_0003.jpg"
    by_image = client.query(image=str(photo))
    assert by_image[0]["image_path"] == "Tony_Blair/Tony_Blair_0003.jpg" and by_image[0]["similarity"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert client.query(embedding_input=[0.0] * 63 + [1.0])  # an embedding query of the index's dimension
    everything = client_mod.ClipClient(url=f"{engine}/knn-service", indice_name="lfw-engine", num_images=100).query(
        text="x"
    )
    assert everything and not any(r.get("caption") == "Colin Powell" for r in everything)  # the opt-out holds here too


def test_answers_and_errors_are_json(engine: str) -> None:
    assert httpx.get(f"{engine}/indices-list").json() == ["lfw-engine"]
    body = {
        "text": "a photo of Tony Blair.",
        "modality": "image",
        "num_images": 2,
        "num_result_ids": 5000,
        "indice_name": "lfw-engine",
        "deduplicate": True,
        "use_safety_model": True,
        "aesthetic_score": 9,
    }
    resp = httpx.post(f"{engine}/knn-service", content=json.dumps(body))  # no Content-Type, as ClipClient sends
    assert resp.status_code == 200
    assert resp.headers["x-clipface-ignored"] == "aesthetic_score, use_safety_model, deduplicate"
    assert resp.headers["x-clipface-clamped"] == "num_result_ids=1000"
    results = resp.json()
    assert (
        len(results) == 90 and "image" in results[1] and "image" not in results[2]
    )  # ids beyond num_images: no metadata
    ids = [r["id"] for r in results[2:5]]
    meta = httpx.post(f"{engine}/metadata", json={"ids": ids, "indice_name": "lfw-engine"}).json()
    assert [m["id"] for m in meta] == ids and all("image" in m["metadata"] for m in meta)
    for payload, status, words in [
        ({**body, "indice_name": "laion5B"}, 404, "unknown indice_name"),
        ({"text": "x", "indice_name": "lfw-engine"}, 400, "num_images is required"),
        ({**body, "modality": "text"}, 400, "no text index"),
        ({**body, "text": None, "image_url": "http://example.com/a.jpg"}, 400, "image_url is not supported"),
        ({**body, "text": None, "image": "%%%not base64"}, 400, "not valid base64"),
        ({**body, "text": None, "embedding_input": [1.0, 2.0]}, 400, "embedding_input must be 64"),
        ({**body, "text": None}, 400, "give one of text, image or embedding_input"),
    ]:
        resp = httpx.post(f"{engine}/knn-service", json=payload)
        assert resp.status_code == status and words in resp.json()["error"], (payload, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
    assert httpx.post(f"{engine}/knn-service", content=b"{oops").json()["error"] == "the body is not JSON"


def test_same_token_policy(index: Path) -> None:
    with serve(index, "--clip-retrieval", token=TOKEN) as (port, _):
        base = f"http://127.0.0.1:{port}"
        body = {"text": "x", "modality": "image", "num_images": 1, "indice_name": "lfw-engine"}
        refused = httpx.post(f"{base}/knn-service", json=body)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert httpx.get(f"{base}/indices-list").status_code == 401
        ok = httpx.post(f"{base}/knn-service", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and len(ok.json()) == 1
    with serve(index, token=TOKEN) as (port, _):  # without --clip-retrieval the routes do not exist
        assert httpx.post(f"http://127.0.0.1:{port}/knn-service", json=body).status_code == 404


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_clip_retrieval_front_end_shows_clipface_results(index: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    site = Path(next(iter(CLIENT_SPEC.submodule_search_locations))).parent / "front" / "build"  # type: ignore[union-attr]
    front = tmp_path / "front"
    shutil.copytree(site, front)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(front)))
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with serve(index, "--clip-retrieval", "--no-auth", "--cors-origin", origin) as (port, _):
            backend = f"http://127.0.0.1:{port}"
            (front / "config.json").write_text(json.dumps({"defaultBackend": backend, "defaultIndex": "lfw-engine"}))
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{origin}/?query=a%20photo%20of%20Tony%20Blair")
                page.wait_for_function(
                    "() => { const f = document.querySelector('clip-front'); const r = f && f.shadowRoot;"
                    " return r && r.querySelectorAll('img[src^=\"data:image\"]').length >= 5 }",
                    timeout=60_000,
                )
                captions = page.evaluate(
                    "() => [...document.querySelector('clip-front').shadowRoot.querySelectorAll('figcaption')]"
                    ".map(e => e.textContent.trim())"
                )
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "clip-retrieval-front.png"))
                browser.close()
        people = {p.name.replace("_", " ") for p in LFW_MINI.iterdir()}
        assert captions and all(c in people for c in captions if c)
    finally:
        httpd.shutdown()
