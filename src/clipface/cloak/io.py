"""Cloaked images on disk: clipface's own outputs and the layouts other tools write.

clipface writes each cloak losslessly as ``OUT/<path relative to the input>.png`` with a JSON
record of the same name beside it (what was achieved: DSSIM, L-inf, PSNR, feature shift...).

Cloaks made elsewhere are read as ``(original, cloaked, identity)`` triples from either layout:

* **suffix layout**, one folder tree (the dataset released with the Fawkes paper, FaceCure):
  ``NAME.jpg`` beside ``NAME_cloaked.png`` or ``NAME_<mode>_cloaked.png`` (Fawkes) and
  ``NAME_attacked.png`` (LowKey; its resized input ``NAME_small.png`` is neither original
  nor cloak);
* **paired roots**: an original and a cloaked folder with the same identity sub-folders, files
  matched by name (a cloak's stem may carry one of the suffixes above), as clipface writes.

The identity is the image's folder, or the folder above it when that is called ``face`` (the
FaceScrub layout ``NAME/face/*.jpg``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..data.dataset import FaceDataset, FaceImage, SkippedFile, list_images
from ..data.images import DEFAULT_MAX_PIXELS, is_image_path, probe_image
from ..errors import DatasetError, ImageError
from ..files import write_json

#: Stem suffixes of cloaks made by other tools, by method.
SUFFIXES = {"fawkes": re.compile(r"_(?:(?:min|low|mid|high|ultra)_)?cloaked$"), "lowkey": re.compile(r"_attacked$")}
#: Stems of derived files that are neither originals nor cloaks.
DERIVED = re.compile(r"_(?:small|(?:(?:min|low|mid|high|ultra)_)?cloaked|attacked)$")


class CloakedTriple(NamedTuple):
    """An original image, its cloaked copy and the person's identity (folder name)."""

    original: Path
    cloaked: Path
    identity: str


# -- clipface's own outputs -----------------------------------------------------------------------
def cloak_destination(out: Path, root: Path, source: Path) -> Path:
    """Where the cloak of ``source`` (under ``root``) is written: same relative path, ``.png``."""
    return out / source.relative_to(root).with_suffix(".png")


def record_path(cloak: Path) -> Path:
    """The JSON record beside a cloak."""
    return cloak.with_suffix(".json")


def save_cloak(dest: Path, pixels: np.ndarray, record: dict[str, Any]) -> None:
    """Write ``pixels`` (``H x W x 3`` uint8) as a PNG, atomically, then its JSON record."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, dest)
    write_json(record_path(dest), record)


def load_record(dest: Path) -> dict[str, Any] | None:
    """The record of an existing cloak, or ``None`` when the PNG or a readable record is missing."""
    meta = record_path(dest)
    if not dest.is_file() or not meta.is_file():
        return None
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


#: Cloaks that ship with clipface (the bundled dataset's, made by clipface), one folder per settings hash. Each
#: shipped cloak is its changed box only (``crop`` in its record) as a PNG, pasted onto the source photo when used.
BUNDLED_CLOAKS = "cloaks"


def shipped_cloaks(folder_name: str) -> Path | None:
    """The folder of shipped cloaks named ``folder_name`` (``METHOD-MODE-SURROGATES-HASH``), if clipface ships it."""
    from importlib import resources

    path = Path(str(resources.files("clipface.assets").joinpath(BUNDLED_CLOAKS, folder_name)))
    return path if path.is_dir() else None


def ship_cloaks(folder: Path, root: Path, dest: Path) -> int:
    """Copy the cloaks in ``folder`` (made from photos under ``root``) to ``dest`` in the shipped form; how many.

    Each cloak becomes its changed box (``crop``) as a PNG, with its record, whose paths are made
    relative to ``root`` and which gains the source photo's SHA-256 (what a reuse must match).
    """
    import shutil

    from ..files import file_sha256

    shutil.rmtree(dest, ignore_errors=True)
    n = 0
    for meta in sorted(Path(folder).rglob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or "crop" not in record:  # cloak_summary.json and the like
            continue
        source = Path(record["source"])
        relative = source.resolve().relative_to(Path(root).resolve())
        left, top, right, bottom = record["crop"]
        out = dest / relative.with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        box = Image.open(meta.with_suffix(".png")).convert("RGB").crop((left, top, right, bottom))
        box.save(out, format="PNG", optimize=True)
        record.update(source=str(relative), cloak=str(relative.with_suffix(".png")), source_sha256=file_sha256(source))
        target = record.get("target_image")
        if target and Path(target).is_absolute() and Path(target).resolve().is_relative_to(Path(root).resolve()):
            record["target_image"] = str(Path(target).resolve().relative_to(Path(root).resolve()))
        write_json(out.with_suffix(".json"), record)
        n += 1
    return n


def record_agrees(record: dict[str, Any] | None, expect: dict[str, Any]) -> bool:
    """Whether a cloak's record holds every value of ``expect`` (settings hash, target, source bytes...)."""
    return record is not None and all(record.get(k) == v for k, v in expect.items())


