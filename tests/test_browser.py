"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against uvicorn on loopback.

Screenshots go to ``tests/artifacts/``. Skipped when Chromium or Playwright is absent.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from typing import Iterator

import pytest

pytest.importorskip("faiss")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)

from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.server.app import create_app  # noqa: E402

from .conftest import LFW_MINI, REPO, need  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "browser-test-token"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = EmbeddingCache(tmp_path_factory.mktemp("browser-cache"))
    index, _ = FaceIndex.build(tiny, need(LFW_MINI), tmp_path_factory.mktemp("browser") / "idx", cache=cache)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(index.dir, model=tiny, token=TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server_url: str) -> Iterator[sync_api.Page]:
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})

        def loopback_only(route: sync_api.Route) -> None:
            if route.request.url.startswith(server_url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", loopback_only)
        page = context.new_page()
        page.goto(server_url + "/")
        yield page
        browser.close()
    assert outside == [], f"the page tried to load {outside}"


def cards(page: sync_api.Page, k: int) -> list[tuple[str, str]]:
    page.wait_for_function(f"() => document.querySelectorAll('#results .card').length === {k}", timeout=20_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=20_000,
    )
    return [
        (c.locator(".name").inner_text(), c.locator(".score").inner_text())
        for c in page.locator("#results .card").all()
    ]


def test_token_then_text_and_photo_search(page: sync_api.Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.wait_for_function(
        "() => document.getElementById('stats').textContent.includes('100 images of 10 people')", timeout=20_000
    )
    assert page.evaluate("sessionStorage.getItem('clipface-token')") == TOKEN

    page.fill("#text-query", "a photo of Tony Blair.")
    page.fill("#text-k", "6")
    page.click("#text-form button")
    found = cards(page, 6)
    assert all(name.split(". ", 1)[1] and score.startswith("score ") for name, score in found)
    assert [name.split(".", 1)[0] for name, _ in found] == ["1", "2", "3", "4", "5", "6"]
    page.screenshot(path=str(ARTIFACTS / "search-text.png"), full_page=True)

    page.set_input_files("#image-file", str(LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg"))
    page.fill("#image-k", "4")
    page.click("#image-form button")
    found = cards(page, 4)
    assert found[0] == ("1. Tony Blair", "score 1.000")
    page.screenshot(path=str(ARTIFACTS / "search-photo.png"), full_page=True)


def test_audit_view(page: sync_api.Page) -> None:
    page.click("#tab-audit")
    page.fill("#audit-name", "Tony Blair")
    page.set_input_files("#audit-file", str(LFW_MINI / "Tony_Blair" / "Tony_Blair_0002.jpg"))
    page.fill("#audit-k", "10")
    page.click("#audit-form button")
    found = cards(page, 10)
    verdict = page.inner_text("#audit-verdict")
    assert "of the top 10 results are them" in verdict and verdict.split(":")[0] in (
        "identifies this person",
        "does not identify this person",
    )
    assert (
        page.locator("#results .card.match").count() == sum(1 for name, _ in found if name.endswith("Tony Blair")) >= 1
    )
    assert "precision@10" in page.inner_text("#audit-figures")
    page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)


def test_wrong_token_is_reported(page: sync_api.Page) -> None:
    page.fill("#token", "wrong")
    page.click("#token-form button")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('401')", timeout=20_000)
    assert "API token" in page.inner_text("#status")
