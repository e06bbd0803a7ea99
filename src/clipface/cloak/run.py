"""Running a cloak: surrogates, the batch optimisation (Fawkes or LowKey), the budget fit, saved PNGs and records.

Only the union of the surrogates' crops (grown by the jitter around face boxes) is perturbed,
so the saved PNG is the full image with a cloaked face.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.dataset import FaceDataset, FaceImage, SkippedFile, bundled_path
from ..data.images import load_image
from ..embed.options import RunOptions
from ..errors import ClipfaceError, ImageError, NoFaceError
from ..files import file_sha256, write_json
from ..models.base import TorchEncoder
from ..models.runtime import load_encoder
from ..textsafe import readable
from . import fawkes, lowkey
from .budget import budget_measure, fit_budget_region, image_stats, within_budget
from .eot import apply_eot
from .io import cloak_destination, load_record, record_agrees, save_cloak, scan_input
from .settings import CloakSettings
from .ssim import WINDOW, dssim, ssim_map
from .targets import Target, plan_targets, seed_for
from .views import Box, View, to_tensor, view_for

__all__ = ["CloakRun", "cloak_folder", "cloak_images", "load_surrogates"]


def load_surrogates(names: Sequence[str], opts: RunOptions) -> list[TorchEncoder]:
    """Load the surrogate encoders, checking that each is differentiable."""
    if not names:
        raise ClipfaceError("cloaking needs at least one surrogate model (--surrogate)")
    out = []
    for name in names:
        encoder = load_encoder(name, opts)
        if not isinstance(encoder, TorchEncoder):
            raise ClipfaceError(
                f"surrogate {name} is not differentiable: use a torch model such as facenet-casia or a CLIP model"
            )
        # channels-last runs FaceNet's convolutions about twice as fast on CPU (same results)
        encoder.module.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        out.append(encoder)
    return out


@dataclass
class _Item:
    image: FaceImage
    dest: Path
    original: np.ndarray  # full resolution, uint8
    work: torch.Tensor  # (3, h, w) in [0, 1] at the working resolution
    scale: float  # working / full resolution
    views: list[View]
    target: Target | None


@dataclass
class CloakRun:
    """Outcome of a cloak run: one record per cloak (made now or reused) and the files skipped."""

    settings: CloakSettings
    digest: str
    surrogates: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0  # optimisation and budget fitting of the cloaks computed now

    def summary(self) -> dict[str, Any]:
        """The summary JSON: settings, counts, achieved budget and speed."""

        def stat(key: str, fn: Any) -> float | None:
            vals = [r[key] for r in self.records if r.get(key) is not None]
            return float(fn(vals)) if vals else None

        return {
            "settings": self.settings.to_dict(),
            "settings_hash": self.digest,
            "surrogates": self.surrogates,
            "n_cloaks": len(self.records),
            "computed": self.computed,
            "reused": self.reused,
            "shipped": sum(1 for r in self.records if r.get("seeded_from")),  # of the reused: shipped with clipface
            "budget": self.settings.budget,
            "budget_measure": budget_measure(self.settings.region),
            "dssim_max": stat("dssim", max),
            "dssim_mean": stat("dssim", np.mean),
            "dssim_crop_max": stat("dssim_crop", max),
            "dssim_crop_mean": stat("dssim_crop", np.mean),
            "within_budget": within_budget(self.records, self.settings.budget),
            "linf_max": stat("linf", max),
            "linf_mean": stat("linf", np.mean),
            "psnr_mean": stat("psnr", np.mean),
            "seconds": round(self.seconds, 2),
            "images_per_second": self.computed / self.seconds if self.computed and self.seconds else None,
            "seconds_per_image_when_made": stat("seconds", np.mean),
            "skipped": [s.to_dict() for s in self.skipped],
        }


def _prepare(
    im: FaceImage, dest: Path, surrogates: Sequence[TorchEncoder], settings: CloakSettings, target: Target | None
) -> _Item:
    pil = load_image(im.path)
    original = np.asarray(pil)
    scale = min(1.0, settings.work_side / max(pil.size))
    work = (
        pil
        if scale == 1.0
        else pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.LANCZOS)
    )
    work.filename = str(im.path)  # type: ignore[attr-defined]  # names the file in front-end errors
    if min(work.size) < WINDOW:
        raise ImageError(im.path, f"image too small to cloak ({pil.width}x{pil.height})")
    views = [view_for(enc, work) for enc in surrogates]
    left, top, right, bottom = _union([v.box for v in views], 1.0, work.width, work.height)
    if settings.region == "face" and min(right - left, bottom - top) < WINDOW:
        raise ImageError(im.path, f"face region too small to measure DSSIM ({right - left}x{bottom - top})")
    return _Item(im, dest, original, to_tensor(np.asarray(work)), scale, views, target)


def _union(boxes: Sequence[Box], factor: float, width: int, height: int) -> Box:
    """Union of ``boxes`` scaled by ``factor`` (working to full resolution), clipped to the image."""
    return (
        max(0, math.floor(min(b[0] for b in boxes) * factor)),
        max(0, math.floor(min(b[1] for b in boxes) * factor)),
        min(width, math.ceil(max(b[2] for b in boxes) * factor)),
        min(height, math.ceil(max(b[3] for b in boxes) * factor)),
    )


def _grow(box: Box, margin: int, width: int, height: int) -> Box:
    """``box`` grown by ``margin`` pixels on every side, clipped to the image."""
    return (max(0, box[0] - margin), max(0, box[1] - margin), min(width, box[2] + margin), min(height, box[3] + margin))


def _cut(x: torch.Tensor, box: Box) -> torch.Tensor:
    """The ``box`` of a ``(3, H, W)`` image."""
    return x[:, box[1] : box[3], box[0] : box[2]]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def _cloak_batch(
    items: list[_Item], surrogates: Sequence[TorchEncoder], settings: CloakSettings, digest: str
) -> list[dict[str, Any]]:
    """Optimise, fit to the budget and save a batch of cloaks.

    Only the union of the surrogates' crops (``boxes``, grown by the jitter around face boxes) is
    perturbed. With the whole-image budget, DSSIM is computed on that box plus the SSIM window
    around it: every window outside sees unchanged pixels and has SSIM 1 exactly, so the mean
    over the image follows.
    """
    start = time.perf_counter()
    face = settings.region == "face"
    boxes = [
        _grow(
            _union([v.box for v in it.views], 1.0, it.work.shape[2], it.work.shape[1]),
            settings.jitter if any(v.resized is None for v in it.views) else 0,
            it.work.shape[2],
            it.work.shape[1],
        )
        for it in items
    ]
    regions = [_grow(b, WINDOW - 1, it.work.shape[2], it.work.shape[1]) for b, it in zip(boxes, items)]
    xs = [_cut(it.work, b) for it, b in zip(items, boxes)]

    def paste(i: int, img: torch.Tensor) -> torch.Tensor:
        full = items[i].work.clone()
        left, top, right, bottom = boxes[i]
        full[:, top:bottom, left:right] = img
        return full

    jitter = torch.Generator().manual_seed(seed_for(settings.seed, "jitter:" + str(items[0].image.path)))

    def embed(
        images: list[torch.Tensor], transform: lowkey.Transform | None, exact: bool = False
    ) -> list[torch.Tensor]:
        fulls = [paste(i, img)[None] for i, img in enumerate(images)]
        out = []
        for s, enc in enumerate(surrogates):
            views = [
                it.views[s]
                if exact
                else it.views[s].jittered(settings.jitter, jitter, it.work.shape[2], it.work.shape[1])
                for it in items
            ]
            inp = torch.cat([v(full) for v, full in zip(views, fulls)])
            if settings.eot and not exact:
                inp = apply_eot(inp, settings.eot, jitter)
            inp = transform(inp) if transform is not None else inp
            out.append(enc.embed_pixels(inp.contiguous(memory_format=torch.channels_last)))
        return out

    def dissim(images: list[torch.Tensor]) -> torch.Tensor:
        if face:
            return torch.cat([dssim(img[None], x[None]) for img, x in zip(images, xs)])
        out = []
        for i, img in enumerate(images):
            _, h, w = items[i].work.shape
            local = ssim_map(_cut(paste(i, img), regions[i])[None], _cut(items[i].work, regions[i])[None])
            total = 3 * (h - WINDOW + 1) * (w - WINDOW + 1)
            out.append((1 - (local.sum() + (total - local.numel())) / total) / 2)
        return torch.stack(out)

    gens = [torch.Generator().manual_seed(seed_for(settings.seed, str(it.image.path))) for it in items]
    if isinstance(settings.params, fawkes.FawkesParams):
        targets = [torch.from_numpy(np.stack([it.target.features[s] for it in items])) for s in range(len(surrogates))]  # type: ignore[union-attr]
        deltas = fawkes.optimise(xs, embed, targets, dissim, settings.params, gens)
    else:
        with torch.no_grad():
            clean = embed(xs, None, exact=True)
        deltas = lowkey.optimise(xs, embed, clean, dissim, settings.params, gens)  # type: ignore[arg-type]
    shared = (time.perf_counter() - start) / len(items)
    records = []
    for it, delta, box in zip(items, deltas, boxes):
        own_start = time.perf_counter()
        h, w = it.original.shape[:2]
        crop = _union([box], 1.0 / it.scale, w, h)  # the perturbed box at full resolution
        patch = delta.detach()[None]
        size = (crop[3] - crop[1], crop[2] - crop[0])
        if patch.shape[-2:] != size:  # only the box is brought to full resolution, never the whole photo
            patch = F.interpolate(patch, size=size, mode="bilinear", align_corners=False)
        d = patch[0].permute(1, 2, 0).cpu().numpy() * 255.0
        del patch
        cloak, scale, _ = fit_budget_region(it.original, d, crop, settings.budget, face=face)
        del d
        seconds = shared + time.perf_counter() - own_start  # the batch's optimisation, shared, and this budget fit
        record = {
            "source": str(it.image.path),
            "source_sha256": file_sha256(it.image.path),
            "identity": it.image.identity,
            "cloak": str(it.dest),
            "method": settings.method,
            "mode": settings.mode,
            "budget": settings.budget,
            "region": settings.region,
            "settings_hash": digest,
            "surrogates": [s.name for s in surrogates],
            "size": [w, h],
            "work_scale": it.scale,
            **image_stats(it.original, cloak, crop, changed=crop),
            "crop": list(crop),
            "budget_scale": scale,
            "steps": settings.steps,
            "seconds": round(seconds, 3),
            **_feature_stats(it, cloak, surrogates),
        }
        save_cloak(it.dest, cloak, record)
        records.append(record)
    return records


def _feature_stats(it: _Item, cloak: np.ndarray, surrogates: Sequence[TorchEncoder]) -> dict[str, Any]:
    """Cosine distance original -> cloak through each surrogate's own pipeline (and to the target)."""
    shift: dict[str, float | None] = {}
    towards: dict[str, dict[str, float] | None] = {}
    for s, enc in enumerate(surrogates):
        try:
            a, b = enc.encode_images([Image.fromarray(it.original), Image.fromarray(cloak)])
        except NoFaceError:  # the front end finds no face in the cloak: it is hidden from this model
            shift[enc.name] = towards[enc.name] = None
            continue
        shift[enc.name] = 1.0 - _cosine(a, b)
        if it.target is not None:
            t = it.target.features[s]
            towards[enc.name] = {"original": _cosine(a, t), "cloak": _cosine(b, t)}
    out: dict[str, Any] = {"feature_shift": shift}
    if it.target is not None:
        out.update(target=it.target.identity, target_image=str(it.target.image), target_similarity=towards)
    return out


