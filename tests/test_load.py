"""benchmarks/load.py at CI scale: a real server on loopback answers every search and every pixel bomb, under 2 GB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytest.importorskip("faiss")
pytest.importorskip("fastapi")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_load_quick_stays_bounded(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load.py"), "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    doc = json.loads((tmp_path / "load_quick.json").read_text()) if (tmp_path / "load_quick.json").exists() else {}
    assert run.returncode == 0, run.stderr[-4000:]
    rounds = {r["round"]: r for r in doc["rounds"]}
    assert rounds["search"]["statuses"] == {"200": 60} and rounds["search-after"]["statuses"] == {"200": 60}
    for name, n in (("pixel-bomb", 16), ("pixel-bomb-rgba", 6), ("rgba-bombs-with-searches", 6)):
        bombs = rounds[name]
        assert bombs["by_kind"]["bomb"]["requests"] == n and bombs["errors"] == 0
        assert set(bombs["statuses"]) <= {"200", "413"}
    mixed = rounds["rgba-bombs-with-searches"]
    assert mixed["errors"] == 0 and mixed["by_kind"]["search"]["requests"] == 6
    # ordinary searches do not queue behind the bombs being decoded
    assert mixed["by_kind"]["search"]["latency_p50_ms"] < mixed["by_kind"]["bomb"]["latency_p50_ms"] / 2
    assert doc["vm_hwm_mb"] < 2048 and all(r["rss_peak_mb"] < 2048 for r in doc["rounds"])
    assert doc["passed"] and doc["machine"]["logical_cpus"]
    assert "Server load test" in (tmp_path / "load_quick.md").read_text()
