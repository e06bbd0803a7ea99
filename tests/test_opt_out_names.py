"""Opt-out by name sees through Unicode: a name typed or saved in another form than the folder's removes the person.

The index holds two people whose folder names are not ASCII, one saved composed (NFC, as Linux and
Windows write it), one decomposed (NFD, as macOS writes file names), beside two ASCII people. Each is
asked to be removed in forms that differ from the folder's: the other normal form, upper case,
full-width letters, a zero-width space, a no-break space, ``ß`` against ``ss``.
"""

from __future__ import annotations

import shutil
import sqlite3
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipface.data.dataset import identity_key

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clipface.embed.cache import EmbeddingCache  # noqa: E402
from clipface.index.store import FaceIndex  # noqa: E402
from clipface.server.app import create_app  # noqa: E402

from .conftest import LFW_MINI  # noqa: E402

COMPOSED = unicodedata.normalize("NFC", "José_Müller")  # as Linux writes it
DECOMPOSED = unicodedata.normalize("NFD", "Zoë_Ångström")  # as macOS writes it
STREET = "Hans_Großmann"
SOURCES = {COMPOSED: "Tony_Blair", DECOMPOSED: "Colin_Powell", STREET: "Hugo_Chavez", "Gerhard_Schroeder": None}


@pytest.fixture(scope="module")
def index_dir(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    for folder, source in SOURCES.items():
        (root / "photos" / folder).mkdir(parents=True)
        for photo in sorted((LFW_MINI / (source or folder)).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / "photos" / folder / photo.name)
    cache = EmbeddingCache(root / "cache")
    return FaceIndex.build(tiny, root / "photos", root / "idx", cache=cache)[0].dir


def ids_of(index_dir: Path, folder: str) -> set[int]:
    index = FaceIndex.load(index_dir)
    return {i for i, im in index.meta.images(range(index.count)).items() if im.identity == folder}


def served(client: TestClient) -> set[int]:
    """Every image id any search route will give (text, photo and clip-retrieval's), and the thumbnails it serves."""
    photo = {"file": ("q.jpg", (LFW_MINI / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes(), "image/jpeg")}
    text = client.post("/api/search/text", json={"query": "a photo of a person", "k": 100}).json()["results"]
    image = client.post("/api/search/image", files=photo, data={"k": "100"}).json()["results"]
    knn = client.post(
        "/knn-service", json={"text": "a photo of a person", "num_images": 100, "indice_name": "idx"}
    ).json()
    ids = {r["id"] for r in text + image} | {r["id"] for r in knn}
    return ids | {i for i in range(12) if client.get(f"/api/image/{i}").status_code == 200}


FORMS = [
    (COMPOSED, unicodedata.normalize("NFD", "José Müller")),  # the other normal form
    (COMPOSED, "JOSÉ MÜLLER"),  # upper case
    (COMPOSED, "Ｊｏｓé　Ｍüller"),  # full-width letters and an ideographic space
    (DECOMPOSED, unicodedata.normalize("NFC", "Zoë Ångström")),  # NFC against the NFD folder
    (DECOMPOSED, "Zoë\u200b Ångström"),  # a zero-width space pasted in
    (DECOMPOSED, "\ufeffZoë\u00a0Ångström"),  # a byte-order mark and a no-break space
    (STREET, "hans grossmann"),  # ß case-folds to ss
]


@pytest.mark.parametrize("folder, line", FORMS, ids=[ascii(line) for _, line in FORMS])
def test_a_name_in_any_unicode_form_removes_the_person_from_every_route(
    index_dir: Path, tiny, tmp_path: Path, folder: str, line: str
) -> None:
    listed = tmp_path / "opt-out.txt"
    listed.write_text(f"{line}\nNobody Atall\n", encoding="utf-8")
    client = TestClient(
        create_app(index_dir, model=tiny, require_token=False, rate_limit=None, opt_out=listed, clip_retrieval=True)
    )
    theirs = ids_of(index_dir, folder)
    shown = served(client)
    assert len(theirs) == 3 and not shown & theirs
    assert len(shown) == 12 - 3  # nobody else removed
    stats = client.get("/api/stats").json()
    assert stats["opt_out"][0] == {"line": 1, "kind": "person", "removes": 3}
    assert stats["opt_out_unmatched"] == [2]  # the line that matches no one is named by its number


def test_without_an_opt_out_every_photo_is_served(index_dir: Path, tiny) -> None:
    """The probe of the test above can see everyone: the removals are the opt-out's doing."""
    client = TestClient(create_app(index_dir, model=tiny, require_token=False, rate_limit=None, clip_retrieval=True))
    assert served(client) == set(range(12))


def test_an_index_keyed_by_the_old_rule_is_rekeyed_when_opened(index_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(index_dir, copy)
    with sqlite3.connect(copy / "meta.sqlite") as db:  # as an index written before keys saw through Unicode
        for (name,) in db.execute("SELECT DISTINCT identity FROM images").fetchall():
            db.execute(
                "UPDATE images SET identity_key = ? WHERE identity = ?",
                (" ".join(name.replace("_", " ").split()).casefold(), name),
            )
        db.execute("PRAGMA user_version = 0")
    with sqlite3.connect(copy / "meta.sqlite") as db:
        old = {r[0] for r in db.execute("SELECT identity_key FROM images")}
    assert unicodedata.normalize("NFD", "zoë ångström") in old  # the old key kept the decomposed form
    found = FaceIndex.load(copy).meta.images_of("Zoë Ångström")
    assert len(found) == 3 and {im.identity for im in found} == {DECOMPOSED}
    with sqlite3.connect(copy / "meta.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 2


def test_identity_key_sees_through_forms_but_keeps_people_apart() -> None:
    same = ["Zoë_Ångström", unicodedata.normalize("NFD", "Zoë Ångström"), "ZOË\u2009ÅNGSTRÖM", "Zo\u00adë Ångström"]
    assert len({identity_key(n) for n in same}) == 1
    assert identity_key("George_W_Bush") == "george w bush" == identity_key(" George \u200dW\u00a0 Bush ")
    assert identity_key("Zoe Angstrom") != identity_key("Zoë Ångström")  # accents still tell people apart
    assert identity_key("uniq\udcff") == "uniq\udcff"  # an undecodable folder name keeps one stable key


@given(st.text(max_size=30))
def test_identity_key_is_stable_under_its_own_forms(name: str) -> None:
    key = identity_key(name)
    assert identity_key(key) == key
    assert identity_key(unicodedata.normalize("NFD", name)) == key
