"""Face datasets: a folder of identity sub-folders (the LFW layout), filtered and validated.

Any folder that directly holds image files is an identity named after the folder, so
``root/George_W_Bush/*.jpg`` and split layouts such as ``root/train/ben_afflek/*.jpg`` both work
(the same identity in several splits is merged). Files that are not usable images are listed in
:attr:`FaceDataset.skipped` with a reason and never stop a run.
"""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DatasetError, DatasetPathError, ImageError
from ..textsafe import readable
from .images import DEFAULT_MAX_PIXELS, is_image_path, probe_image

BUNDLED = {"lfw-mini": "LFW, 10 people x 10 original (unaligned) photos"}
BUNDLED_PREFIX = "bundled:"


@dataclass(frozen=True)
class FaceImage:
    """One image of one identity."""

    path: Path
    identity: str

    @property
    def display_name(self) -> str:
        return display_name(self.identity)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a run, with the reason."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.path, "reason": self.reason}


def display_name(folder: str) -> str:
    """A person's name from an identity folder: ``George_W_Bush`` -> ``George W Bush``.

    All-lowercase folders are title-cased (``ben_afflek`` -> ``Ben Afflek``). Bytes of a folder
    name that are not UTF-8 are shown as ``\\xNN`` (:func:`~clipface.textsafe.readable`).
    """
    name = re.sub(r"\s+", " ", readable(folder).replace("_", " ")).strip()
    return name.title() if name == name.lower() else name


#: Version of :func:`identity_key`'s rule; an index stores keys made with it and re-keys older ones when opened.
IDENTITY_KEY_VERSION = 2


def identity_key(name: str) -> str:
    """The form of a person's name that opt-outs, audits and look-ups compare: ``George_W_Bush`` -> ``george w bush``.

    Unicode-insensitive as well as case- and separator-insensitive, so that one name typed or
    saved in any form finds the same person: compatibility-normalised (NFKC: composed and
    decomposed accents, as macOS writes file names, full-width letters and ligatures are one),
    case-folded (``ß`` is ``ss``), with invisible format characters (zero-width spaces and
    joiners, direction marks, soft hyphens, byte-order marks) removed and every run of spaces
    (no-break and the other Unicode spaces) or underscores made one space. Surrogate escapes of
    an undecodable file name are kept, so such a name still has one stable key.
    """
    text = unicodedata.normalize("NFKC", name.replace("_", " "))
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", " ".join(text.split()).casefold())


def bundled_path(name: str = "lfw-mini") -> Path:
    """Path of a dataset shipped inside the package."""
    if name not in BUNDLED:
        raise DatasetError(f"unknown bundled dataset {name!r} (have: {', '.join(BUNDLED)})")
    return Path(str(resources.files("clipface.data").joinpath("bundled", name)))


def resolve_dataset_path(spec: str | Path) -> Path:
    """``bundled:NAME`` or a folder path, checked to exist."""
    text = str(spec)
    if text.startswith(BUNDLED_PREFIX):
        return bundled_path(text[len(BUNDLED_PREFIX) :])
    path = Path(text).expanduser()
    if not path.exists():
        raise DatasetPathError("dataset", str(path), "the dataset folder does not exist")
    if not path.is_dir():
        raise DatasetPathError("dataset", str(path), "not a folder (expected a folder of identity sub-folders)")
    return path