def scan_input(path: Path, exclude: Path | None = None) -> tuple[Path, list[FaceImage], list[SkippedFile]]:
    """Images to cloak under ``path``: identity sub-folders, or a flat folder of one person's images.

    Returns the root, the images and the files skipped with a reason. Files under ``exclude``
    (the output folder) and cloaks made by other tools (``*_cloaked``, ``*_attacked``) are left out.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: input folder does not exist")
    excluded = Path(exclude).expanduser().resolve() if exclude is not None else None

    def keep(p: Path) -> bool:
        return not DERIVED.search(p.stem) and (excluded is None or not p.resolve().is_relative_to(excluded))

    here, unusable = list_images(root, recursive=False)
    flat = [p for p in here if keep(p)]
    if not flat:
        ds = FaceDataset.from_folder(root)
        images = [im for im in ds.images if keep(im.path)]
        return root, images, ds.skipped
    images, skipped = [], list(unusable)
    for p in flat:
        try:
            probe_image(p, max_pixels=DEFAULT_MAX_PIXELS)
        except ImageError as exc:
            skipped.append(SkippedFile(str(p), exc.reason))
            continue
        images.append(FaceImage(path=p, identity=root.name))
    return root, images, skipped


# -- cloaks made elsewhere ------------------------------------------------------------------------
def _identity(path: Path) -> str:
    parent = path.parent
    return parent.parent.name if parent.name.lower() == "face" else parent.name


def _method_of(stem: str) -> tuple[str, str] | None:
    """``(method, original stem)`` of a cloak's file stem, or ``None`` for a non-cloak."""
    for method, pattern in SUFFIXES.items():
        found = pattern.search(stem)
        if found:
            return method, stem[: found.start()]
    return None


def read_suffix_layout(root: Path, method: str | None = None) -> list[CloakedTriple]:
    """Triples from one tree where each cloak sits beside its original (``NAME_cloaked.png`` ...)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: cloaked dataset folder does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    by_stem: dict[tuple[Path, str], Path] = {}
    for p in files:
        by_stem.setdefault((p.parent, p.stem), p)
    triples = []
    for p in files:
        found = _method_of(p.stem)
        if found is None or (method is not None and found[0] != method):
            continue
        original = by_stem.get((p.parent, found[1]))
        if original is not None:
            triples.append(CloakedTriple(original, p, _identity(original)))
    return triples


def read_paired_roots(original_root: Path, cloaked_root: Path) -> list[CloakedTriple]:
    """Triples from two trees with the same identity sub-folders, matched by identity and stem."""
    originals = FaceDataset.from_folder(original_root, validate=False)
    cloaked_root = Path(cloaked_root).expanduser()
    if not cloaked_root.is_dir():
        raise DatasetError(f"{cloaked_root}: cloaked dataset folder does not exist")
    index = {(_identity(im.path), im.path.stem): im.path for im in originals.images if not DERIVED.search(im.path.stem)}
    triples = []
    for p in sorted(q for q in cloaked_root.rglob("*") if q.is_file() and is_image_path(q)):
        found = _method_of(p.stem)
        stem = found[1] if found else p.stem
        original = index.get((_identity(p), stem))
        if original is not None:
            triples.append(CloakedTriple(original, p, _identity(original)))
    return triples


def read_cloaked(path: Path, original_root: Path, method: str | None = None) -> list[CloakedTriple]:
    """Cloaked triples under ``path``: the suffix layout if it has one, else paired with ``original_root``."""
    triples = read_suffix_layout(path, method) or read_paired_roots(original_root, path)
    if not triples:
        raise DatasetError(f"{path}: no cloaked images matched to originals (in it or in {original_root})")
    return triples


def originals_only(dataset: FaceDataset) -> FaceDataset:
    """``dataset`` less the cloaks and derived copies that other tools leave beside the originals."""
    return replace(dataset, images=[im for im in dataset.images if not DERIVED.search(im.path.stem)])
