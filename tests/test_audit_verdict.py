"""The engine audit's verdict is exposed, not found or cannot tell, and an engine's answers cannot steer it into a
wrong one: inline images, urls only, dead urls, pages that are not images, the base URL, malformed answers, and
captions that try to write the report (issue 23, items 1, 2, 5 and 9). The engine is httpx's mock transport."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from clipface.audit.engine import EngineClient, EngineError, audit_engine
from clipface.audit.fetch import FetchPolicy
from clipface.report.md_study import audit_markdown

from .conftest import LFW_MINI

pytest.importorskip("dlib")

BLAIR = sorted((LFW_MINI / "Tony_Blair").glob("*.jpg"))
POWELL = sorted((LFW_MINI / "Colin_Powell").glob("*.jpg"))


def inline(path: Path, caption: str = "a photo") -> dict:
    return {"id": path.name, "image": base64.b64encode(path.read_bytes()).decode(), "caption": caption}


def engine(results: list[dict], base: str = "http://engine.test/knn-service", status: int = 200):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/indices-list":
            return httpx.Response(200, json=["faces"])
        if request.url.path != "/knn-service":
            return httpx.Response(405, json={"error": "method not allowed"})
        return httpx.Response(status, json=results)

    return EngineClient(base, "faces", transport=httpx.MockTransport(handler)), seen


@pytest.fixture(scope="module")
def dlib():
    from clipface.models.runtime import load_encoder

    return load_encoder("dlib")


def run(client: EngineClient, dlib, fetch: bool = True) -> dict:
    policy = FetchPolicy(fetch_urls=fetch, allow_private=True)  # the dead links are on loopback
    return audit_engine(client, BLAIR[:3], dlib, 0.9223, "Tony_Blair", k=10, prompts=(), fetch=policy)


def test_inline_photos_of_the_person_are_exposed_and_of_others_not_found(dlib) -> None:
    exposed = run(engine([inline(p) for p in BLAIR[3:8]])[0], dlib)
    assert exposed["verdict"] == "exposed" and exposed["images_found"] >= 4 and exposed["n_read"] == 5
    absent = run(engine([inline(p) for p in POWELL[:6]])[0], dlib)
    assert absent["verdict"] == "not found" and absent["images_found"] == 0 and absent["n_read"] == 6


def test_urls_that_are_not_fetched_or_dead_cannot_tell(dlib) -> None:
    urls = [{"id": i, "url": f"http://127.0.0.1:9/photo{i}.jpg", "caption": "Tony Blair"} for i in range(8)]
    for fetch in (False, True):  # --no-fetch against a url-only index (as LAION's), and dead links
        doc = run(engine(urls)[0], dlib, fetch)
        assert doc["verdict"] == "cannot tell" and doc["n_read"] == 0, doc["summary"]
        assert doc["n_unreadable"] == 8  # distinct results, not one per query that returned them
    mostly_dead = [inline(POWELL[0])] + urls
    assert run(engine(mostly_dead)[0], dlib)["verdict"] == "cannot tell"  # 1 of 9 read is too few to say


def test_an_engine_answering_no_query_cannot_tell(dlib) -> None:
    doc = run(engine([], status=500)[0], dlib)
    assert doc["verdict"] == "cannot tell" and "answered no query" in doc["summary"]


def test_the_base_url_means_its_knn_service(dlib) -> None:
    client, seen = engine([inline(p) for p in BLAIR[3:6]], base="http://engine.test")
    assert client.indices() == ["faces"]
    doc = run(client, dlib)
    assert doc["verdict"] == "exposed" and {r.url.path for r in seen} == {"/indices-list", "/knn-service"}


@pytest.mark.parametrize("answer", [7, None, [1, 2], {"faces": 1}], ids=["number", "null", "numbers", "object"])
def test_a_malformed_indices_list_is_one_engine_error(answer: object) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(answer), headers={"content-type": "application/json"})

    client = EngineClient("http://engine.test", "faces", transport=httpx.MockTransport(handler))
    with pytest.raises(EngineError, match="expected a list of index names"):
        client.indices()


def test_unreadable_results_are_no_misses_and_pages_are_unreadable(dlib) -> None:
    page = {"id": "page", "image": base64.b64encode(b"<html>not a photo</html>").decode()}
    doc = run(engine([inline(p) for p in BLAIR[3:8]] + [page, {"id": "bare"}])[0], dlib)
    image = doc["queries"]["image"]
    assert image["precision_at_k"] == pytest.approx(doc["images_found"] / 5)  # among the 5 read, not the 7 returned
    reasons = {u["id"]: u["reason"] for u in doc["unreadable"]}
    assert reasons["page"].startswith("not an image") and "no image" in reasons["bare"]


def test_captions_cannot_write_the_report(dlib) -> None:
    evil = "Tony Blair\n\n# You were hacked\n![beacon](http://evil.test/p.png) [click](http://evil.test)"
    doc = run(engine([inline(p, evil) for p in BLAIR[3:6]])[0], dlib)
    md = audit_markdown(doc)
    assert doc["verdict"] == "exposed" and "hacked" in md
    assert not any(line.startswith("# You") for line in md.splitlines())
    assert "![beacon](" not in md and "[click](" not in md


def test_the_query_asks_as_clipclient_does_and_a_huge_answer_is_refused() -> None:
    client, seen = engine([{"id": 1}])
    client.knn(text="a photo of Tony Blair.")
    sent = json.loads(seen[-1].content)
    assert sent["deduplicate"] is True and sent["use_safety_model"] is True  # ClipClient's defaults
    off, seen = engine([{"id": 1}])
    off.deduplicate = off.use_safety_model = False
    off.knn(text="x")
    assert json.loads(seen[-1].content)["deduplicate"] is False
    huge, _ = engine([{"id": i, "caption": "x" * 1000} for i in range(3000)])
    huge.max_answer_bytes = 2**20
    with pytest.raises(EngineError, match="over 1 MB"):
        huge.knn(text="x")


def test_an_engine_that_stops_answering_stops_the_audit(dlib) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("no answer", request=request)

    client = EngineClient("http://engine.test", "faces", transport=httpx.MockTransport(handler), max_timeouts=3)
    doc = audit_engine(client, BLAIR[:3], dlib, 0.9223, "Tony_Blair", k=10, prompts=("{}", "a photo of {}."))
    assert len(calls) == 3 and "timed out 3 times in a row" in doc["stopped_early"]  # 5 queries, 3 sent
    assert doc["verdict"] == "cannot tell"


def test_the_audit_deadline_stops_sending_queries(dlib) -> None:
    client, seen = engine([inline(p) for p in POWELL[:4]])
    doc = audit_engine(client, BLAIR[:3], dlib, 0.9223, "Tony_Blair", k=10, prompts=(), deadline_s=0.0)
    assert not [r for r in seen if r.url.path == "/knn-service"] and "deadline" in doc["stopped_early"]
    assert doc["verdict"] == "cannot tell"


def test_the_same_photo_twice_is_one_image_of_the_person(dlib, tmp_path: Path) -> None:
    from PIL import Image

    again = tmp_path / "again.jpg"
    Image.open(BLAIR[4]).resize((200, 200)).save(again, quality=60)  # the same photo, resized and re-encoded
    doc = run(engine([inline(BLAIR[4]), inline(again), inline(BLAIR[5])])[0], dlib)
    assert doc["verdict"] == "exposed" and doc["images_found"] == 2 and doc["n_read"] == 3