def _seeded(seed: Path, im: FaceImage, dest: Path, relative: Path, expect: dict[str, Any]) -> dict[str, Any] | None:
    """A cloak made earlier (``seed/relative``, its changed box as a PNG) pasted onto ``im``, saved at ``dest``.

    Used only when its record agrees with ``expect`` (settings hash, Fawkes target, the source photo's
    SHA-256) and the pasted cloak is within the budget on this machine's decoding of the photo;
    the record's image statistics are measured again here. ``None``: make it anew.
    """
    found = seed / relative
    record = load_record(found)
    if not record_agrees(record, expect):
        return None
    try:
        original = np.asarray(load_image(im.path))
        patch = np.asarray(Image.open(found).convert("RGB"))
        left, top, right, bottom = (int(v) for v in record["crop"])
    except (OSError, ValueError, KeyError, TypeError, ImageError):
        return None
    height, width = original.shape[:2]
    inside = 0 <= left < right <= width and 0 <= top < bottom <= height
    if not inside or [width, height] != record.get("size") or patch.shape != (bottom - top, right - left, 3):
        return None
    cloak = original.copy()
    cloak[top:bottom, left:right] = patch
    crop = (left, top, right, bottom)
    record = {**record, "source": str(im.path), "cloak": str(dest), "seeded_from": seed.name}
    record.update(image_stats(original, cloak, crop, changed=crop))
    if record.get("budget") is not None and not within_budget([record], record["budget"]):
        return None
    save_cloak(dest, cloak, record)
    return record


