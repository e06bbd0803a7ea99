"""Cloaking: small image changes that move a face in a recogniser's feature space.

Two methods optimise a perturbation of the whole image at a working resolution (the image's own,
up to ``work_side`` pixels): :mod:`~clipface.cloak.fawkes` (targeted, toward another identity)
and :mod:`~clipface.cloak.lowkey` (untargeted, away from the original). Surrogates are any
differentiable encoders (:class:`~clipface.encoders.base.TorchEncoder`: FaceNet, CLIP), one or an
ensemble; each sees a differentiable copy of its own front end's crop of the image
(:class:`View`: the MTCNN face box for FaceNet, the centre crop for CLIP), and only the union of
those crops is perturbed, so the saved PNG is the full image with a cloaked face. Each cloak is
then held to its DSSIM budget exactly: :func:`fit_budget` scales the perturbation down
(bisection) until the DSSIM of the saved uint8 pixels is within the budget.

``mode`` sets the budget: the DSSIM thresholds of Fawkes v1.0 (``protection.py``
``mode2param``), low 0.004, mid 0.012, high 0.017, for both methods, so that they compare.
``region`` says where DSSIM is measured: ``image`` (default), the whole saved picture, or
``face``, the union of the surrogates' crops, which is where Fawkes measures it (on its aligned
112 px face). On a 250 px LFW photo the face box is about a third of the picture, so an
``image`` budget allows roughly three times Fawkes' DSSIM on the face; every record reports both
(``dssim``, ``dssim_crop``).
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..align import CenterCropAligner, CenterFallback, MtcnnAligner, image_label
from ..dataset import FaceImage, SkippedFile
from ..embed import embed_images
from ..encoders.base import Encoder, TorchEncoder
from ..errors import ClipfaceError, ImageError, NoFaceError
from ..evaluate import RunOptions, load_encoder
from ..images import load_image
from ..report import write_json
from . import fawkes, lowkey
from .io import cloak_destination, load_record, save_cloak, scan_input
from .ssim import WINDOW, dssim, dssim_uint8, ssim_map

__all__ = [
    "MODES",
    "METHODS",
    "REGIONS",
    "CloakRun",
    "CloakSettings",
    "View",
    "cloak_folder",
    "cloak_images",
    "budget_measure",
    "fit_budget",
    "image_stats",
    "load_surrogates",
    "to_tensor",
    "view_for",
    "within_budget",
]

#: DSSIM budget of each mode (Fawkes v1.0 ``th``).
MODES: dict[str, float] = {"low": 0.004, "mid": 0.012, "high": 0.017}
METHODS = ("fawkes", "lowkey")
#: Where the DSSIM budget is measured: the whole image, or the union of the surrogates' crops.
REGIONS = ("image", "face")
#: Largest mean absolute difference (0-255 scale) allowed between a :class:`View` of an image and
#: the encoder's own ``prepare`` of it; beyond it the cloak would optimise the wrong pixels.
VIEW_TOLERANCE = 3.0
Box = tuple[int, int, int, int]  # left, top, right, bottom


# -- what each surrogate sees ---------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A differentiable copy of one encoder's front end for one image.

    With ``resized`` unset: crop ``box``, resize it to ``size`` (bilinear, antialiased: PIL's
    resize, as MTCNN's FaceNet crop). With ``resized = (w, h)``: resize the image to it (bicubic,
    antialiased) and crop ``size`` pixels at ``offset`` (CLIP's centre crop). ``box`` is in both
    cases the part of the image the model sees.
    """

    box: Box
    size: int
    resized: tuple[int, int] | None = None
    offset: tuple[int, int] = (0, 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` pixels in [0, 1] to the model's ``(N, 3, size, size)`` input."""
        s = self.size
        if self.resized is None:
            left, top, right, bottom = self.box
            return F.interpolate(x[..., top:bottom, left:right], size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        w, h = self.resized
        if (w, h) != (x.shape[-1], x.shape[-2]):
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        left, top = self.offset
        return x[..., top : top + s, left : left + s]

    def jittered(self, jitter: int, generator: torch.Generator, width: int, height: int) -> View:
        """A box view with each edge moved by up to ``jitter`` pixels at random (centre crops stay as they are)."""
        if self.resized is not None or jitter == 0:
            return self
        dl, dt, dr, db = torch.randint(-jitter, jitter + 1, (4,), generator=generator).tolist()
        left, top = min(max(0, self.box[0] + dl), width - 1), min(max(0, self.box[1] + dt), height - 1)
        right, bottom = max(min(width, self.box[2] + dr), left + 1), max(min(height, self.box[3] + db), top + 1)
        return View(box=(left, top, right, bottom), size=self.size)


def _center_view(width: int, height: int, size: int) -> View:
    """:func:`~clipface.encoders.base.resize_center_crop` as a :class:`View`."""
    nw, nh = width, height
    if (width, height) != (size, size):
        nw, nh = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    box = (
        max(0, math.floor(left * width / nw)),
        max(0, math.floor(top * height / nh)),
        min(width, math.ceil((left + size) * width / nw)),
        min(height, math.ceil((top + size) * height / nh)),
    )
    return View(box=box, size=size, resized=(nw, nh), offset=(left, top))


def _mtcnn_view(aligner: MtcnnAligner, image: Image.Image, size: int) -> View:
    """The box of :meth:`MtcnnAligner.crop`."""
    return View(box=aligner.box(image), size=size)


def _aligned_view(aligner: Any, image: Image.Image, size: int) -> View:
    if aligner is None or isinstance(aligner, CenterCropAligner):
        return _center_view(image.width, image.height, size)
    if isinstance(aligner, CenterFallback):
        try:
            return _aligned_view(aligner.inner, image, size)
        except NoFaceError:
            return _center_view(image.width, image.height, size)
    if isinstance(aligner, MtcnnAligner):
        return _mtcnn_view(aligner, image, size)
    raise ClipfaceError(f"face front end {aligner.id} cannot be differentiated: cloaks support the mtcnn and centre-crop front ends")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 to a ``(3, H, W)`` float32 tensor in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


def view_for(encoder: Encoder, image: Image.Image) -> View:
    """The :class:`View` of ``encoder``'s front end on ``image``, checked against ``encoder.prepare``.

    Raises :class:`~clipface.errors.NoFaceError` where the front end finds no face.
    """
    view = _aligned_view(encoder.aligner, image, encoder.image_size)
    reference = encoder.prepare(image).astype(np.float32)
    with torch.no_grad():
        mine = view(to_tensor(np.asarray(image.convert("RGB")))[None])[0].permute(1, 2, 0).numpy() * 255.0
    gap = float(np.abs(mine - reference).mean())
    if gap > VIEW_TOLERANCE:
        raise ClipfaceError(f"{image_label(image)}: the cloak's copy of {encoder.name}'s front end differs from it (mean |diff| {gap:.1f} of 255)")
    return view


# -- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CloakSettings:
    """What a cloak run does; with the surrogates, it names the outputs (:meth:`digest`)."""

    method: str = "fawkes"
    mode: str = "high"
    enforce_budget: bool = True
    region: str = "image"
    work_side: int = 1024
    seed: int = 0
    params: fawkes.FawkesParams | lowkey.LowKeyParams | None = None  # None: the method's defaults
    #: Largest random move, in pixels, of each edge of a face box at every step (0: as published).
    #: Front ends detect the face again on the cloak and find a box a few pixels off; optimising
    #: over such moves (an expectation over transformations) keeps the cloak aligned with them.
    jitter: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ClipfaceError(f"unknown cloaking method {self.method!r}: choose {' or '.join(METHODS)}")
        if self.mode not in MODES:
            raise ClipfaceError(f"unknown cloaking mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.region not in REGIONS:
            raise ClipfaceError(f"unknown budget region {self.region!r}: choose {' or '.join(REGIONS)}")
        if self.jitter < 0:
            raise ClipfaceError(f"jitter must be >= 0 pixels, got {self.jitter}")
        kind = fawkes.FawkesParams if self.method == "fawkes" else lowkey.LowKeyParams
        if self.params is None:
            object.__setattr__(self, "params", fawkes.fawkes_params(self.mode) if self.method == "fawkes" else lowkey.LowKeyParams())
        elif not isinstance(self.params, kind):
            raise ClipfaceError(f"cloaking method {self.method} needs {kind.__name__}, not {type(self.params).__name__}")

    @property
    def budget(self) -> float | None:
        """The DSSIM budget every saved cloak satisfies (``None``: no hard budget)."""
        return MODES[self.mode] if self.enforce_budget else None

    @property
    def steps(self) -> int:
        """Optimisation steps: Fawkes' ``max_step`` or LowKey's iterations."""
        p = self.params
        return p.max_step if isinstance(p, fawkes.FawkesParams) else p.steps  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["budget"] = self.budget
        return out

    def digest(self, surrogates: Sequence[Encoder]) -> str:
        """Hash of the settings and the surrogates' weights and front ends (resumes match on it)."""
        doc = {
            "version": 1,
            **self.to_dict(),
            "surrogates": [[s.name, s.fingerprint, s.preprocess_id] for s in surrogates],
        }
        return hashlib.sha256(repr(sorted(doc.items())).encode()).hexdigest()[:16]


def load_surrogates(names: Sequence[str], opts: RunOptions) -> list[TorchEncoder]:
    """Load the surrogate encoders, checking that each is differentiable."""
    if not names:
        raise ClipfaceError("cloaking needs at least one surrogate model (--surrogate)")
    out = []
    for name in names:
        encoder = load_encoder(name, opts)
        if not isinstance(encoder, TorchEncoder):
            raise ClipfaceError(f"surrogate {name} is not differentiable: use a torch model such as facenet-casia or a CLIP model")
        # channels-last runs FaceNet's convolutions about twice as fast on CPU (same results)
        encoder.module.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        out.append(encoder)
    return out


# -- budget and measurements ----------------------------------------------------------------------
def _crop(a: np.ndarray, box: Box | None) -> np.ndarray:
    return a if box is None else a[box[1] : box[3], box[0] : box[2]]


def fit_budget(
    original: np.ndarray, delta: np.ndarray, budget: float | None, box: Box | None = None, iterations: int = 20
) -> tuple[np.ndarray, float, float]:
    """The uint8 cloak ``original + s * delta`` with the largest ``s`` in [0, 1] within ``budget``.

    ``original`` is ``H x W x 3`` uint8, ``delta`` the perturbation on the 0-255 scale. The DSSIM
    is that of the rounded, clipped uint8 pixels that are saved, over ``box`` (the whole image
    if ``None``); ``s = 1`` is kept when within the budget (or when ``budget`` is ``None``), else
    ``s`` is bisected and only a measured, feasible ``s`` is returned (``s = 0`` is the original).
    Returns ``(cloak, s, dssim)``.
    """
    base = original.astype(np.float32)

    def make(s: float) -> np.ndarray:
        return np.clip(np.rint(base + s * delta), 0, 255).astype(np.uint8)

    def measure(img: np.ndarray) -> float:
        return dssim_uint8(_crop(original, box), _crop(img, box))

    full = make(1.0)
    value = measure(full)
    if budget is None or value <= budget:
        return full, 1.0, value
    lo, hi, best, best_value = 0.0, 1.0, original.copy(), 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        img = make(mid)
        v = measure(img)
        if v <= budget:
            lo, best, best_value = mid, img, v
        else:
            hi = mid
    return best, lo, best_value


def image_stats(original: np.ndarray, cloak: np.ndarray, crop: Box | None = None) -> dict[str, float | None]:
    """DSSIM (whole image and over ``crop``), L-inf (0-255) and PSNR (dB, ``None`` if identical)."""
    diff = cloak.astype(np.int16) - original.astype(np.int16)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "dssim": dssim_uint8(original, cloak),
        "dssim_crop": dssim_uint8(_crop(original, crop), _crop(cloak, crop)) if crop is not None else None,
        "linf": int(np.abs(diff).max()),
        "psnr": 10 * math.log10(255.0**2 / mse) if mse > 0 else None,
    }


def budget_measure(region: str) -> str:
    """The record field that the budget bounds: ``dssim`` (whole image) or ``dssim_crop`` (the surrogates' crops)."""
    return "dssim_crop" if region == "face" else "dssim"


def within_budget(records: Sequence[dict[str, Any]], budget: float | None) -> bool | None:
    """Whether every cloak record is within ``budget`` on its budgeted measure (``None`` without a budget or records)."""
    if budget is None or not records:
        return None
    return all(r[budget_measure(r["region"])] <= budget for r in records)


# -- running ----------------------------------------------------------------------------------------
@dataclass
class _Target:
    identity: str
    image: Path
    features: list[np.ndarray]  # one per surrogate


@dataclass
class _Item:
    image: FaceImage
    dest: Path
    original: np.ndarray  # full resolution, uint8
    work: torch.Tensor  # (3, h, w) in [0, 1] at the working resolution
    scale: float  # working / full resolution
    views: list[View]
    target: _Target | None


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


def _seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63)


def _plan_targets(
    images: Sequence[FaceImage],
    candidates: dict[str, list[FaceImage]],
    surrogates: Sequence[TorchEncoder],
    settings: CloakSettings,
    opts: RunOptions,
) -> dict[Path, _Target]:
    """Fawkes' target for each image: a far identity per user, one of its images per image."""
    assert isinstance(settings.params, fawkes.FawkesParams)
    pool = list({im.path: im for im in [*images, *(im for ims in candidates.values() for im in ims)]}.values())
    per_model = []
    for enc in surrogates:
        res = embed_images(enc, pool, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=False)
        per_model.append({im.path: e for im, e in zip(res.images, res.embeddings)})
    usable = {p for p in (im.path for im in pool) if all(p in m for m in per_model)}

    def feats(ims: Sequence[FaceImage]) -> np.ndarray:
        return np.stack([np.concatenate([m[im.path] for m in per_model]) for im in ims])

    users: dict[str, list[FaceImage]] = defaultdict(list)
    for im in images:
        users[im.identity].append(im)
    plan: dict[Path, _Target] = {}
    for user, ims in users.items():
        mine = [im for im in ims if im.path in usable]
        cands = {c: [im for im in cims if im.path in usable] for c, cims in candidates.items() if c != user}
        cands = {c: cims for c, cims in cands.items() if cims}
        if not mine:
            continue  # every image of this user fails a front end: each is skipped later with its reason
        if not cands:
            raise ClipfaceError(f"no target identity for {user}: Fawkes needs images of other people (--target-dir)")
        rng = np.random.default_rng(_seed(settings.seed, user))
        target = fawkes.select_target(feats(mine), {c: feats(cims) for c, cims in cands.items()}, settings.params.target_top, rng)
        timgs = cands[target]
        for im, j in zip(ims, fawkes.pair_targets(len(ims), len(timgs), rng)):
            plan[im.path] = _Target(target, timgs[j].path, [m[timgs[j].path] for m in per_model])
    return plan


def _prepare(
    im: FaceImage, dest: Path, surrogates: Sequence[TorchEncoder], settings: CloakSettings, target: _Target | None
) -> _Item:
    pil = load_image(im.path)
    original = np.asarray(pil)
    scale = min(1.0, settings.work_side / max(pil.size))
    work = pil if scale == 1.0 else pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.LANCZOS)
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

    jitter = torch.Generator().manual_seed(_seed(settings.seed, "jitter:" + str(items[0].image.path)))

    def embed(images: list[torch.Tensor], transform: lowkey.Transform | None, exact: bool = False) -> list[torch.Tensor]:
        fulls = [paste(i, img)[None] for i, img in enumerate(images)]
        out = []
        for s, enc in enumerate(surrogates):
            views = [it.views[s] if exact else it.views[s].jittered(settings.jitter, jitter, it.work.shape[2], it.work.shape[1]) for it in items]
            inp = torch.cat([v(full) for v, full in zip(views, fulls)])
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

    gens = [torch.Generator().manual_seed(_seed(settings.seed, str(it.image.path))) for it in items]
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
        crop = _union([box], 1.0 / it.scale, w, h)
        d = torch.zeros_like(it.work)
        left, top, right, bottom = box
        d[:, top:bottom, left:right] = delta.detach()
        d = d[None]
        if d.shape[-2:] != (h, w):
            d = F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)
        d = d[0].permute(1, 2, 0).cpu().numpy() * 255.0
        if face:
            outside = np.ones((h, w), bool)
            outside[crop[1] : crop[3], crop[0] : crop[2]] = False
            d[outside] = 0.0
        cloak, scale, _ = fit_budget(it.original, d, settings.budget, crop if face else None)
        seconds = shared + time.perf_counter() - own_start  # the batch's optimisation, shared, and this budget fit
        record = {
            "source": str(it.image.path),
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
            **image_stats(it.original, cloak, crop),
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


def cloak_images(
    images: Sequence[FaceImage],
    root: Path,
    out: Path,
    settings: CloakSettings,
    surrogates: Sequence[TorchEncoder],
    opts: RunOptions,
    candidates: dict[str, list[FaceImage]] | None = None,
    batch_size: int = 4,
) -> CloakRun:
    """Cloak ``images`` (under ``root``) into ``out``, reusing cloaks already there with the same settings.

    ``candidates`` are the identities Fawkes may target (identity -> images); a user's own
    identity is never its target. Images that cannot be read or whose face a surrogate's front
    end cannot find are listed in ``skipped``.
    """
    digest = settings.digest(surrogates)
    run = CloakRun(settings, digest, [s.name for s in surrogates])
    plan = _plan_targets(images, candidates or {}, surrogates, settings, opts) if settings.method == "fawkes" else {}
    todo: list[tuple[FaceImage, Path]] = []
    for im in images:
        dest = cloak_destination(out, root, im.path)
        record = load_record(dest)
        target = plan.get(im.path)
        if record and record.get("settings_hash") == digest and record.get("target") == (target.identity if target else None):
            run.records.append(record)
            run.reused += 1
        else:
            todo.append((im, dest))
    bar = tqdm(total=len(todo), desc=f"cloak {settings.method} {settings.mode}", unit="img", disable=not opts.progress or not todo)
    for i in range(0, len(todo), batch_size):
        items = []
        for im, dest in todo[i : i + batch_size]:
            try:
                item = _prepare(im, dest, surrogates, settings, plan.get(im.path))
            except ImageError as exc:
                run.skipped.append(SkippedFile(str(im.path), exc.reason))
                continue
            if settings.method == "fawkes" and item.target is None:
                run.skipped.append(SkippedFile(str(im.path), "no target: the surrogates could not embed this person's photos"))
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

    Fawkes' targets come from ``target_dir`` (identity sub-folders) or else from the other
    identities of ``src``. Writes ``out/cloak_summary.json``.
    """
    from ..dataset import FaceDataset

    root, images, skipped = scan_input(Path(src), exclude=Path(out))
    surrogates = load_surrogates(surrogate_names, opts)
    candidates = None
    if settings.method == "fawkes":
        pool = FaceDataset.from_folder(target_dir).images if target_dir is not None else images
        candidates = defaultdict(list)
        for im in pool:
            candidates[im.identity].append(im)
    run = cloak_images(images, root, Path(out), settings, surrogates, opts, candidates, batch_size)
    run.skipped = skipped + run.skipped
    write_json(Path(out) / "cloak_summary.json", run.summary())
    return run