@dataclass
class FaceDataset:
    """Images grouped by identity, plus the files that were skipped and why."""

    root: Path
    images: list[FaceImage]
    skipped: list[SkippedFile] = field(default_factory=list)
    name: str = ""

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        min_images: int = 1,
        max_identities: int | None = None,
        max_per_identity: int | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        validate: bool = True,
    ) -> FaceDataset:
        """Scan ``root`` (or ``bundled:NAME``), check every image header, then apply the filters."""
        path = resolve_dataset_path(root)
        images, skipped = _scan(path, max_pixels if validate else None)
        if not images and not skipped:
            raise DatasetError(f"{path}: no image files found (expected identity sub-folders of images)")
        ds = cls(root=path, images=images, skipped=skipped, name=str(root))
        return ds.filter(
            min_images=min_images, max_identities=max_identities, max_per_identity=max_per_identity, seed=seed
        )

    def filter(
        self,
        min_images: int = 1,
        max_identities: int | None = None,
        max_per_identity: int | None = None,
        seed: int = 0,
    ) -> FaceDataset:
        """Keep identities with at least ``min_images``; sample identities and images per identity (seeded)."""
        rng = random.Random(seed)
        groups = {k: v for k, v in self.by_identity().items() if len(v) >= min_images}
        keys = sorted(groups)
        if max_identities is not None and len(keys) > max_identities:
            keys = sorted(rng.sample(keys, max_identities))
        kept: list[FaceImage] = []
        for k in keys:
            imgs = groups[k]
            if max_per_identity is not None and len(imgs) > max_per_identity:
                imgs = sorted(rng.sample(imgs, max_per_identity), key=lambda im: str(im.path))
            kept.extend(imgs)
        return replace(self, images=kept)

    # -- views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    @property
    def identities(self) -> list[str]:
        """Identity keys (folder names), sorted."""
        return sorted({im.identity for im in self.images})

    def by_identity(self) -> dict[str, list[FaceImage]]:
        groups: dict[str, list[FaceImage]] = defaultdict(list)
        for im in self.images:
            groups[im.identity].append(im)
        return dict(groups)

    def without(self, skipped: Iterable[SkippedFile]) -> FaceDataset:
        """The dataset less files found unusable later (e.g. truncated at decode), listed as skipped."""
        new = list(skipped)
        bad = {s.path for s in new}
        known = {s.path for s in self.skipped}
        return replace(
            self,
            images=[im for im in self.images if str(im.path) not in bad],
            skipped=self.skipped + [s for s in new if s.path not in known],
        )

    def union(self, other: FaceDataset) -> FaceDataset:
        """This dataset with ``other``'s images and skipped files added (same identity names are merged)."""
        seen = {im.path for im in self.images}
        return replace(
            self,
            images=self.images + [im for im in other.images if im.path not in seen],
            skipped=self.skipped + other.skipped,
            name=f"{self.name} + {other.name}",
        )

    def with_non_members(self, names: Sequence[str], folder: str | Path | None) -> tuple[FaceDataset, list[str]]:
        """This dataset with the people of ``folder`` (identity sub-folders) added, and ``names`` with theirs.

        The non-members of identity inference: names given in a file, plus everyone in ``folder``.
        """
        if folder is None:
            return self, list(names)
        outside = FaceDataset.from_folder(folder)
        return self.union(outside), [*names, *outside.identities]

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.name or str(self.root),
            "n_images": len(self.images),
            "n_identities": len(self.identities),
            "n_skipped": len(self.skipped),
        }


def list_images(root: Path, recursive: bool = True) -> tuple[list[Path], list[SkippedFile]]:
    """Files under ``root`` named like images (hidden names left out), and the image-named entries that are unusable.

    Unusable, each listed with its reason rather than silently dropped: a symbolic link that
    loops or whose target is missing, a folder named like an image (its contents are still
    scanned), a FIFO, socket or device, a folder that cannot be listed. Links to files are
    followed; links to folders are not (so no link loop is ever walked).
    """
    files: list[Path] = []
    skipped: list[SkippedFile] = []

    def walk(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(str(folder), f"cannot list folder ({exc.strerror or exc})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, named = Path(entry.path), is_image_path(Path(entry.name))
            try:
                mode = os.stat(entry.path).st_mode  # follows links
            except OSError as exc:
                if named:
                    skipped.append(SkippedFile(str(path), _unreachable(entry, exc)))
                continue
            if stat.S_ISDIR(mode):
                if named:
                    skipped.append(SkippedFile(str(path), "a folder, not an image file"))
                if recursive and not entry.is_symlink():
                    walk(path)
            elif named:
                if stat.S_ISREG(mode):
                    files.append(path)
                else:
                    skipped.append(SkippedFile(str(path), "not a regular file (a FIFO, socket or device)"))

    walk(Path(root))
    return sorted(files), skipped


def _unreachable(entry: os.DirEntry, exc: OSError) -> str:
    if entry.is_symlink():
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself)"
        if exc.errno == errno.ENOENT:
            return f"broken symbolic link (its target {os.readlink(entry.path)!r} does not exist)"
    return f"cannot read file ({exc.strerror or exc})"


def _scan(root: Path, max_pixels: int | None) -> tuple[list[FaceImage], list[SkippedFile]]:
    images: list[FaceImage] = []
    files, skipped = list_images(root)
    for path in files:
        if path.parent == root:
            skipped.append(SkippedFile(str(path), "image outside an identity folder"))
            continue
        if max_pixels is not None:
            try:
                probe_image(path, max_pixels=max_pixels)
            except ImageError as exc:
                skipped.append(SkippedFile(str(path), exc.reason))
                continue
        images.append(FaceImage(path=path, identity=path.parent.name))
    return images, skipped


def labels_of(images: Sequence[FaceImage]) -> list[str]:
    """Identity key of each image."""
    return [im.identity for im in images]
