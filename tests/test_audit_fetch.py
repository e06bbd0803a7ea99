"""The auditor reads what an engine names as untrusted input: public addresses only (redirects re-checked), each url
once, a failing host given up, answers capped, local paths only when asked and only regular files (issue 23,
items 4, 6, 7 and 8)."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from clipface.audit.fetch import BROWSER_AGENT, Fetcher, FetchPolicy, public_host

from .conftest import LFW_MINI

PHOTO = (LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
NAMES = {"public.test": ["93.184.216.34"], "evil.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "10.0.0.7"]}


def resolve(host: str) -> list[str]:
    if host not in NAMES:
        raise OSError("unknown host")
    return NAMES[host]


def fetcher(handler, **policy) -> tuple[Fetcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return Fetcher(FetchPolicy(**policy), transport=httpx.MockTransport(record), resolve=resolve), seen


def photo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PHOTO, headers={"content-type": "image/jpeg"})


@pytest.fixture
def local_admin() -> Iterator[tuple[int, list[str]]]:
    """A real HTTP server on loopback, as an admin port the engine would like the auditor to call."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PHOTO)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()


def test_loopback_and_private_urls_are_not_fetched_unless_allowed(local_admin: tuple[int, list[str]]) -> None:
    port, hits = local_admin
    result = {"id": 1, "url": f"http://127.0.0.1:{port}/admin/delete-everything"}
    got = Fetcher(FetchPolicy()).read(result)
    assert not got.ok and "private" in got.source and hits == []  # not one request reached the admin port
    allowed = Fetcher(FetchPolicy(allow_private=True)).read(result)
    assert allowed.ok and allowed.data == PHOTO and hits == ["/admin/delete-everything"]
    assert public_host("93.184.216.34") and not public_host("10.1.2.3") and not public_host("::1")
    assert not public_host("mixed.test", resolve) and not public_host("nowhere.test", resolve)


def test_a_redirect_into_the_private_network_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "public.test":
            return httpx.Response(302, headers={"location": "http://evil.test/admin"})
        return photo(request)

    f, seen = fetcher(handler)
    got = f.read({"id": 1, "url": "http://public.test/a.jpg"})
    assert not got.ok and "private" in got.source and [r.url.host for r in seen] == ["public.test"]
    f, seen = fetcher(lambda r: httpx.Response(302, headers={"location": "/again"}) if r.url.path != "/x" else photo(r))
    assert "redirected more than" in f.read({"id": 2, "url": "http://public.test/loop"}).source


def test_each_url_is_fetched_once_with_a_browser_agent() -> None:
    f, seen = fetcher(photo)
    results = [{"id": i, "url": "http://public.test/same.jpg"} for i in range(5)]
    got = [f.read(r) for r in results]
    assert len(seen) == 1 and seen[0].headers["user-agent"] == BROWSER_AGENT
    assert got[0].data == PHOTO and all(g.key == got[0].key for g in got) and all(g.data is None for g in got[1:])


def test_a_host_that_keeps_failing_is_given_up() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("no answer", request=request)

    f, seen = fetcher(down, host_failures=3)
    reasons = [f.read({"id": i, "url": f"http://public.test/{i}.jpg"}).source for i in range(10)]
    assert len(seen) == 3 and all("not asked again" in r for r in reasons[3:]), reasons


def test_a_huge_answer_is_cut_at_the_cap() -> None:
    f, _ = fetcher(lambda r: httpx.Response(200, content=b"\xff" * (3 * 2**20)), max_bytes=2**20)
    got = f.read({"id": 1, "url": "http://public.test/huge.jpg"})
    assert not got.ok and "over 1 MB" in got.source


def test_local_paths_are_read_only_when_asked_and_only_regular_files(tmp_path: Path) -> None:
    theirs = {"id": 1, "image_path": str(LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg")}
    got = Fetcher(FetchPolicy()).read(theirs)
    assert not got.ok and "--read-local-paths" in got.source  # a local photo of the person is not exposure
    reader = Fetcher(FetchPolicy(read_local_paths=True, max_bytes=2**20))
    assert reader.read(theirs).data == PHOTO
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\0" * (2**20 + 1))
    for path, why in (
        ("/dev/zero", "not a regular file"),
        (str(fifo), "not a regular file"),
        (str(tmp_path), "not a regular file"),
        (str(big), "over 1 MB"),
    ):
        got = reader.read({"id": 2, "image_path": path})  # returns at once: nothing is opened that could hang
        assert not got.ok and why in got.source, (path, got.source)
