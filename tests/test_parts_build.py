"""Issue 24, item 2: a memory budget chooses the codes (:mod:`clipface.index.ann.budget`), and an inverted file's
codes are trained once, added in parts by workers and merged, on disk where FAISS can (:mod:`clipface.index.parts`).

The oracle of the merged codes is FAISS itself: the same trained index with every vector added in one call must
give the same ids and scores. A build on a local Ray cluster (``index build --ray local``) is run once."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipface.errors import UsageError
from clipface.index.ann.budget import estimate_bytes, fit_budget, parse_size, show_size
from clipface.index.ann.faiss_backend import choose_kind, default_params
from clipface.index.parts import PARTS, PartsBuild, run_here
from clipface.index.store import FaceIndex
from clipface.index.vectors import ANN, IVFDATA, VectorStore

from .conftest import LFW_MINI

faiss = pytest.importorskip("faiss")
CLI = [sys.executable, "-m", "clipface"]


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: neighbours that an inverted file can find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the budget ----------------------------------------------------------------------------------
def test_sizes_parse_in_powers_of_1024_and_anything_else_is_one_line_naming_the_flag() -> None:
    assert parse_size("16G") == 16 << 30 and parse_size("500M") == 500 << 20 and parse_size("1.5k") == 1536
    assert parse_size("2GiB") == 2 << 30 and parse_size("1000") == 1000
    for bad in ("abc", "0", "-1G", "16Q", ""):
        with pytest.raises(UsageError) as err:
            parse_size(bad)
        assert err.value.arg == "memory_budget" and "e.g. 16G" in err.value.problem


def test_a_budget_that_holds_autos_choice_gets_it() -> None:
    fit = fit_budget(1_000_000, 512, parse_size("16G"))
    assert fit.kind == choose_kind(1_000_000) == "ivfpqfs"
    assert {k: v for k, v in fit.params.items() if k != "memory"} == default_params("ivfpqfs", 1_000_000, 512)
    assert fit.params["memory"] == {"budget": 16 << 30, "estimate": fit.estimate}
    # 32 bytes of codes and 8 of id a vector, 4,096 centroids of 512 floats, the codebooks, fast-scan's padding
    assert fit.estimate == 1_000_000 * 40 + 4096 * 512 * 4 + 16 * 512 * 4 + 4096 * 32 * 32
    small = fit_budget(10_000, 512, parse_size("1G"))
    assert small.kind == "flat" and small.estimate == 10_000 * 512 * 4  # exact search reads every vector


def test_a_tight_budget_gets_smaller_codes_that_fit_and_more_re_ranking() -> None:
    default = default_params("ivfpqfs", 1_000_000, 512)
    fit = fit_budget(1_000_000, 512, parse_size("30M"))
    assert fit.kind == "ivfpqfs" and fit.estimate <= 30 << 20
    assert fit.params["factory"] == "IVF4096,PQ16x4fs" and default["factory"] == "IVF4096,PQ64x4fs"
    assert fit.params["k_factor"] > default["k_factor"]
    assert estimate_bytes("ivfpqfs", {**fit.params, "factory": "IVF4096,PQ32x4fs"}, 1_000_000, 512) > 30 << 20
    tiny = fit_budget(40_000, 512, parse_size("5M"))  # flat would need 78 MiB: an inverted file instead
    assert tiny.kind == "ivfpqfs" and tiny.estimate <= 5 << 20


def test_a_budget_too_small_for_the_smallest_codes_is_refused_with_the_minimum() -> None:
    smallest = {**default_params("ivfpqfs", 1_000_000, 512), "factory": "IVF4096,PQ8x4fs"}
    need = show_size(estimate_bytes("ivfpqfs", smallest, 1_000_000, 512))
    with pytest.raises(UsageError) as err:
        fit_budget(1_000_000, 512, parse_size("10M"))
    assert err.value.arg == "memory_budget" and f"(IVF4096,PQ8x4fs) need {need} in RAM" in err.value.problem
    assert "\n" not in str(err.value)


def test_index_build_refuses_a_budget_before_any_work_and_records_one_that_fits(tmp_path: Path) -> None:
    base = [*CLI, "index", "build", "-m", "test-tiny-random", "--images", str(LFW_MINI), "--index"]
    for budget, why in (("1K", "too small (1.0 KiB) for 100 vectors of 64 dimensions"), ("lots", "not a size")):
        res = subprocess.run([*base, str(tmp_path / "x"), "--memory-budget", budget], capture_output=True, text=True)
        assert res.returncode == 2 and "--memory-budget" in res.stderr and why in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
    res = subprocess.run([*base, str(tmp_path / "y"), "--memory-budget", "16G"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    params = FaceIndex.load(tmp_path / "y").manifest.params
    assert params["memory"] == {"budget": 16 << 30, "estimate": 100 * 64 * 4}


# -- the parts and their merge -------------------------------------------------------------------
def one_call_oracle(folder: Path, trained: Path, x: np.ndarray, nprobe: int, q: np.ndarray) -> tuple:
    """FAISS's own answer: the same trained index, every vector added at once."""
    ref = faiss.read_index(str(trained))
    ref.add(x)
    faiss.extract_index_ivf(ref).nprobe = nprobe
    return ref.search(q, 10)


