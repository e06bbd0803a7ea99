"""What an index folder on disk hands us is untrusted: a damaged manifest or skipped-file list is one line, never a
traceback or a misleading message; the stats stay answerable and an add keeps what it can (issue 23, item 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipface.cli import app
from clipface.embed.cache import EmbeddingCache
from clipface.index.records import FaceIndexError
from clipface.index.store import FaceIndex

from .conftest import LFW_MINI

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    cache = EmbeddingCache(root / "cache")
    return FaceIndex.build(tiny, LFW_MINI / "Tony_Blair", root / "idx", cache=cache)[0].dir


def copy_of(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    return out


@pytest.mark.parametrize(
    "change, why",
    [
        ({"count": -1}, "count must be a whole number of at least 0"),
        ({"dim": "64"}, "dim must be a whole number of at least 1"),
        ({"dim": True}, "dim must be a whole number"),
        ({"kind": "ivfzz"}, "unknown kind 'ivfzz'"),
        ({"model": 7}, "model must be text"),
        ({"params": [1, 2]}, "params, faces and second_faces must be JSON objects"),
    ],
    ids=["negative-count", "text-dim", "bool-dim", "unknown-kind", "numeric-model", "list-params"],
)
def test_a_manifest_of_wrong_types_is_one_line(built: Path, tmp_path: Path, change: dict, why: str) -> None:
    index = copy_of(built, tmp_path)
    manifest = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(FaceIndexError, match=f"damaged manifest: {why}"):
        FaceIndex.load(index)
    res = runner.invoke(app, ["index", "query", "--index", str(index), "--text", "a face"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "damaged manifest" in res.output, res.output


def test_a_huge_manifest_is_not_read(built: Path, tmp_path: Path) -> None:
    index = copy_of(built, tmp_path)
    (index / "manifest.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(FaceIndexError, match="not a manifest"):
        FaceIndex.load(index)


@pytest.mark.parametrize(
    "data", [b"{not json", b'{"a": 1}', b"[1, 2]", b"\xff\xfe\x00"], ids=["json", "obj", "nums", "bytes"]
)
def test_a_damaged_skipped_list_leaves_stats_and_add_working(built: Path, tmp_path: Path, tiny, data: bytes) -> None:
    index_dir = copy_of(built, tmp_path)
    (index_dir / "skipped.json").write_bytes(data)
    index = FaceIndex.load(index_dir)
    with pytest.raises(FaceIndexError, match="damaged list of skipped files"):
        index.meta.skipped()
    stats = index.stats()
    assert stats["skipped"] is None and stats["count"] == index.count  # answerable, and says it cannot count
    extra = tmp_path / "more"
    shutil.copytree(LFW_MINI / "Colin_Powell", extra / "Colin_Powell")
    (extra / "Colin_Powell" / "broken.jpg").write_bytes(b"not a jpeg")
    update = index.add(tiny, extra, EmbeddingCache(tmp_path / "cache"))
    assert update.added == 10 and len(update.skipped) == 1
    assert (index_dir / "skipped.json.damaged").read_bytes() == data  # the damaged list is kept, not lost
    assert [e["file"].endswith("broken.jpg") for e in FaceIndex.load(index_dir).meta.skipped()] == [True]


def test_cloaks_written_into_their_own_input_are_refused(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(LFW_MINI / "Tony_Blair", photos / "Tony_Blair")
    for out in (photos, photos / "cloaks"):
        res = runner.invoke(app, ["cloak", "--in", str(photos), "--out", str(out), "-s", "test-tiny-random", "-q"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert "--out" in res.output and "is the input folder" in res.output
    assert not (photos / "cloaks").exists() and not list(photos.rglob("*.png"))


def test_a_vector_file_of_nan_is_named_not_answered_with_nothing(built: Path, tmp_path: Path) -> None:
    index_dir = copy_of(built, tmp_path)
    vectors = index_dir / "vectors.f32"
    vectors.write_bytes(b"\xff\xff\xff\x7f" * (vectors.stat().st_size // 4))  # float32 NaN throughout
    index = FaceIndex.load(index_dir)
    with pytest.raises(FaceIndexError, match="damaged \\(NaN\\)"):
        index.search_vectors(np.ones(index.manifest.dim, np.float32), k=3)
    res = runner.invoke(app, ["index", "query", "--index", str(index_dir), "--text", "a face"])
    assert res.exit_code == 1 and "damaged (NaN)" in res.output and "Traceback" not in res.output, res.output
