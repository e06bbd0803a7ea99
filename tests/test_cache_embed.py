from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import clipface
from clipface.data.dataset import FaceDataset
from clipface.embed.cache import EmbeddingCache
from clipface.embed.pipeline import embed_images, embed_texts

from .conftest import LFW_MINI, need


def test_second_run_computes_nothing(tiny, tmp_path: Path) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI), max_per_identity=2)
    cache = EmbeddingCache(tmp_path)
    first = embed_images(tiny, ds.images, cache, batch_size=8, progress=False)
    second = embed_images(tiny, ds.images, cache, batch_size=8, progress=False)
    assert (first.computed, first.cached) == (20, 0)
    assert (second.computed, second.cached) == (0, 20)
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert np.allclose(np.linalg.norm(first.embeddings, axis=1), 1.0, atol=1e-5)


def test_interrupted_run_resumes(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI), max_per_identity=2)
    cache = EmbeddingCache(tmp_path)
    real = tiny.encode_prepared
    calls = {"n": 0}

    def dies_on_third_batch(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(tiny, "encode_prepared", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        embed_images(tiny, ds.images, cache, batch_size=4, progress=False)
    monkeypatch.setattr(tiny, "encode_prepared", real)
    resumed = embed_images(tiny, ds.images, cache, batch_size=4, progress=False)
    assert (resumed.cached, resumed.computed) == (8, 12)


def test_cache_key_depends_on_weights_and_preprocessing(tmp_path: Path) -> None:
    ds = FaceDataset.from_folder("bundled:lfw-mini", max_identities=1, max_per_identity=2)
    cache = EmbeddingCache(tmp_path)
    a = clipface.create_encoder("test-tiny-random")
    b = clipface.create_encoder("test-tiny-random", seed=1)
    assert a.fingerprint == clipface.create_encoder("test-tiny-random").fingerprint
    assert a.fingerprint != b.fingerprint
    embed_images(a, ds.images, cache, progress=False)
    assert embed_images(b, ds.images, cache, progress=False).computed == 2


def test_bad_files_are_skipped_not_fatal(tiny, bad_folder: Path) -> None:
    ds = FaceDataset.from_folder(bad_folder)
    res = embed_images(tiny, ds.images, progress=False)
    assert len(res.images) == 6 and res.embeddings.shape == (6, tiny.dim)
    assert [Path(s.path).name for s in res.skipped] == ["truncated.jpg"]


def test_text_embeddings_are_cached(tiny, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    e1, n1 = embed_texts(tiny, ["a photo of Ada Lovelace.", "a photo of Alan Turing."], cache)
    e2, n2 = embed_texts(tiny, ["a photo of Ada Lovelace.", "a photo of Alan Turing."], cache)
    assert (n1, n2) == (2, 0) and e1.shape == (2, tiny.dim)
    np.testing.assert_array_equal(e1, e2)


def test_flip_adds_the_mirrored_crop_and_is_cached_apart(tmp_path: Path) -> None:
    ds = FaceDataset.from_folder("bundled:lfw-mini", max_identities=2, max_per_identity=2)
    cache = EmbeddingCache(tmp_path)
    enc = clipface.create_encoder("test-tiny-random")
    plain = embed_images(enc, ds.images, cache, progress=False)
    from PIL import Image

    crops = np.stack([enc.prepare(Image.open(im.path)) for im in plain.images])
    mirrored = enc.encode_prepared(crops[:, :, ::-1].copy())
    enc.flip = True
    assert enc.preprocess_id.endswith("|flipsum") and enc.info()["flip"] is True
    flipped = embed_images(enc, ds.images, cache, progress=False)
    assert flipped.computed == 4  # not served from the unflipped entries
    expected = plain.embeddings + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flipped.embeddings, expected, atol=1e-5)
    assert not np.allclose(flipped.embeddings, plain.embeddings, atol=1e-3)
    # a mirror-symmetric crop embeds the same with and without the flip
    half = crops[:1, :, : enc.image_size // 2]
    sym = np.ascontiguousarray(np.concatenate([half, half[:, :, ::-1]], axis=2))
    assert sym.shape == crops[:1].shape and np.array_equal(sym, sym[:, :, ::-1])
    np.testing.assert_allclose(enc.embed_prepared(sym), enc.encode_prepared(sym), atol=1e-5)
