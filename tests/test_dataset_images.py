from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from clipface.data.dataset import FaceDataset, display_name
from clipface.data.images import load_image, probe_image
from clipface.errors import DatasetError, ImageError

from .conftest import LFW_MINI, need


@pytest.mark.parametrize(
    "folder, name",
    [
        ("George_W_Bush", "George W Bush"),
        ("ben_afflek", "Ben Afflek"),
        ("Jean-Claude_Van_Damme", "Jean-Claude Van Damme"),
    ],
)
def test_display_name(folder: str, name: str) -> None:
    assert display_name(folder) == name


def test_bundled_dataset_is_lfw_mini() -> None:
    ds = FaceDataset.from_folder("bundled:lfw-mini")
    assert (len(ds), len(ds.identities)) == (100, 10)
    assert "George_W_Bush" in ds.identities and not ds.skipped


def test_filters_are_seeded_and_respected() -> None:
    root = need(LFW_MINI)
    a = FaceDataset.from_folder(root, max_identities=4, max_per_identity=3, seed=7)
    b = FaceDataset.from_folder(root, max_identities=4, max_per_identity=3, seed=7)
    c = FaceDataset.from_folder(root, max_identities=4, max_per_identity=3, seed=8)
    assert [im.path for im in a.images] == [im.path for im in b.images]
    assert len(a.identities) == 4 and all(len(v) == 3 for v in a.by_identity().values())
    assert [im.path for im in a.images] != [im.path for im in c.images]
    assert len(FaceDataset.from_folder(root, min_images=11)) == 0


def test_split_layout_merges_identities(tmp_path: Path) -> None:
    for split, n in (("train", 2), ("test", 1)):
        (tmp_path / split / "ben_afflek").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / split / "ben_afflek" / f"{i}.png")
    ds = FaceDataset.from_folder(tmp_path)
    assert ds.identities == ["ben_afflek"] and len(ds) == 3


def test_bad_files_are_listed_with_reasons(bad_folder: Path) -> None:
    ds = FaceDataset.from_folder(bad_folder)
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert "not an image" in reasons["notes.jpg"]
    assert reasons["huge.png"] == "image too large (400 Mpx > 64 Mpx)"
    # the truncated JPEG has a valid header: it is found at decode time
    with pytest.raises(ImageError, match="truncated"):
        load_image(bad_folder / "Alice_Smith" / "truncated.jpg")
    assert len(ds) == 7


def test_probe_and_load_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: empty file"):
        probe_image(empty)
    with pytest.raises(ImageError, match="cannot read file"):
        probe_image(tmp_path / "missing.jpg")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        FaceDataset.from_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no image files"):
        FaceDataset.from_folder(tmp_path)
