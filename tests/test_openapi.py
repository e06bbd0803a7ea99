"""The OpenAPI schema matches the server: a bounded schemathesis run against ``clipface serve`` on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.server.app import create_app  # noqa: E402

from .conftest import LFW_MINI, REPO, need  # noqa: E402
from .live_server import serve  # noqa: E402

TOKEN = "schema-test-token"
#: Test cases per operation and phase: enough to reach every status, few enough for a quick test.
MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def index_dir(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = EmbeddingCache(tmp_path_factory.mktemp("openapi-cache"))
    return FaceIndex.build(tiny, need(LFW_MINI), tmp_path_factory.mktemp("openapi") / "idx", cache=cache)[0].dir


def test_schema_declares_the_limits_and_every_status(index_dir: Path, tiny) -> None:
    schema = TestClient(create_app(index_dir, model=tiny, require_token=False, max_k=7)).get("/openapi.json").json()
    text = schema["components"]["schemas"]["TextQuery"]["properties"]["k"]
    form = schema["components"]["schemas"]["Body_search_image_api_search_image_post"]["properties"]["k"]
    assert (text["minimum"], text["maximum"]) == (1, 7) and (form["minimum"], form["maximum"]) == (1, 7)
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            declared = set(operation["responses"])
            assert {"200", "400", "401", "404", "413", "422", "429", "500"} <= declared, (path, method, declared)
    photo = schema["paths"]["/api/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "image/jpeg" in photo["encoding"]["file"]["contentType"]


def test_schemathesis_finds_no_mismatch(index_dir: Path, tmp_path: Path) -> None:
    """Every phase (coverage, fuzzing, stateful) and the default checks, on loopback, seeded."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with serve(index_dir, "--rate-limit", "0", token=TOKEN) as (port, _):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(REPO / "tests" / "schemathesis.toml"),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "1",
                "--seed",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Selected: 6/6" in run.stdout and " passed" in run.stdout
