"""The face search index: build, add, load (mmap), kinds, encoder checks, bad files, queries, audit, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("faiss")

import clipface  # noqa: E402
from clipface.audit.identification import evaluate_index_identification  # noqa: E402
from clipface.audit.person import audit_person  # noqa: E402
from clipface.cli import app  # noqa: E402
from clipface.data.dataset import FaceDataset  # noqa: E402
from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.errors import NoFaceError  # noqa: E402
from clipface.index.ann.faiss_backend import choose_kind  # noqa: E402
from clipface.index.records import EncoderMismatchError, FaceIndexError, QueryError  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.models.base import resize_center_crop  # noqa: E402

from .conftest import LFW_MINI, need  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    """One embedding cache for the module: each image is embedded once, however many indexes are built."""
    return EmbeddingCache(tmp_path_factory.mktemp("index-cache"))


@pytest.fixture(scope="module")
def built(tiny, cache, tmp_path_factory: pytest.TempPathFactory) -> FaceIndex:
    index, update = FaceIndex.build(tiny, need(LFW_MINI), tmp_path_factory.mktemp("idx") / "lfw-mini", cache=cache)
    assert (update.added, update.duplicates, update.skipped) == (100, 0, [])
    return index


def test_build_writes_manifest_metadata_and_answers_queries(built: FaceIndex, tiny) -> None:
    manifest = json.loads((built.dir / "manifest.json").read_text())
    assert manifest["model"] == "test-tiny-random" and manifest["fingerprint"] == tiny.fingerprint
    assert (manifest["preprocess_id"], manifest["dim"], manifest["kind"], manifest["count"]) == (
        tiny.preprocess_id,
        64,
        "flat",
        100,
    )
    assert built.stats()["identities"] == 10
    probe = LFW_MINI / "Tony_Blair" / "Tony_Blair_0003.jpg"
    hits = built.query_image(tiny, Image.open(probe), k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].path == str(probe.resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert (hits[0].identity, hits[0].name, hits[0].relpath) == (
        "Tony_Blair",
        "Tony Blair",
        "Tony_Blair/Tony_Blair_0003.jpg",
    )
    assert (hits[0].width, hits[0].height) == (250, 250) and len(hits[0].sha256) == 64
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    text = built.query_text(tiny, "a photo of Tony Blair.", k=7)
    assert len(text) == 7 and len({h.id for h in text}) == 7


def test_exclude_over_fetches_to_return_k(built: FaceIndex, tiny) -> None:
    query = tiny.encode_images([Image.open(LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg")])
    hits = built.search_vectors(query, k=20, exclude=lambda im: im.identity == "Tony_Blair")[0]
    assert len(hits) == 20 and all(h.identity != "Tony_Blair" for h in hits)
    everything = built.search_vectors(query, k=100, exclude=lambda im: im.identity == "Tony_Blair")[0]
    assert len(everything) == 90


def test_flat_folder_has_no_identity_and_bad_files_are_skipped(tiny, cache, bad_folder: Path, tmp_path: Path) -> None:
    shutil.copy(bad_folder / "Bob_Jones" / "Bob_Jones_0000.jpg", bad_folder / "loose.jpg")
    index, update = FaceIndex.build(tiny, bad_folder, tmp_path / "idx", cache=cache)
    reasons = {Path(s.path).name: s.reason for s in update.skipped}
    assert set(reasons) == {"truncated.jpg", "notes.jpg", "huge.png"}
    assert (
        "truncated" in reasons["truncated.jpg"]
        and "not an image" in reasons["notes.jpg"]
        and "too large" in reasons["huge.png"]
    )
    assert {Path(s["file"]).name for s in json.loads((tmp_path / "idx" / "skipped.json").read_text())} == set(reasons)
    # loose.jpg has the bytes of Bob_Jones_0000.jpg: indexed once, under the first path met.
    assert (index.count, update.duplicates) == (6, 1)
    flat_folder = tmp_path / "flat"
    flat_folder.mkdir()
    shutil.copy(bad_folder / "Alice_Smith" / "Alice_Smith_0001.jpg", flat_folder / "a.jpg")
    flat, _ = FaceIndex.build(tiny, flat_folder, tmp_path / "flat-idx", cache=cache)
    (hit,) = flat.search_vectors(np.ones(64, np.float32), k=3)[0]
    assert (hit.identity, hit.name, hit.relpath) == (None, None, "a.jpg")


def test_add_appends_new_images_only_and_reload_keeps_them(tiny, cache, tmp_path: Path) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI))
    first = replace(ds, images=[im for im in ds.images if im.identity < "G"])
    index, update = FaceIndex.build(tiny, first, tmp_path / "idx", cache=cache)
    n_first = update.added
    assert 0 < n_first < 100
    more = index.add(tiny, LFW_MINI, cache=cache)
    assert (more.added, more.duplicates, more.computed + more.cached) == (100 - n_first, n_first, 100 - n_first)
    again = index.add(tiny, LFW_MINI, cache=cache)
    assert (again.added, again.duplicates, again.computed, again.cached) == (0, 100, 0, 0)  # nothing even looked up
    loaded = FaceIndex.load(tmp_path / "idx")
    assert loaded.count == 100 and sorted(loaded.meta.images(range(100))) == list(range(100))
    assert loaded.search_vectors(np.ones(64, np.float32), k=3)[0][0].id in range(100)
    with pytest.raises(FaceIndexError, match="already holds an index"):
        FaceIndex.build(tiny, first, tmp_path / "idx", cache=cache)


def test_load_memory_maps_and_can_still_add(built: FaceIndex, tiny, cache, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built.dir, copy)
    mapped = FaceIndex.load(copy, mmap=True)
    assert isinstance(mapped._store.vectors, np.memmap) and not (copy / "ann.faiss").exists()
    query = np.ones((2, 64), np.float32)
    expect = [[h.id for h in hits] for hits in built.search_vectors(query, k=5)]
    assert [[h.id for h in hits] for hits in mapped.search_vectors(query, k=5)] == expect
    extra = tmp_path / "extra" / "Someone_New"
    extra.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(extra / "x.jpg")
    with open(copy / "vectors.f32", "ab") as fh:  # rows of a write interrupted before its commit
        fh.write(b"\x00" * 64 * 4 * 3)
    assert mapped.add(tiny, extra.parent, cache=cache).added == 1
    assert FaceIndex.load(copy).count == 101 and (copy / "vectors.f32").stat().st_size == 101 * 64 * 4
    (copy / "vectors.f32").write_bytes(b"\x00" * 64 * 4 * 100)  # cut short: refused in one line
    with pytest.raises(FaceIndexError, match="vectors.f32: not a readable vector file"):
        FaceIndex.load(copy)


def test_kind_is_chosen_by_size_and_can_be_forced(tiny, cache, tmp_path: Path, monkeypatch) -> None:
    import faiss

    assert (choose_kind(50_000), choose_kind(50_001), choose_kind(10, "hnsw")) == ("flat", "ivfpqfs", "hnsw")
    with pytest.raises(FaceIndexError, match="unknown index kind"):
        choose_kind(10, "annoy")
    auto, _ = FaceIndex.build(tiny, need(LFW_MINI), tmp_path / "auto", cache=cache, flat_max=50)
    forced, _ = FaceIndex.build(tiny, LFW_MINI, tmp_path / "flat", kind="flat", cache=cache, flat_max=50)
    built = {k: FaceIndex.build(tiny, LFW_MINI, tmp_path / k, kind=k, cache=cache)[0] for k in ("hnsw", "ivfsq8")}
    assert (auto.kind, forced.kind, built["hnsw"].kind) == ("ivfpqfs", "flat", "hnsw")
    assert {"factory", "nlist", "nprobe", "k_factor", "tuned"} <= set(auto.manifest.params)  # nprobe measured
    assert "x4fs" in auto.manifest.params["factory"]
    query = tiny.encode_images([Image.open(LFW_MINI / "Colin_Powell" / "Colin_Powell_0001.jpg")])
    exact = [h.id for h in forced.search_vectors(query, k=10)[0]]
    flags: list[int] = []
    real = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path, *f: (flags.append(f[0] if f else 0), real(path, *f))[1])
    for kind in ("auto", "hnsw", "ivfsq8"):
        loaded = FaceIndex.load(tmp_path / kind)
        hits = loaded.search_vectors(query, k=10)[0]
        assert len(hits) == 10 and loaded.kind == ("ivfpqfs" if kind == "auto" else kind)
        assert hits[0].id == exact[0] and len(set(h.id for h in hits) & set(exact)) >= 8  # re-ranked exactly
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert flags == [getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)] * 3  # the codes are memory-mapped
    assert built["hnsw"].search_vectors(query, k=1)[0][0].relpath == "Colin_Powell/Colin_Powell_0001.jpg"
    few = FaceDataset.from_folder(LFW_MINI, max_identities=2)
    with pytest.raises(FaceIndexError, match="at least 64 images"):
        FaceIndex.build(tiny, few, tmp_path / "few", kind="ivfpq", cache=cache)


def test_first_format_folders_are_read_and_rewritten_on_the_next_add(built: FaceIndex, tiny, cache, tmp_path) -> None:
    import faiss

    vectors = np.asarray(built._store.vectors)
    query = vectors[:3] + 0.01
    expect = [[h.id for h in hits] for hits in built.search_vectors(query, k=5)]
    for kind in ("flat", "ivfpq", "hnsw"):
        old = tmp_path / kind
        shutil.copytree(built.dir, old)
        (old / "vectors.f32").unlink()
        if kind == "flat":
            legacy = faiss.IndexFlatIP(64)
        elif kind == "ivfpq":
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(64), 64, 4, 8, 4, faiss.METRIC_INNER_PRODUCT)
            ivf.train(vectors)
            legacy = faiss.IndexRefineFlat(ivf)
        else:
            legacy = faiss.IndexHNSWFlat(64, 8, faiss.METRIC_INNER_PRODUCT)
        legacy.add(vectors)
        faiss.write_index(legacy, str(old / "vectors.faiss"))
        manifest = json.loads((old / "manifest.json").read_text())
        params = {"nlist": 4, "m": 8, "nbits": 4, "nprobe": 4, "k_factor": 4} if kind == "ivfpq" else {}
        manifest.update(format=1, kind=kind, params=params)
        (old / "manifest.json").write_text(json.dumps(manifest))
        index = FaceIndex.load(old)
        got = [[h.id for h in hits] for hits in index.search_vectors(query, k=5)]
        assert got[0][0] == expect[0][0] and (kind != "flat" or got == expect)
        extra = tmp_path / f"extra-{kind}" / "Someone_New"
        extra.mkdir(parents=True)
        Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(extra / "y.jpg")
        assert index.add(tiny, extra.parent, cache=cache).added == 1
        assert not (old / "vectors.faiss").exists() and (old / "vectors.f32").stat().st_size == 101 * 64 * 4
        again = FaceIndex.load(old)
        assert json.loads((old / "manifest.json").read_text())["format"] == 2 and again.count == 101
        assert [h.id for h in again.search_vectors(query, k=5)[0]][0] == expect[0][0]


def test_other_weights_or_preparation_are_refused(built: FaceIndex, tiny) -> None:
    other = clipface.create_encoder("test-tiny-random", seed=1)
    with pytest.raises(EncoderMismatchError) as err:
        built.query_text(other, "a photo of Tony Blair.")
    message = str(err.value)
    assert "\n" not in message and tiny.fingerprint[:12] in message and other.fingerprint[:12] in message

    class Aligner:
        id = "some-other-crop"

        def crop(self, image: Image.Image, size: int) -> np.ndarray:
            return resize_center_crop(image, size)

    cropped = clipface.create_encoder("test-tiny-random")
    cropped.aligner = Aligner()
    with pytest.raises(EncoderMismatchError, match="some-other-crop"):
        built.query_image(cropped, Image.open(LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg"))
    with pytest.raises(EncoderMismatchError):
        built.add(other, LFW_MINI)


def test_text_needs_a_text_tower_and_image_queries_need_a_face(
    built: FaceIndex, tiny, cache, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(tiny, "has_text", False)
    with pytest.raises(QueryError, match="no text tower"):
        built.query_text(tiny, "a photo of Tony Blair.")
    monkeypatch.undo()

    class FaceOrNothing:
        id = "test-blank-means-no-face"

        def crop(self, image: Image.Image, size: int) -> np.ndarray:
            if np.asarray(image.convert("L")).std() == 0:
                raise NoFaceError("<query>", "no face found")
            return resize_center_crop(image.convert("RGB"), size)

    encoder = clipface.create_encoder("test-tiny-random")
    encoder.aligner = FaceOrNothing()
    index, _ = FaceIndex.build(
        encoder, FaceDataset.from_folder(need(LFW_MINI), max_identities=2), tmp_path / "i", cache=cache
    )
    with pytest.raises(QueryError, match="no face found in the query image"):
        index.query_image(encoder, Image.new("RGB", (120, 120), "gray"))


def test_identification_and_audit(built: FaceIndex, tiny, cache, tmp_path: Path) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI))
    probes = [imgs[0] for imgs in ds.by_identity().values()]
    gallery = replace(ds, images=[im for im in ds.images if im not in probes])
    index, _ = FaceIndex.build(tiny, gallery, tmp_path / "gallery", cache=cache)
    result = evaluate_index_identification(index, probes, tiny, k=5)
    assert result.n_probes == 10 and {r["identity"] for r in result.per_probe} == set(ds.identities)
    # against scikit-learn's brute-force cosine neighbours of the same embeddings (probes not in the index)
    from sklearn.neighbors import NearestNeighbors

    gallery_emb = tiny.encode_images([Image.open(im.path) for im in gallery.images])
    probe_emb = tiny.encode_images([Image.open(im.path) for im in probes])
    _, nn = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(gallery_emb).kneighbors(probe_emb)
    who = np.array([im.identity for im in gallery.images])[nn]
    truth = np.array([im.identity for im in probes])
    assert result.rank1 == pytest.approx(np.mean(who[:, 0] == truth))
    assert result.topk == pytest.approx(np.mean((who == truth[:, None]).any(1)))
    assert [r["top_path"] for r in result.per_probe] == [str(Path(gallery.images[i].path).resolve()) for i in nn[:, 0]]
    hits = index.query_image(tiny, Image.open(probes[0].path), k=5)  # a photo the index does not hold
    assert str(Path(probes[0].path).resolve()) not in {h.path for h in hits}
    assert [h.score for h in hits] == pytest.approx(list(np.sort(gallery_emb @ probe_emb[0])[::-1][:5]), abs=1e-5)
    # Probes that are in the index do not match themselves.
    again = evaluate_index_identification(built, probes, tiny, k=1)
    assert all(r["top_path"] != str(Path(r["probe"]).resolve()) for r in again.per_probe)

    photo = audit_person(
        built, tiny, "tony_blair", image=Image.open(LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg"), k=10
    )
    assert (photo.name, photo.query, photo.k, photo.in_index, photo.chance) == ("Tony Blair", "photo", 10, 10, 0.1)
    assert photo.matches >= 1 and photo.precision == photo.matches / 10
    assert photo.verdict.endswith(f"{photo.matches} of the top 10 results are them")
    assert photo.identifies == (photo.matches >= 5)
    text = audit_person(built, tiny, "George W Bush", k=4)
    assert text.query == "a photo of George W Bush." and text.k == 4
    nobody = audit_person(built, tiny, "Ada Lovelace", k=3)
    assert nobody.identifies is None and nobody.verdict == "cannot tell: the index holds no image of Ada Lovelace"
    with pytest.raises(QueryError):
        audit_person(built, tiny, "  ")


def test_cli_build_add_query(tmp_path: Path) -> None:
    runner = CliRunner()
    index = tmp_path / "idx"
    few = tmp_path / "few"
    shutil.copytree(need(LFW_MINI) / "Tony_Blair", few / "Tony_Blair")
    build = runner.invoke(
        app, ["index", "build", "--model", "test-tiny-random", "--images", str(few), "--index", str(index), "-q"]
    )
    assert build.exit_code == 0, build.output
    assert "added 10 images" in build.output and "flat index" in build.output
    add = runner.invoke(app, ["index", "add", "--index", str(index), "--images", str(few), "-q"])
    assert add.exit_code == 0 and "added 0 images" in add.output and "10 already indexed" in add.output
    query = runner.invoke(
        app,
        [
            "index",
            "query",
            "--index",
            str(index),
            "--image",
            str(few / "Tony_Blair" / "Tony_Blair_0002.jpg"),
            "-k",
            "3",
            "--json",
        ],
    )
    assert query.exit_code == 0, query.output
    hits = json.loads(query.stdout)
    assert len(hits) == 3 and hits[0]["relpath"] == "Tony_Blair/Tony_Blair_0002.jpg" and hits[0]["name"] == "Tony Blair"
    text = runner.invoke(app, ["index", "query", "--index", str(index), "--text", "a photo of Tony Blair.", "-k", "2"])
    assert text.exit_code == 0 and text.stdout.count("Tony Blair") == 2
    header, *rows = text.stdout.splitlines()
    assert header.split()[:3] == ["rank", "cosine", "person"] and len(rows) == 2
    assert all(row.split()[-1].startswith("Tony_Blair/") and str(few) not in row for row in rows)  # relative paths
    neither = runner.invoke(app, ["index", "query", "--index", str(index)])
    assert neither.exit_code == 2 and "exactly one of --text and --image" in neither.output
    missing = runner.invoke(app, ["index", "query", "--index", str(tmp_path / "nope"), "--text", "x"])
    assert missing.exit_code == 2 and "no such index folder" in missing.output and "Traceback" not in missing.output
