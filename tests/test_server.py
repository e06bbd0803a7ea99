"""The HTTP API: token, opt-out, limits (size, pixels, rate, k), JSON errors, file access by id only, schema."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clipface.data.images import file_sha256  # noqa: E402
from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.errors import ClipfaceError  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.server.app import create_app  # noqa: E402
from clipface.server.policies import OptOutList, RateLimiter  # noqa: E402

from .conftest import LFW_MINI, need, write_huge_png  # noqa: E402

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BLAIR = LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg"
POWELL = LFW_MINI / "Colin_Powell" / "Colin_Powell_0001.jpg"


@pytest.fixture(scope="module")
def index_dir(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = EmbeddingCache(tmp_path_factory.mktemp("server-cache"))
    index, _ = FaceIndex.build(tiny, need(LFW_MINI), tmp_path_factory.mktemp("server") / "idx", cache=cache)
    return index.dir


@pytest.fixture
def opt_out(tmp_path: Path) -> Path:
    path = tmp_path / "opt-out.txt"
    path.write_text(f"# people and photos never shown\nTony_Blair\n{file_sha256(POWELL)}\n")
    return path


@pytest.fixture
def client(index_dir: Path, tiny, opt_out: Path) -> TestClient:
    return TestClient(create_app(index_dir, model=tiny, token=TOKEN, opt_out=opt_out, rate_limit=10_000))


def photo(path: Path = BLAIR) -> dict[str, Any]:
    return {"file": (path.name, path.read_bytes(), "image/jpeg")}


def assert_json_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def test_token_is_required_unless_turned_off(client: TestClient, index_dir: Path, tiny, monkeypatch) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert "API token" in assert_json_error(client.get("/api/stats", headers=headers), 401)
    assert_json_error(client.post("/api/search/text", json={"query": "x"}), 401)
    assert_json_error(client.get("/api/image/0"), 401)
    stats = client.get("/api/stats", headers=AUTH)
    assert stats.status_code == 200 and stats.json()["count"] == 100 and stats.json()["has_text"] is True
    monkeypatch.delenv("CLIPFACE_API_TOKEN", raising=False)
    with pytest.raises(ClipfaceError, match="CLIPFACE_API_TOKEN"):
        create_app(index_dir, model=tiny)
    monkeypatch.setenv("CLIPFACE_API_TOKEN", "from-env")
    from_env = TestClient(create_app(index_dir, model=tiny))
    assert from_env.get("/api/stats", headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert from_env.get("/api/stats", headers=AUTH).status_code == 401
    open_app = TestClient(create_app(index_dir, model=tiny, require_token=False))
    assert open_app.get("/api/stats").status_code == 200


def test_queries_return_json_results_without_opted_out_people(client: TestClient) -> None:
    response = client.post("/api/search/image", files=photo(), data={"k": "5"}, headers=AUTH)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    for r in results:
        assert set(r) == {"rank", "id", "path", "identity", "name", "score", "image_url", "box", "width", "height"}
        assert r["box"] is None  # an index without face vectors
        assert r["image_url"] == f"/api/image/{r['id']}" and not r["path"].startswith("/")
    powell = "Colin_Powell/Colin_Powell_0001.jpg"
    for k in (20, 100):
        text = client.post("/api/search/text", json={"query": "a photo of Tony Blair.", "k": k}, headers=AUTH).json()[
            "results"
        ]
        image = client.post("/api/search/image", files=photo(), data={"k": str(k)}, headers=AUTH).json()["results"]
        for got in (text, image):
            assert len(got) == min(k, 89)  # 100 images less Tony Blair's 10 and one photo of Colin Powell
            assert all(r["identity"] != "Tony_Blair" and r["path"] != powell for r in got)
    blair_id = FaceIndex.load(client.app.state.index.dir).meta.images_of("Tony Blair")[0].id
    assert_json_error(client.get(f"/api/image/{blair_id}", headers=AUTH), 404)


def test_opt_out_file_is_reread_and_applies_to_audit(client: TestClient, opt_out: Path) -> None:
    audit = client.post("/api/audit", data={"name": "Tony Blair", "k": "5"}, headers=AUTH).json()
    assert (audit["in_index"], audit["matches"], audit["identifies"]) == (0, 0, None)
    assert audit["verdict"].startswith("cannot tell")
    bush = client.post(
        "/api/audit",
        files=photo(LFW_MINI / "George_W_Bush" / "George_W_Bush_0001.jpg"),
        data={"name": "george w bush", "k": "10"},
        headers=AUTH,
    )
    body = bush.json()
    assert bush.status_code == 200 and body["query"] == "photo" and body["in_index"] == 10 and body["matches"] >= 1
    assert body["verdict"].endswith(f"{body['matches']} of the top 10 results are them") and len(body["results"]) == 10
    with opt_out.open("a") as fh:
        fh.write("George W Bush\n")
    import os

    os.utime(opt_out, (1, 2))  # a new mtime even within the file system's time resolution
    results = client.post(
        "/api/search/image",
        files=photo(LFW_MINI / "George_W_Bush" / "George_W_Bush_0001.jpg"),
        data={"k": "30"},
        headers=AUTH,
    ).json()["results"]
    assert len(results) == 30 and all(r["identity"] not in ("George_W_Bush", "Tony_Blair") for r in results)


def test_upload_limits(client: TestClient, index_dir: Path, tiny, tmp_path: Path) -> None:
    big = b"\xff" * (50 * 2**20)
    error = assert_json_error(
        client.post("/api/search/image", files={"file": ("big.jpg", big, "image/jpeg")}, headers=AUTH), 413
    )
    assert "too large" in error
    huge = tmp_path / "huge.png"
    write_huge_png(huge, 20000, 20000)  # 400 Mpx in a few hundred kB
    assert "image too large" in assert_json_error(
        client.post("/api/search/image", files=photo(huge), headers=AUTH), 413
    )
    assert "not an image" in assert_json_error(
        client.post("/api/search/image", files={"file": ("x.jpg", b"hello", "image/jpeg")}, headers=AUTH), 422
    )
    assert_json_error(client.post("/api/search/image", data={"k": "3"}, headers=AUTH), 422)


def test_body_without_content_length_is_cut_off_while_read(index_dir: Path, tiny) -> None:
    """A chunked 50 MB upload: the app stops reading just past the limit (counted at the ASGI boundary)."""
    app = create_app(index_dir, model=tiny, require_token=False, max_upload_bytes=2**20)
    pulled: list[int] = []

    async def chunked(scope, receive, send):  # deliver the test client's body in 256 kB messages, as a server would
        if scope["type"] != "http":
            return await app(scope, receive, send)
        body = (await receive())["body"]
        parts = [body[i : i + 2**18] for i in range(0, len(body), 2**18)]

        async def next_part():
            if parts:
                pulled.append(len(parts[0]))
                return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}
            return await receive()

        await app(scope, next_part, send)

    def stream():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        for _ in range(50):
            yield b"\xff" * 2**20
        yield b"\r\n--b--\r\n"

    response = TestClient(chunked).post(
        "/api/search/image", content=stream(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_json_error(response, 413)
    assert sum(pulled) <= 2**20 + 2**18


def test_rate_limit_per_client(index_dir: Path, tiny) -> None:
    client = TestClient(create_app(index_dir, model=tiny, require_token=False, rate_limit=3))
    assert [client.get("/api/stats").status_code for _ in range(3)] == [200, 200, 200]
    response = client.get("/api/stats")
    assert "rate limit" in assert_json_error(response, 429) and int(response.headers["retry-after"]) >= 1
    assert client.get("/api/health").status_code == 200
    limiter = RateLimiter(60)
    assert [limiter.wait("a") == 0 for _ in range(61)].count(True) == 60 and limiter.wait("b") == 0


def test_errors_are_json_without_traces(client: TestClient, index_dir: Path, tiny) -> None:
    assert "k must be between 1 and 100" in assert_json_error(
        client.post("/api/search/text", json={"query": "x", "k": 1000}, headers=AUTH), 422
    )
    assert "query" in assert_json_error(client.post("/api/search/text", json={"k": 3}, headers=AUTH), 422)
    assert (
        assert_json_error(
            client.post("/api/search/text", content=b"{oops", headers={**AUTH, "Content-Type": "application/json"}), 422
        )
        == "invalid JSON body"
    )
    assert_json_error(client.get("/api/nowhere", headers=AUTH), 404)
    assert_json_error(client.delete("/api/stats", headers=AUTH), 405)
    app = create_app(index_dir, model=tiny, require_token=False)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app.state.index.search_vectors = boom
    crashed = TestClient(app, raise_server_exceptions=False).post("/api/search/text", json={"query": "x"})
    assert assert_json_error(crashed, 500) == "internal server error" and "secret" not in crashed.text


def test_images_are_served_by_id_only(client: TestClient) -> None:
    ok = client.get("/api/image/5", headers=AUTH)
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(ok.content)).size) <= 256
    for path in (
        "/api/image/../../../etc/passwd",
        "/api/image/..%2F..%2Fetc%2Fpasswd",
        "/api/image/%2Fetc%2Fpasswd",
        "/api/image/-1",
        "/api/image/100",
        "/api/image/1e3",
        "/api/image/0x1",
        "/api/image/5/../../app.js",
    ):
        response = client.get(path, headers=AUTH)
        assert response.status_code in (404, 422), path
        assert response.headers["content-type"].startswith("application/json"), path
        assert b"root:" not in response.content


def test_schema_page_and_headers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/api/health",
        "/api/stats",
        "/api/search/text",
        "/api/search/image",
        "/api/audit",
        "/api/image/{image_id}",
    } <= set(schema["paths"])
    assert "SearchResponse" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text and 'id="token"' in page.text
    assert (
        "default-src 'self'" in page.headers["content-security-policy"]
        and page.headers["x-content-type-options"] == "nosniff"
    )
    for asset in ("/", "/app.js", "/style.css"):
        text = client.get(asset).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), (
            f"{asset} loads something from outside"
        )


def test_opt_out_list_parsing(tmp_path: Path) -> None:
    sha = "A" * 64
    listed = OptOutList(entries=["  Tony_Blair # asked on 2024-01-01", "", "# comment", sha, "george w. bush"])
    assert listed.identities == {"tony blair", "george w. bush"} and listed.hashes == {"a" * 64} and len(listed) == 3
    with pytest.raises(ClipfaceError, match="opt-out list"):
        OptOutList(tmp_path / "missing.txt")


@pytest.mark.parametrize("blank", [" ", "\u00a0", "\u00a0\u200b\ufeff", "\u3000\t"])
def test_blank_names_and_queries_are_refused_by_route_and_schema_alike(client: TestClient, blank: str) -> None:
    """White space and invisible characters only (data.textnorm) is refused on both routes; the rule is the schema's."""
    import jsonschema_rs

    assert "blank" in assert_json_error(client.post("/api/audit", data={"name": blank}, headers=AUTH), 422)
    assert_json_error(client.post("/api/search/text", json={"query": blank}, headers=AUTH), 422)
    pattern = client.get("/openapi.json").json()["components"]["schemas"]["TextQuery"]["properties"]["query"]["pattern"]
    assert not jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid(blank)


@pytest.mark.parametrize("name", ["\U000c3c31\u00a0", "O\u2019Connor", "\u00a0Ren\u00e9e"])
def test_names_with_one_visible_or_unassigned_character_are_served(client: TestClient, name: str) -> None:
    """The failing case of a schemathesis run: an unassigned astral code point and a no-break space is a name."""
    import jsonschema_rs

    assert client.post("/api/audit", data={"name": name, "k": "3"}, headers=AUTH).status_code == 200
    assert client.post("/api/search/text", json={"query": name, "k": 3}, headers=AUTH).status_code == 200
    pattern = client.get("/openapi.json").json()["components"]["schemas"]["TextQuery"]["properties"]["query"]["pattern"]
    assert jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid(name)