@pytest.mark.parametrize("kind, on_disk", [("ivfsq8", True), ("ivfpq", True)])
def test_parts_merged_answer_as_faiss_adding_everything_at_once_and_the_moved_folder_reopens(
    tmp_path: Path, kind: str, on_disk: bool
) -> None:
    n, dim = 6_000, 32
    x = clustered(n, dim)
    folder = tmp_path / "index"
    folder.mkdir()
    params = default_params(kind, n, dim)
    parts = PartsBuild(run_here, workers=3)
    store = VectorStore.create(folder, kind, dim, params, x, parts)
    store.append(x)
    os.replace(store.write_ann(), folder / ANN)
    assert parts.report == {
        "count": 3,
        "merged": "on disk" if on_disk else "in memory",
        "written": 3,
        "reused": 0,
        "nodes": 0,
    }
    assert (folder / IVFDATA).is_file() == on_disk and bool(params.get("ivfdata")) == on_disk
    q = x[:200]
    want_s, want_i = one_call_oracle(folder, parts.trained, x, 8, q)
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)  # FAISS wrote the old path of ann.ivfdata into ann.faiss
    opened = VectorStore.open(moved, dim, kind, params, n)
    assert opened.ann.ntotal == n
    faiss.extract_index_ivf(opened.ann).nprobe = 8
    got_s, got_i = opened.ann.search(q, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)
    if on_disk:
        with pytest.raises(Exception, match="merged on disk"):
            opened.check_appendable()
    else:
        opened.check_appendable()


def test_a_rerun_reuses_the_parts_and_changed_rows_are_added_again(tmp_path: Path, monkeypatch) -> None:
    from clipface.index.ann import faiss_backend

    monkeypatch.setattr(faiss_backend, "TRAIN_MIN", 1_000)  # a training sample smaller than the index
    monkeypatch.setattr(faiss_backend, "TRAIN_PER_LIST", 1)
    n, dim = 3_000, 32
    x = clustered(n, dim, seed=1)
    params = default_params("ivfsq8", n, dim)
    unsampled = max(set(range(n // 2, n)) - set(faiss_backend.train_sample(np.arange(n)[:, None], params)[:, 0]))

    def build() -> PartsBuild:
        parts = PartsBuild(run_here, workers=2)
        VectorStore.create(tmp_path, "ivfsq8", dim, dict(params), x, parts).append(x)
        return parts

    first = build()
    assert (first.report["written"], first.report["reused"]) == (2, 0)
    again = build()
    assert (again.report["written"], again.report["reused"]) == (0, 2) and again.trained == first.trained
    x[unsampled] = x[0]  # a row of the second part, not in the training sample: that part is added again
    third = build()
    assert (third.report["written"], third.report["reused"]) == (1, 1)
    assert len(list((tmp_path / PARTS).glob("part-*"))) == 2  # the stale part removed


# -- on a Ray cluster ----------------------------------------------------------------------------
def test_a_ray_build_adds_the_codes_on_workers_merges_them_on_disk_and_refuses_index_add(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    images = tmp_path / "people"
    shutil.copytree(LFW_MINI, images)
    index = tmp_path / "on-ray"
    cmd = [*CLI, "index", "build", "-m", "test-tiny-random", "--images", str(images), "--index", str(index)]
    cmd += ["--ray", "local", "--ray-shard-size", "50", "--kind", "ivfpq", "--memory-budget", "1M"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "codes added on Ray in 2 parts (2 written by this run on 1 node(s), 0 reused), merged on disk" in out
    moved = tmp_path / "moved"
    shutil.move(index, moved)
    built = FaceIndex.load(moved)
    params = built.manifest.params
    assert built.count == 100 and params["ivfdata"] == IVFDATA and params["memory"]["budget"] == 1 << 20
    assert "tuned" in params  # nprobe measured on the merged codes
    x = np.asarray(built.image_vectors())
    (trained,) = (moved / PARTS).glob("trained-*.faiss")
    want_s, want_i = one_call_oracle(moved, trained, x, int(params["nprobe"]), x[:20])
    got_s, got_i = built._store.ann.search(x[:20], 10)
    np.testing.assert_array_equal(got_i, want_i)
    add = [*CLI, "index", "add", "--index", str(moved), "--images", str(LFW_MINI / "Tony_Blair")]
    res = subprocess.run(add, capture_output=True, text=True)
    assert res.returncode == 1 and "merged on disk (ann.ivfdata)" in res.stderr and str(moved) in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert FaceIndex.load(moved).count == 100


def test_fast_scan_codes_are_not_built_in_parts(tmp_path: Path) -> None:
    """``merge_from`` of fast-scan parts corrupted the heap in FAISS 1.15.1: the driver adds them, in one process."""
    x = clustered(2_000, 32)
    parts = PartsBuild(run_here, workers=2)
    store = VectorStore.create(tmp_path, "ivfpqfs", 32, default_params("ivfpqfs", 2_000, 32), x, parts)
    store.append(x)
    assert store.ann.ntotal == 2_000 and parts.report == {} and not (tmp_path / PARTS).exists()
