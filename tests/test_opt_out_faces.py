"""Opt out by face (``serve --opt-out-faces``): an enrolled person's unlabelled photos never appear in any route.

The index (random-weight CLIP for the image vectors, real dlib and FaceNet for the face vectors,
so the served default is the fused rule) holds nine
lfw-mini people with their labels and Colin Powell's photos 4-10 with no label (lying directly
in the indexed folder); Colin Powell asked to be removed with photos 1-3. Every route of the
server, clipface's own and clip-retrieval's, is asked for everything it will give.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from clipface.embed.options import RunOptions
from clipface.index.store import FaceIndex
from clipface.jobs import build_index

from .conftest import LFW_MINI
from .live_server import serve

pytest.importorskip("dlib")

OUT = "Colin_Powell"
INDICE = "faces-engine"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    root = tmp_path_factory.mktemp("optfaces")
    images, enrol = root / "collection", root / "optout" / "Person_A"
    shutil.copytree(LFW_MINI, images, ignore=shutil.ignore_patterns(OUT))
    enrol.mkdir(parents=True)
    for i, photo in enumerate(sorted((LFW_MINI / OUT).glob("*.jpg"))):
        shutil.copy(photo, enrol / photo.name if i < 3 else images / f"upload_{i:03d}.jpg")  # no name, no label
    index_dir = root / INDICE
    # the faces by both models, as the served default (the fused rule) needs them
    opts = RunOptions(progress=False)
    build_index("test-tiny-random", str(images), index_dir, opts, face_model="dlib", second_face_model="facenet-casia")
    index = FaceIndex.load(index_dir)
    hidden = sorted(i for i, im in index.meta.images(range(index.count)).items() if im.identity is None)
    assert len(hidden) == 7 and index.faces is not None and index.faces.store.count >= index.count == 97
    assert index.second_faces is not None and index.second_faces.store.count >= 90
    return index_dir, root / "optout", hidden


@pytest.fixture(scope="module")
def engine(folders: tuple[Path, Path, list[int]]) -> Iterator[str]:
    index_dir, optout, _ = folders
    with serve(index_dir, "--clip-retrieval", "--no-auth", "--opt-out-faces", str(optout)) as (port, _):
        yield f"http://127.0.0.1:{port}"


def _ids(results: list[dict]) -> set[int]:
    return {int(r["id"]) for r in results}


def test_opted_out_face_never_appears_in_any_route(engine: str, folders: tuple[Path, Path, list[int]]) -> None:
    index_dir, optout, hidden = folders
    others = 97 - len(hidden)
    stats = httpx.get(f"{engine}/api/stats").json()
    assert stats["opt_out_faces"]["people"] == [{"person": 1, "photos": 3, "enrolled": 3, "removes": 7}]
    assert str(optout) not in json.dumps(stats) and "Person_A" not in json.dumps(stats)  # no path, no folder name
    photos = sorted((optout / "Person_A").glob("*.jpg")) + sorted(index_dir.parent.glob("collection/upload_*.jpg"))
    # clipface's own routes: text (everything the index will give), photos, audits, thumbnails
    got = httpx.post(f"{engine}/api/search/text", json={"query": "a photo of Colin Powell.", "k": 100}).json()
    assert len(got["results"]) == others and not _ids(got["results"]) & set(hidden)  # nobody else removed
    for photo in photos:
        got = httpx.post(f"{engine}/api/search/image", files={"file": photo.read_bytes()}, data={"k": "100"}).json()
        assert len(got["results"]) == others and not _ids(got["results"]) & set(hidden), photo.name
        audit = httpx.post(
            f"{engine}/api/audit", data={"name": "Colin Powell", "k": "100"}, files={"file": photo.read_bytes()}
        ).json()
        assert audit["matches"] == 0 and audit["in_index"] == 0 and not _ids(audit["results"]) & set(hidden)
    audit = httpx.post(f"{engine}/api/audit", data={"name": "Colin Powell", "k": "100"}).json()
    assert not _ids(audit["results"]) & set(hidden)
    for i in hidden:
        assert httpx.get(f"{engine}/api/image/{i}").status_code == 404
    shown = next(iter(_ids(got["results"])))
    assert httpx.get(f"{engine}/api/image/{shown}").status_code == 200
    # clip-retrieval's routes: text, image, embedding (the hidden images' own vectors), metadata of every id
    vectors = FaceIndex.load(index_dir).image_vectors()
    base = {"modality": "image", "num_images": 100, "num_result_ids": 1000, "indice_name": INDICE}
    queries = [{"text": "Colin Powell"}] + [{"image": base64.b64encode(p.read_bytes()).decode()} for p in photos]
    queries += [{"embedding_input": vectors[i].tolist()} for i in hidden]
    for q in queries:
        resp = httpx.post(f"{engine}/knn-service", json={**base, **q})
        assert resp.status_code == 200 and len(resp.json()) == others and not _ids(resp.json()) & set(hidden)
    meta = httpx.post(f"{engine}/metadata", json={"ids": list(range(100)), "indice_name": INDICE}).json()
    assert len(meta) == others and not _ids(meta) & set(hidden)
    # the web page is static and reads only the routes above
    page = httpx.get(f"{engine}/")
    assert page.status_code == 200 and "Colin" not in page.text


def test_without_the_opt_out_the_same_photos_are_found(folders: tuple[Path, Path, list[int]]) -> None:
    """The control: the same server without --opt-out-faces returns the hidden photos (the test above can fail)."""
    index_dir, optout, hidden = folders
    with serve(index_dir, "--no-auth") as (port, _):
        photo = sorted((optout / "Person_A").glob("*.jpg"))[0]
        got = httpx.post(
            f"http://127.0.0.1:{port}/api/search/image", files={"file": photo.read_bytes()}, data={"k": "100"}
        ).json()
        assert set(hidden) <= _ids(got["results"])
        assert httpx.get(f"http://127.0.0.1:{port}/api/stats").json()["opt_out_faces"] is None


def _labelled(index_dir: Path, ids: set[int]) -> set[str | None]:
    return {im.identity for im in FaceIndex.load(index_dir).meta.images(ids).values()}


def _opt_out_copy(folders: tuple[Path, Path, list[int]], tmp_path: Path) -> Path:
    """A copy of the opt-out folder that the test may change."""
    folder = tmp_path / "optout"
    shutil.copytree(folders[1], folder)
    return folder


def _second_person_asks(folder: Path) -> None:
    (folder / "Person_B").mkdir()
    for photo in sorted((LFW_MINI / "Tony_Blair").glob("*.jpg"))[:2]:
        shutil.copy(photo, folder / "Person_B" / photo.name)


def test_a_changed_face_folder_takes_effect_and_a_damaged_one_keeps_the_last_good(
    folders: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    from clipface.server.face_optout import FaceOptOut

    index_dir, _, hidden = folders
    folder = _opt_out_copy(folders, tmp_path)
    opt = FaceOptOut(FaceIndex.load(index_dir), folder, interval=0.0)
    assert opt.removed == set(hidden) and opt.error is None
    _second_person_asks(folder)  # their photos go from every answer without a restart
    opt.refresh()
    blair = opt.removed - set(hidden)
    assert len(blair) >= 5 and _labelled(index_dir, blair) == {"Tony_Blair"}, _labelled(index_dir, blair)
    assert [p["enrolled"] for p in opt.stats()["people"]] == [3, 2] and opt.error is None
    # a damaged copy of Person_B's photos: the last good enrolment stays, and the error says so
    for photo in (folder / "Person_B").glob("*.jpg"):
        photo.write_bytes(b"not a jpeg")
    opt.refresh()
    assert blair <= opt.removed and "no usable face" in (opt.error or "")
    # the folder gone (a bad sync): everything stays removed
    folder.rename(tmp_path / "moved")
    opt.refresh()
    assert blair | set(hidden) <= opt.removed and "no such folder" in (opt.error or "")
    # Person_B withdrawn on purpose (their folder deleted): their photos are served again
    (tmp_path / "moved").rename(folder)
    shutil.rmtree(folder / "Person_B")
    opt.refresh()
    assert opt.removed == set(hidden) and opt.error is None


def test_a_running_server_takes_a_new_face_opt_out_within_seconds(
    folders: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    import time

    index_dir, _, hidden = folders
    folder = _opt_out_copy(folders, tmp_path)
    with serve(index_dir, "--no-auth", "--opt-out-faces", str(folder)) as (port, _):
        stats = f"http://127.0.0.1:{port}/api/stats"
        assert httpx.get(stats).json()["opt_out_faces"]["removed"] == len(hidden)
        _second_person_asks(folder)
        start = time.monotonic()
        while httpx.get(stats).json()["opt_out_faces"]["removed"] == len(hidden):
            assert time.monotonic() - start < 10, "the new opt-out was not taken within 10 s"
            time.sleep(0.2)
        assert time.monotonic() - start < 5
        blair = FaceIndex.load(index_dir).meta.images_of("Tony Blair")
        photo = (LFW_MINI / "Tony_Blair" / "Tony_Blair_0003.jpg").read_bytes()
        got = httpx.post(f"http://127.0.0.1:{port}/api/search/image", files={"file": photo}, data={"k": "100"}).json()
        assert not _ids(got["results"]) & {im.id for im in blair}


def test_face_vectors_are_mirror_summed_and_single_crop_ones_are_refused(
    folders: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    """The face model's LFW threshold was measured on mirror-summed vectors: the index stores them so, and an index
    whose faces are single crops (built before) is refused for opt-out by face, in one line naming the fix."""

    from clipface.data.images import load_image
    from clipface.errors import UsageError
    from clipface.server.face_optout import FaceOptOut

    index_dir, optout, _ = folders
    index = FaceIndex.load(index_dir)
    assert index.faces is not None and index.faces.model.mirror_summed
    encoder = index.faces.load_encoder()
    image = index.meta.images_of("Tony Blair")[0]
    crop = encoder.prepare(load_image(Path(image.path)))[None]
    assert encoder.flip
    summed = encoder.embed_prepared(crop)[0]
    encoder.flip = False
    try:
        single = encoder.embed_prepared(crop)[0]
    finally:
        encoder.flip = True
    stored = index.faces.store.first_faces([image.id])[0]
    assert float(stored @ summed) > 0.9999 > float(stored @ single)
    old = tmp_path / "old-index"
    shutil.copytree(index_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["faces"]["preprocess_id"] = manifest["faces"]["preprocess_id"].removesuffix("|flipsum")
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="single crops.*--face-model dlib"):
        FaceOptOut(FaceIndex.load(old), optout)


def test_the_served_default_is_the_fused_rule_and_a_single_model_rule_is_there_when_asked(
    folders: tuple[Path, Path, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    from clipface.errors import UsageError
    from clipface.server.face_optout import FaceOptOut

    index_dir, optout, hidden = folders
    index = FaceIndex.load(index_dir)
    with caplog.at_level("WARNING", logger="clipface.server"):
        fused = FaceOptOut(index, optout)
    # enrolled with 3 photos: the operator is told that the goals hold from 8
    assert "3 usable photos; the fused rule meets its goals with 8 or more" in caplog.text
    assert fused.rule == "fused" and fused.stats()["fused"]["with"] == "facenet-casia"
    assert fused.threshold == fused.stats()["fused"]["calibrations"][0]["threshold"]
    assert fused.removed == set(hidden)
    mean = FaceOptOut(index, optout, rule="mean")
    assert (mean.rule, mean.stats()["fused"]) == ("mean", None) and set(hidden) <= mean.removed
    with pytest.raises(UsageError, match="calibrated, not cosines"):  # a cosine means nothing to the fused rule
        FaceOptOut(index, optout, threshold=0.9)
    index.second_faces = None  # an index without the second model's faces: the single-model rule, or one line
    assert FaceOptOut(index, optout).rule == "mean"
    with pytest.raises(UsageError, match="needs an index that keeps faces by facenet-casia"):
        FaceOptOut(index, optout, rule="fused")


def test_added_images_get_both_models_faces(folders: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    from clipface.jobs import add_images

    copy = tmp_path / "index"
    shutil.copytree(folders[0], copy)
    before = FaceIndex.load(copy)
    n_first, n_second = before.faces.store.count, before.second_faces.store.count  # type: ignore[union-attr]
    new = tmp_path / "new"
    new.mkdir()
    for photo in sorted((LFW_MINI / OUT).glob("*.jpg"))[:3]:  # Colin Powell's enrolment photos, not yet indexed
        shutil.copy(photo, new / photo.name)
    add_images(copy, str(new), RunOptions(progress=False))
    after = FaceIndex.load(copy)  # the load checks every count against the manifest and the metadata
    assert after.count == before.count + 3
    assert after.faces.store.count == n_first + 3  # type: ignore[union-attr]
    assert after.second_faces.store.count == n_second + 3  # type: ignore[union-attr]
    assert set(after.second_faces.store.image_ids[-3:].tolist()) == set(range(before.count, after.count))  # type: ignore[union-attr]
    assert after.stats()["second_faces"]["model"] == "facenet-casia"
