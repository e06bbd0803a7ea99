"""`clipface index build --ray ADDRESS` on a real multi-node Ray cluster: a head and a worker node started as separate
processes (``ray start --head``, ``ray start --address``), one CPU each, so the two embedding actors run on two nodes;
the driver is the command, in a process of its own, as a user runs it (issue 24, items 1 and 4)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from clipface.embed.options import RunOptions
from clipface.index.store import FaceIndex
from clipface.jobs import build_index

from .conftest import LFW_MINI
from .live_server import free_port

pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipface[ray]')")
RAY = Path(sys.executable).with_name("ray")
NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A two-node cluster with token authentication (Ray's default for `ray start`), its own token."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()

    def ray(*args: str) -> None:
        res = subprocess.run([str(RAY), *args], env=env, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    try:
        ray("start", "--head", f"--port={port}", "--include-dashboard=false", *NODE)
        ray("start", f"--address=127.0.0.1:{port}", *NODE)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=180)


def build_on(cluster: tuple[str, dict[str, str]], images: Path, index: Path, *more: str) -> str:
    address, env = cluster
    cmd = [sys.executable, "-m", "clipface", "index", "build", "-m", "test-tiny-random", "--images", str(images)]
    cmd += ["--index", str(index), "--ray", address, "--ray-workers", "2", "--ray-shard-size", "10", *more]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def vectors_by_sha(index: FaceIndex) -> dict[str, np.ndarray]:
    images, vectors = index.meta.images(range(index.count)), index.image_vectors()
    return {im.sha256: vectors[i] for i, im in images.items()}


def test_a_build_on_two_nodes_equals_a_local_build_and_a_rerun_reuses_its_shards(cluster, tmp_path: Path) -> None:
    images = tmp_path / "people"
    shutil.copytree(LFW_MINI, images)
    out = build_on(cluster, images, tmp_path / "on-ray")
    assert "added 100 images (100 embeddings computed, 0 cached)" in out, out
    assert "10 shards" in out and "10 written by this run on 2 node(s), 0 reused" in out, out
    local, _ = build_index("test-tiny-random", str(images), tmp_path / "local", RunOptions(progress=False))
    on_ray = FaceIndex.load(tmp_path / "on-ray")
    a, b = vectors_by_sha(on_ray), vectors_by_sha(local)
    assert a.keys() == b.keys() and len(a) == 100
    for sha in a:  # the same pipeline on every node: the same vectors, up to the order of BLAS sums in another batch
        np.testing.assert_allclose(a[sha], b[sha], rtol=0, atol=2e-6)
    queries = np.stack([b[sha] for sha in sorted(b)[:10]])
    top = [[(h.sha256, h.identity) for h in hits] for hits in on_ray.search_vectors(queries, k=10)]
    assert top == [[(h.sha256, h.identity) for h in hits] for hits in local.search_vectors(queries, k=10)]
    again = build_on(cluster, images, tmp_path / "on-ray", "--overwrite")
    assert "0 written by this run on 0 node(s), 10 reused" in again and "(0 embeddings computed, 100 cached)" in again


def test_an_existing_index_is_refused_before_the_cluster_works(cluster, tmp_path: Path) -> None:
    address, env = cluster
    build_index("test-tiny-random", str(LFW_MINI / "Tony_Blair"), tmp_path / "x", RunOptions(progress=False))
    cmd = [sys.executable, "-m", "clipface", "index", "build", "-m", "test-tiny-random", "--images", str(LFW_MINI)]
    res = subprocess.run(
        [*cmd, "--index", str(tmp_path / "x"), "--ray", address], env=env, capture_output=True, text=True
    )
    assert res.returncode == 2 and "already holds an index" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.shards").exists()


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "clipface", "index", "build", "-m", "test-tiny-random", "--images", str(LFW_MINI)]
    for address, why in (("127.0.0.1:9", "no Ray cluster answers there"), ("nonsense", "host:port")):
        res = subprocess.run([*cmd, "--index", str(tmp_path / "y"), "--ray", address], capture_output=True, text=True)
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, res.stderr
