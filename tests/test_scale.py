"""Scale-out on Ray: a local Ray cluster embeds exactly what the single-process path embeds, into mergeable shards."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipface[ray]')")

import clipface  # noqa: E402
from clipface.data.dataset import FaceDataset  # noqa: E402
from clipface.embed.cache import NullCache  # noqa: E402
from clipface.embed.pipeline import embed_images  # noqa: E402
from clipface.index.ray import embed_with_ray  # noqa: E402
from clipface.index.records import EncoderMismatchError  # noqa: E402
from clipface.index.shards import read_shards  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402

from .conftest import LFW_MINI, need  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_ray_shards_match_single_process_and_merge(local_ray: None, tiny, tmp_path: Path) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI), max_identities=3, max_per_identity=3)
    shards = tmp_path / "shards"
    (shards.parent / "extra").mkdir()
    bad = shards.parent / "extra" / "broken.jpg"
    bad.write_bytes(b"not an image")
    run = embed_with_ray("test-tiny-random", ds, shards, num_workers=2, batch_size=4)
    assert run.images == 9 and len(run.shards) == 3

    merged = read_shards(shards)
    # Same batches as the Ray run (BLAS results depend on the batch shape in the last bits): identical vectors.
    local = embed_images(tiny, ds.images, NullCache(), batch_size=4, progress=False)
    expect = {str(im.path.resolve()): v for im, v in zip(local.images, local.embeddings)}
    assert sorted(expect) == [r.path for r in merged.records]
    np.testing.assert_array_equal(merged.vectors, np.stack([expect[r.path] for r in merged.records]))
    assert merged.encoder_id.fingerprint == tiny.fingerprint and {r.identity for r in merged.records} == set(
        ds.identities
    )

    index, update = FaceIndex.build_from_shards(shards, tmp_path / "idx")
    assert (update.added, index.count, index.kind) == (9, 9, "flat")
    hit = index.search_vectors(local.embeddings[0], k=1)[0][0]
    assert hit.path == str(local.images[0].path.resolve()) and hit.score == pytest.approx(1.0, abs=1e-5)

    more = embed_with_ray(
        "test-tiny-random", [bad, *(im.path for im in ds.images[:2])], tmp_path / "more", num_workers=1
    )
    update = index.add_shards(tmp_path / "more")
    assert (update.added, update.duplicates, [s.reason for s in update.skipped]) == (
        0,
        2,
        ["not an image (unrecognised file format)"],
    )
    assert more.images == 3 and FaceIndex.load(tmp_path / "idx").count == 9

    other, _ = FaceIndex.build(
        clipface.create_encoder("test-tiny-random", seed=1), [ds.images[0].path], tmp_path / "other", cache=NullCache()
    )
    with pytest.raises(EncoderMismatchError, match="shards in"):
        other.add_shards(shards)
