"""clip-retrieval's routes against hostile bodies: never a 500, vectors checked and normalised in float64, and the
work done off the event loop (issue 23, items 10-12)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.server.app import create_app  # noqa: E402

from .conftest import LFW_MINI  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("cr-hostile")
    index = FaceIndex.build(tiny, LFW_MINI, root / "idx", cache=EmbeddingCache(root / "cache"))[0]
    return TestClient(create_app(index.dir, model=tiny, require_token=False, rate_limit=None, clip_retrieval=True))


def knn(client: TestClient, **body) -> object:
    return client.post("/knn-service", json={"num_images": 5, "indice_name": "idx", **body})


def test_a_huge_vector_is_the_same_direction_not_all_zero(client: TestClient) -> None:
    vector = FaceIndex.load(client.app.state.index.dir).image_vectors()[3].astype(np.float64)
    plain = knn(client, embedding_input=vector.tolist())
    huge = knn(client, embedding_input=(vector * 1e20).tolist())
    vast = knn(client, embedding_input=(vector * 1e300).tolist())
    assert plain.status_code == huge.status_code == vast.status_code == 200
    ids = [r["id"] for r in plain.json()]
    assert ids[0] == 3 and [r["id"] for r in huge.json()] == ids == [r["id"] for r in vast.json()]
    assert huge.json()[0]["similarity"] == pytest.approx(1.0, abs=1e-4)  # float32 overflow made it 0


@pytest.mark.parametrize(
    "vector",
    [
        ["0.1"] * 64,  # strings
        [True] * 64,  # booleans
        [[0.1] * 64],  # nested
        [0.1] * 63,  # short
        [0.0] * 64,  # zero
        [10**400] + [0] * 63,  # beyond float64
        "0.1," * 64,
    ],
    ids=["strings", "booleans", "nested", "short", "zero", "400-digits", "a-string"],
)
def test_a_vector_that_is_not_one_is_a_400(client: TestClient, vector: object) -> None:
    response = knn(client, embedding_input=vector)
    assert response.status_code == 400 and "embedding_input" in response.json()["error"], response.text


def test_bodies_that_broke_the_server_are_400s(client: TestClient) -> None:
    deep = '{"embedding_input": ' + "[" * 100_000 + "]" * 100_000 + ', "num_images": 1, "indice_name": "idx"}'
    for route in ("/knn-service", "/metadata"):
        response = client.post(route, content=deep)
        assert response.status_code == 400 and "JSON" in response.json()["error"], (route, response.text)
    surrogate = '{"text": "\\ud800 Tony Blair", "num_images": 1, "indice_name": "idx"}'
    response = client.post("/knn-service", content=surrogate)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]
    assert json.loads(surrogate)["text"].startswith("\ud800")  # the body is valid JSON: the check is ours


def test_embedding_and_search_run_off_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    index = client.app.state.index
    seen: list[bool] = []
    original = type(index).search_vectors

    def spy(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            seen.append(True)  # called on the event loop: every other client would wait
        except RuntimeError:
            seen.append(False)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(index), "search_vectors", spy)
    assert knn(client, text="a photo of Tony Blair").status_code == 200
    assert client.post("/metadata", json={"ids": [0, 1], "indice_name": "idx"}).status_code == 200
    assert seen == [False]


def test_a_sidecar_caption_is_the_caption_as_in_clip_retrievals_layout(tiny, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, src in enumerate(sorted((LFW_MINI / "Tony_Blair").glob("*.jpg"))[:3]):
        (photos / f"{i:05d}.jpg").write_bytes(src.read_bytes())
    (photos / "00000.txt").write_text("Prime minister at a press\nconference, 2003", encoding="utf-8")
    (photos / "00001.txt").write_bytes(b"x" * 100_000)  # a caption, not a file: read up to the cap
    index = FaceIndex.build(tiny, photos, tmp_path / "idx", cache=EmbeddingCache(tmp_path / "cache"))[0]
    app = create_app(index.dir, model=tiny, require_token=False, rate_limit=None, clip_retrieval=True)
    meta = TestClient(app).post("/metadata", json={"ids": [0, 1, 2], "indice_name": "idx"}).json()
    captions = {Path(m["metadata"]["image_path"]).stem: m["metadata"]["caption"] for m in meta}
    assert captions["00000"] == "Prime minister at a press conference, 2003"
    assert len(captions["00001"]) == 4096 and captions["00002"] == "00002.jpg"


def test_results_past_the_image_cap_keep_their_metadata(tiny, tmp_path: Path) -> None:
    """clip_back gives metadata to every one of num_images; past our 100 inline images each keeps caption and path."""
    from PIL import Image, ImageOps

    photos = tmp_path / "photos"
    for src in sorted(LFW_MINI.rglob("*.jpg")):
        (photos / src.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / src.parent.name / src.name).write_bytes(src.read_bytes())
        ImageOps.mirror(Image.open(src)).save(photos / src.parent.name / f"mirrored_{src.name}")
    index = FaceIndex.build(tiny, photos, tmp_path / "idx", cache=EmbeddingCache(tmp_path / "cache"))[0]
    app = create_app(index.dir, model=tiny, require_token=False, rate_limit=None, clip_retrieval=True)
    body = {"embedding_input": index.image_vectors()[0].tolist(), "num_images": 150, "num_result_ids": 150}
    many = TestClient(app).post("/knn-service", json={**body, "indice_name": "idx"})
    results = many.json()
    assert many.status_code == 200 and len(results) == 150 and index.count == 200
    assert all(r.get("caption") and r.get("image_path") for r in results)  # none silently bare
    assert [("image" in r) for r in results] == [True] * 100 + [False] * 50
    assert "images=100" in many.headers["x-clipface-clamped"]
