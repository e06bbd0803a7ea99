"""The engine client against rate limits (HTTP 429/503 with Retry-After), on httpx's mock transport: no network."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from clipface.audit import engine as engine_mod
from clipface.audit.engine import EngineClient, EngineError, retry_after

URL = "http://engine.test/knn-service"


def client_for(answers: list[httpx.Response], **kwargs) -> tuple[EngineClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return EngineClient(URL, "faces", transport=httpx.MockTransport(handler), **kwargs), seen


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(engine_mod.time, "sleep", waits.append)
    return waits


def limited(seconds: str | None = "3", status: int = 429) -> httpx.Response:
    headers = {"Retry-After": seconds} if seconds is not None else {}
    return httpx.Response(status, json={"error": "rate limit exceeded"}, headers=headers)


def test_a_rate_limited_query_waits_as_asked_and_is_answered(slept: list[float]) -> None:
    notes: list[str] = []
    client, seen = client_for(
        [limited("3"), limited("2"), httpx.Response(200, json=[{"id": 1}, "junk"])], on_wait=notes.append
    )
    assert client.knn(text="a photo of Tony Blair.") == [{"id": 1}]
    assert slept == [3.0, 2.0] and client.waits == 2 and client.waited_s == 5.0
    assert len(seen) == 3 and all(r.url == URL and r.method == "POST" for r in seen)
    assert "HTTP 429, waiting 3 s" in notes[0]


def test_a_wait_longer_than_allowed_is_an_error_without_sleeping(slept: list[float]) -> None:
    client, seen = client_for([limited("600")], max_wait=60)
    with pytest.raises(EngineError, match="/indices-list: HTTP 429: rate limit exceeded"):
        client.indices()
    assert slept == [] and len(seen) == 1 and client.waits == 0


def test_retries_are_bounded_and_back_off_without_retry_after(slept: list[float]) -> None:
    client, seen = client_for([limited(None)] * 4, retries=3)
    with pytest.raises(EngineError, match="HTTP 429"):
        client.knn(text="x")
    assert slept == [1.0, 2.0, 4.0] and len(seen) == 4


def test_a_503_is_retried_only_when_the_engine_says_when(slept: list[float]) -> None:
    client, _ = client_for([limited(None, 503)])
    with pytest.raises(EngineError, match="HTTP 503"):
        client.knn(text="x")
    client, _ = client_for([limited("1", 503), httpx.Response(200, json=["faces"])])
    assert client.indices() == ["faces"] and slept == [1.0]


def test_other_errors_are_not_retried(slept: list[float]) -> None:
    client, seen = client_for([httpx.Response(401, json={"error": "missing or wrong API token"})])
    with pytest.raises(EngineError, match="HTTP 401: missing or wrong API token"):
        client.indices()
    assert slept == [] and len(seen) == 1


def test_the_token_is_sent_as_a_bearer() -> None:
    client, seen = client_for([httpx.Response(200, json=["faces"])], token="s3cret")
    client.indices()
    assert seen[0].headers["authorization"] == "Bearer s3cret" and str(seen[0].url).endswith("/indices-list")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7", 1.0) == 7.0 and retry_after(None, 1.5) == 1.5 and retry_after("soon", 2.0) == 2.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after(later, 1.0) <= 31
    assert retry_after(email.utils.formatdate(time.time() - 30, usegmt=True), 1.0) == 0.0


def test_the_audit_report_says_how_long_a_rate_limited_engine_made_it_wait() -> None:
    from clipface.report.md_study import audit_markdown

    query = {"queries": 2, "answered": 2, "n_errors": 0, "precision_at_k": 0.5, "images_found": 1}
    doc = {
        "engine": URL,
        "indice": "faces",
        "person": "Tony Blair",
        "verdict": "the engine returns 1 distinct images of Tony Blair",
        "photos": ["a.jpg"],
        "model": "dlib",
        "threshold": 0.93,
        "k": 10,
        "n_unreadable": 0,
        "unreadable": [],
        "queries": {"image": {**query, "found_with_name_in_caption": 0, "examples": [], "errors": []}},
        "rate_limited": {"waits": 3, "seconds": 7.2},
    }
    assert "the audit waited 3 times, 7 s in all" in audit_markdown(doc)
    assert "limited its rate" not in audit_markdown({**doc, "rate_limited": {"waits": 0, "seconds": 0.0}})
    assert "limited its rate" not in audit_markdown({k: v for k, v in doc.items() if k != "rate_limited"})
