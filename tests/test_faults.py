"""Faults that must never stop or corrupt a run: damaged cache rows, concurrent and failing index writers, odd
image modes, file names that are not UTF-8, links that loop."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clipface.data.dataset import FaceDataset
from clipface.data.images import load_image
from clipface.embed.cache import EmbeddingCache
from clipface.embed.pipeline import embed_images
from clipface.errors import ClipfaceError

from .conftest import LFW_MINI, need
from .hostile import sixteen_bit_png

# -- damaged cache rows (issue item 7) ----------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE emb SET vec = substr(vec, 1, 10)",  # cut to 10 bytes, dim unchanged
        "UPDATE emb SET vec = substr(vec, 1, 12), dim = 3",  # consistent, but not this model's shape
        "UPDATE emb SET vec = 'not a vector'",  # text instead of a blob
        "UPDATE emb SET dim = 0",
        f"UPDATE emb SET vec = x'{'0000c07f' * 64}'",  # NaN in every component
    ],
    ids=["cut", "other-shape", "text", "dim-0", "nan"],
)
def test_damaged_cache_rows_are_recomputed(tiny, tmp_path: Path, damage: str) -> None:
    ds = FaceDataset.from_folder(need(LFW_MINI), max_identities=2, max_per_identity=2)
    cache = EmbeddingCache(tmp_path)
    first = embed_images(tiny, ds.images, cache, progress=False)
    with sqlite3.connect(cache.path) as db:
        db.execute(damage + " WHERE rowid IN (SELECT rowid FROM emb ORDER BY key LIMIT 2)")
    again = embed_images(tiny, ds.images, cache, progress=False)
    assert (again.computed, again.cached) == (2, 2)
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    assert embed_images(tiny, ds.images, cache, progress=False).computed == 0  # the rows were rewritten


# -- index writers (issue item 9) ----------------------------------------------------------------


def _people(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "-".join(names)
    for name in names:
        (folder / name).mkdir(parents=True)
        for image in sorted((LFW_MINI / name).iterdir())[:3]:
            (folder / name / image.name).write_bytes(image.read_bytes())
    return folder


@pytest.fixture
def small_index(tiny, tmp_path: Path):
    pytest.importorskip("faiss")
    from clipface.index.store import FaceIndex

    index, _ = FaceIndex.build(
        tiny, _people(tmp_path, ["Tony_Blair"]), tmp_path / "idx", cache=EmbeddingCache(tmp_path)
    )
    return index


def _slow_commits(monkeypatch: pytest.MonkeyPatch, pause=lambda: time.sleep(0.5)) -> None:
    """Writers stay inside the critical section a while (``pause``), so that a second one arrives while the first
    writes."""
    from clipface.index import store

    real = store.commit_rows

    def slow(*args, **kwargs):
        pause()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "commit_rows", slow)


def _add_concurrently(index_dir: Path, tiny, folders: list[Path], cache: EmbeddingCache) -> list[BaseException]:
    from clipface.index.store import FaceIndex

    errors: list[BaseException] = []

    def add(folder: Path) -> None:
        try:
            FaceIndex.load(index_dir).add(tiny, folder, cache)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_adds_take_turns(small_index, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipface.index.store import FaceIndex

    _slow_commits(monkeypatch)
    folders = [_people(tmp_path, ["Colin_Powell", "Hugo_Chavez"]), _people(tmp_path, ["Hugo_Chavez", "Ariel_Sharon"])]
    assert _add_concurrently(small_index.dir, tiny, folders, EmbeddingCache(tmp_path)) == []
    final = FaceIndex.load(small_index.dir)
    assert final.count == 3 + 9  # Tony Blair, then three people (Hugo Chavez's photos added once)
    assert len(final.meta.images_of("Hugo Chavez")) == 3
    assert not [p for p in os.listdir(small_index.dir) if p.endswith(".tmp")]


def test_without_the_lock_concurrent_adds_collide(
    small_index, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above can fail: with the writer lock taken out, the same two adds break the index.

    Both writers load the committed state (three images) and then meet at a barrier before either writes, so
    both append from row 3. Which collision comes first is up to the scheduler: the second writer's image ids
    are taken (``IntegrityError`` on ``images.id``), or one writer truncates the vector file under the other's
    memory map (``ValueError``). Either way an add fails, where with the lock both succeed."""
    import contextlib

    from clipface.index import store

    both_loaded = threading.Barrier(2, timeout=30)  # both writers past their reload, neither has written
    real = store.FaceIndex._append

    def meet_then_append(self, *args, **kwargs):
        both_loaded.wait()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store.FaceIndex, "_append", meet_then_append)
    monkeypatch.setattr(store, "write_lock", lambda *a, **k: contextlib.nullcontext())
    folders = [_people(tmp_path, ["Colin_Powell"]), _people(tmp_path, ["Ariel_Sharon"])]
    errors = _add_concurrently(small_index.dir, tiny, folders, EmbeddingCache(tmp_path))

    def collision(e: BaseException) -> bool:
        ids_taken = isinstance(e, sqlite3.IntegrityError) and "images.id" in str(e)
        file_changed = isinstance(e, ValueError) and "mmap" in str(e)
        return ids_taken or file_changed

    assert errors and all(collision(e) for e in errors), errors


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_second_writer_process_waits_for_the_first(small_index, tmp_path: Path) -> None:
    from filelock import FileLock

    from clipface.index.store import FaceIndex

    folder = _people(tmp_path, ["Colin_Powell"])
    held = FileLock(str(small_index.dir / ".write.lock"))
    held.acquire()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clipface",
                "index",
                "add",
                "-i",
                str(small_index.dir),
                "--images",
                str(folder),
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        cache = Path(os.environ["CLIPFACE_CACHE_DIR"]) / "embeddings.sqlite"  # the process's own cache
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and _rows(cache) < 3:
            time.sleep(0.1)  # until it has embedded its images: all that is left is to write them
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[0]  # it waits for the lock
        assert FaceIndex.load(small_index.dir).count == 3
    finally:
        held.release()
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert FaceIndex.load(small_index.dir).count == 6