def cloak_images(
    images: Sequence[FaceImage],
    root: Path,
    out: Path,
    settings: CloakSettings,
    surrogates: Sequence[TorchEncoder],
    opts: RunOptions,
    candidates: dict[str, list[FaceImage]] | None = None,
    batch_size: int = 4,
    seed: Path | None = None,
) -> CloakRun:
    """Cloak ``images`` (under ``root``) into ``out``, reusing cloaks already there with the same settings.

    ``candidates`` are the identities Fawkes may target (identity -> images); a user's own
    identity is never its target. ``seed``: a folder of cloaks made earlier in the same layout
    (the ones clipface ships, :func:`~clipface.cloak.io.shipped_cloaks`); one whose settings hash,
    target and source bytes match is copied into ``out`` instead of being made again. Images that
    cannot be read or whose face a surrogate's front end cannot find are listed in ``skipped``.
    """
    digest = settings.digest(surrogates)
    run = CloakRun(settings, digest, [s.name for s in surrogates])
    plan = plan_targets(images, candidates or {}, surrogates, settings, opts) if settings.method == "fawkes" else {}
    todo: list[tuple[FaceImage, Path]] = []
    for im in images:
        dest = cloak_destination(out, root, im.path)
        record = load_record(dest)
        target = plan.get(im.path)
        expect = {"settings_hash": digest, "target": readable(target.identity) if target else None}  # as JSON shows it
        if not record_agrees(record, expect) and seed is not None:
            expect["source_sha256"] = file_sha256(im.path)
            record = _seeded(seed, im, dest, dest.relative_to(out), expect)
        if record_agrees(record, expect):
            run.records.append(record)
            run.reused += 1
        else:
            todo.append((im, dest))
    bar = tqdm(
        total=len(todo),
        desc=f"cloak {settings.method} {settings.mode}",
        unit="img",
        disable=not opts.progress or not todo,
    )
    for i in range(0, len(todo), batch_size):
        items = []
        for im, dest in todo[i : i + batch_size]:
            try:
                item = _prepare(im, dest, surrogates, settings, plan.get(im.path))
            except ImageError as exc:
                run.skipped.append(SkippedFile(str(im.path), exc.reason))
                continue
            if settings.method == "fawkes" and item.target is None:
                run.skipped.append(
                    SkippedFile(str(im.path), "no target: the surrogates could not embed this person's photos")
                )
            else:
                items.append(item)
        if items:
            start = time.perf_counter()
            run.records.extend(_cloak_batch(items, surrogates, settings, digest))
            run.seconds += time.perf_counter() - start
            run.computed += len(items)
        bar.update(len(todo[i : i + batch_size]))
    bar.close()
    return run