def test_a_writer_that_cannot_get_the_lock_stops_with_one_line(small_index) -> None:
    from filelock import FileLock

    from clipface.index.writer import write_lock

    with FileLock(str(small_index.dir / ".write.lock")):
        with pytest.raises(ClipfaceError, match="another process has been writing to this index") as caught:
            with write_lock(small_index.dir, timeout=0.2):
                pass
    assert "\n" not in str(caught.value)


def test_rebuild_with_overwrite_replaces_the_index(small_index, tiny, tmp_path: Path) -> None:
    from clipface.index.store import FaceIndex

    folder = _people(tmp_path, ["Colin_Powell", "Hugo_Chavez"])
    index, update = FaceIndex.build(tiny, folder, small_index.dir, cache=EmbeddingCache(tmp_path), overwrite=True)
    assert update.added == 6
    reloaded = FaceIndex.load(small_index.dir)  # used to mix the old vectors with the new rows
    assert reloaded.count == 6 and reloaded.meta.images_of("Tony Blair") == []


def test_a_failed_build_leaves_no_half_index(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipface.index import store
    from clipface.index.store import FaceIndex
    from clipface.index.vectors import VectorStore

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_append = VectorStore.append

    def half_written(self, new):  # the vector file is written, then the disk fills
        real_append(self, new)
        broken()

    people = _people(tmp_path, ["Tony_Blair"])
    for where, name, fault in ((VectorStore, "append", half_written), (store, "commit_rows", broken)):
        with monkeypatch.context() as m:
            m.setattr(where, name, fault)
            with pytest.raises(OSError, match="No space"):
                FaceIndex.build(tiny, people, tmp_path / "idx", cache=EmbeddingCache(tmp_path))
        assert sorted(os.listdir(tmp_path / "idx")) in ([], [".write.lock"]), name


# -- file names that are not UTF-8 (issue item 2) ----------------------------------------------------

name_bytes = st.binary(min_size=1, max_size=24).filter(lambda b: b"/" not in b and b"\x00" not in b)


@settings(max_examples=200, deadline=None)
@given(name_bytes)
def test_any_file_name_round_trips_through_sqlite_and_shows_readably(raw: bytes) -> None:
    from clipface.sql import from_sql_text, to_sql_text
    from clipface.textsafe import readable

    name = os.fsdecode(raw)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (path TEXT NOT NULL)")
    db.execute("INSERT INTO t VALUES (?)", (to_sql_text(name),))
    (stored,) = db.execute("SELECT path FROM t").fetchone()
    assert os.fsencode(from_sql_text(stored)) == raw  # opens the same file
    shown = readable(name)
    shown.encode("utf-8")  # valid text for JSON, Markdown, HTML and terminals
    assert shown == raw.decode("utf-8", errors="backslashreplace")


def test_symlink_loops_and_broken_links_are_listed(tmp_path: Path) -> None:
    person = tmp_path / "ds" / "Ann_Lee"
    person.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(person / "good.png")
    (person / "loop.jpg").symlink_to("loop.jpg")
    (person / "a.jpg").symlink_to("b.jpg")
    (person / "b.jpg").symlink_to("a.jpg")
    (person / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    ds = FaceDataset.from_folder(tmp_path / "ds")
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert [im.path.name for im in ds.images] == ["good.png"]
    assert {k: v.split(" (")[0] for k, v in reasons.items()} == {
        "loop.jpg": "symbolic link loop",
        "a.jpg": "symbolic link loop",
        "b.jpg": "symbolic link loop",
        "gone.jpg": "broken symbolic link",
    }


# -- image modes (issue items 3 and 10) ------------------------------------------------------------


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    data, values = sixteen_bit_png(np.random.default_rng(1))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    got = np.asarray(load_image(data))
    assert got.shape == values.shape + (3,) and (got[:, :, 0] == got[:, :, 2]).all()
    np.testing.assert_array_equal(got[:, :, 0], np.rint(values / 257.0).astype(np.uint8))
    assert (got == 255).mean() < 0.01  # it was 92% white


@pytest.mark.parametrize("mode", ["I;16", "L", "RGB", "RGBA", "LA", "P", "PA", "1", "CMYK", "F", "I"])
def test_large_images_of_every_mode_decode_reduced(mode: str) -> None:
    big = (
        Image.new("RGB", (3000, 1800), (90, 160, 40)).convert(mode) if mode != "I;16" else Image.new(mode, (3000, 1800))
    )
    fmt = "TIFF" if mode in ("CMYK", "F", "I", "PA") else "PNG"
    out = io.BytesIO()
    big.save(out, fmt)
    got = load_image(out.getvalue(), max_side=512)
    assert got.mode == "RGB" and max(got.size) == 512 and abs(got.size[1] - 307) <= 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_images_shrink_by_picking_colours_not_averaging_indices(fmt: str) -> None:
    indices = (np.indices((600, 800)).sum(axis=0) % 2 * 255).astype(np.uint8)  # a checkerboard of 0 and 255
    img = Image.frombytes("P", (800, 600), indices.tobytes())
    img.putpalette([255, 0, 0] + [0, 255, 0] * 254 + [0, 0, 255])  # red, green everywhere between, blue
    out = io.BytesIO()
    img.save(out, fmt)
    colours = {tuple(c) for c in np.asarray(load_image(out.getvalue(), max_side=100)).reshape(-1, 3)}
    assert colours <= {(255, 0, 0), (0, 0, 255)}, colours


@pytest.mark.parametrize("orientation, upright", [(1, (300, 100)), (3, (300, 100)), (6, (100, 300)), (8, (100, 300))])
def test_exif_orientation_survives_reduced_decoding(orientation: int, upright: tuple[int, int]) -> None:
    arr = np.zeros((1000, 3000, 3), np.uint8)
    arr[:, :1500] = (250, 0, 0)  # red left half as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", exif=exif.tobytes(), quality=95)
    small = load_image(out.getvalue(), max_side=300)
    full = load_image(out.getvalue()).resize(small.size, Image.BILINEAR)
    assert small.size == upright
    assert np.abs(np.asarray(small, np.int16) - np.asarray(full, np.int16)).mean() < 8


def test_shards_keep_names_that_are_not_utf8(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from clipface.index.records import ImageRecord
    from clipface.index.shards import read_shards, write_shard

    odd = os.fsdecode(b"/data/Folder\xe9Latin1/uniq\xff\xfe.jpg")
    records = [ImageRecord(odd, odd[6:], os.fsdecode(b"Folder\xe9Latin1"), 4, 3, "a" * 64)]
    meta = {"model": "m", "fingerprint": "f", "preprocess_id": "p", "dim": 2, "skipped": [{"file": odd, "reason": "x"}]}
    write_shard(tmp_path / "shard-1.parquet", records, np.ones((1, 2), np.float32), meta)
    back = read_shards(tmp_path)
    assert back.records == records and back.skipped[0].path == odd