def cloak_folder(
    src: Path,
    out: Path,
    settings: CloakSettings,
    surrogate_names: Sequence[str],
    opts: RunOptions,
    target_dir: Path | None = None,
    batch_size: int = 4,
) -> CloakRun:
    """Cloak a folder of identity sub-folders (or a flat folder of one person) into ``out``.

    Fawkes' targets come from ``target_dir`` (identity sub-folders), else from the other identities
    of ``src``, and where it has none (a flat folder of one person's photos), from the bundled
    dataset's ten people, as Fawkes picks its targets from a set it ships. Writes
    ``out/cloak_summary.json``.
    """
    root, images, skipped = scan_input(Path(src), exclude=Path(out))
    surrogates = load_surrogates(surrogate_names, opts)
    candidates = None
    if settings.method == "fawkes":
        pool = FaceDataset.from_folder(target_dir).images if target_dir is not None else images
        if target_dir is None and len({im.identity for im in images}) < 2:
            pool = [*pool, *FaceDataset.from_folder(bundled_path()).images]
        candidates = defaultdict(list)
        for im in pool:
            candidates[im.identity].append(im)
    run = cloak_images(images, root, Path(out), settings, surrogates, opts, candidates, batch_size)
    run.skipped = skipped + run.skipped
    write_json(Path(out) / "cloak_summary.json", run.summary())
    return run
