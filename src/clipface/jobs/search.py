"""Search-engine jobs: build an index, add images to it, query it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..embed.options import RunOptions
from ..errors import UsageError, check_choice, check_float, check_int
from ..models.registry import check_models

__all__ = ["add_images", "build_index", "query_index"]


def _index_folder(index_dir: str | Path, must_exist: bool) -> Path:
    path = Path(index_dir)
    if path.exists() and not path.is_dir():
        raise UsageError("index", str(path), "is a file, not an index folder")
    if must_exist and not path.is_dir():
        raise UsageError("index", str(path), "no such index folder (build one with `clipface index build`)")
    return path


def build_index(
    model: str,
    images: Any,
    index_dir: str | Path,
    opts: RunOptions | None = None,
    *,
    kind: str = "auto",
    overwrite: bool = False,
    face_model: str | None = None,
    faces: str | None = None,
    ray: str | None = None,
    ray_workers: int = 2,
    ray_gpus_per_worker: float = 0.0,
    ray_shard_size: int = 256,
    ray_shards: str | Path | None = None,
    memory_budget: str | int | None = None,
    second_face_model: str | None = None,
) -> tuple[Any, Any]:
    """Embed ``images`` (a folder, ``bundled:NAME``, a dataset or files) with ``model`` into a new index folder.

    ``face_model``: also keep every image's faces embedded by this face recogniser (``faces``:
    ``central`` or ``all``; default central). ``faces`` without ``face_model`` uses ``model``
    itself, which must then be a face recogniser. ``second_face_model``: the same faces embedded by a second
    face recogniser too, for the fused opt-out rule (:mod:`clipface.index.fusion`).

    ``ray``: embed on a Ray cluster (its address, or ``local``) with ``ray_workers`` actors, each with
    ``ray_gpus_per_worker`` of a GPU, into embedding shards of ``ray_shard_size`` images in ``ray_shards``
    (default: the index folder's name plus ``.shards``, beside it), then merge them here
    (:mod:`clipface.index.ray`); an inverted file's codes are then added by Ray tasks and merged
    (:mod:`clipface.index.parts`).

    ``memory_budget``: the most RAM the served codes may take (``"16G"``, bytes; :mod:`clipface.index.ann.budget`),
    checked against the number of image files before any work.
    """
    from ..embed.faces import FACE_MODES
    from ..index.ann.faiss_backend import KINDS, Kind
    from ..index.store import FaceIndex
    from ..models.registry import get_spec
    from ..models.runtime import LoadOptions, load_encoder

    check_models([model] + [m for m in (face_model, second_face_model) if m])
    check_choice("kind", kind, KINDS)
    if faces is not None:
        check_choice("faces", faces, FACE_MODES)
        if face_model is None:
            if get_spec(model).family != "face":
                raise UsageError("faces", faces, f"{model} is not a face recogniser: name one with --face-model dlib")
            face_model = model
    path = _index_folder(index_dir, must_exist=False)
    budget = _check_budget(memory_budget, model, images, kind)
    opts = opts if opts is not None else RunOptions()
    if second_face_model is not None and face_model is None:
        raise UsageError("second_face_model", second_face_model, "needs a face model: give --face-model dlib too")
    if second_face_model is not None and second_face_model == face_model:
        raise UsageError("second_face_model", second_face_model, "is the face model itself: name another one")
    encoders = []
    for flag, name in (("face_model", face_model), ("second_face_model", second_face_model)):
        if name is not None and get_spec(name).family != "face":
            raise UsageError(flag, name, "not a face recogniser (choose e.g. dlib or facenet-casia)")
    for name in (face_model, second_face_model):
        # mirror-summed, as LFW verification embeds faces: the face model's recorded threshold then applies
        encoders.append(load_encoder(name, LoadOptions(device=opts.device, flip=True)) if name else None)
    face_encoder, second_face_encoder = encoders
    if ray is not None:
        plan = RayPlan(ray, ray_workers, ray_gpus_per_worker, ray_shard_size, ray_shards)
        face_encoders = (face_encoder, second_face_encoder)
        return _build_on_ray(
            plan, model, images, path, opts, kind, overwrite, face_encoders, faces or "central", budget
        )
    encoder = load_encoder(model, opts)
    return FaceIndex.build(
        encoder,
        images,
        path,
        kind=cast(Kind, kind),
        cache=opts.cache,
        align=opts.aligner,
        on_no_face=opts.on_no_face,
        overwrite=overwrite,
        batch_size=opts.batch_size,
        workers=opts.workers,
        progress=opts.progress,
        face_encoder=face_encoder,
        second_face_encoder=second_face_encoder,
        faces=faces or "central",
        memory_budget=budget,
    )


def _check_budget(memory_budget: str | int | None, model: str, images: Any, kind: str) -> int | None:
    """The budget in bytes; one line, before any work, where it cannot hold as many vectors as there are files."""
    from ..index.ann.budget import fit_budget, parse_size
    from ..index.ingest import collect_images
    from ..models.registry import get_spec

    if memory_budget is None:
        return None
    budget = memory_budget if isinstance(memory_budget, int) else parse_size(memory_budget)
    dim = get_spec(model).embed_dim
    if dim:
        fit_budget(max(1, len(collect_images(images)[0])), dim, budget, kind)
    return budget


@dataclass
class RayPlan:
    """Where and how wide an index build runs on Ray (``index build --ray``)."""

    address: str
    workers: int = 2
    gpus_per_worker: float = 0.0
    shard_size: int = 256
    shards: str | Path | None = None

    def check(self) -> None:
        check_int("ray_workers", self.workers, 1, 4096, allow_none=False)
        check_int("ray_shard_size", self.shard_size, 1, 1_000_000, allow_none=False)
        check_float("ray_gpus_per_worker", self.gpus_per_worker, 0.0, 64.0)
        if not self.address.strip():
            raise UsageError("ray", self.address, "give a cluster address (host:port) or local")

    def shard_dir(self, index_dir: Path) -> Path:
        return Path(self.shards) if self.shards is not None else index_dir.with_name(index_dir.name + ".shards")


def _build_on_ray(
    plan: RayPlan,
    model: str,
    images: Any,
    path: Path,
    opts: RunOptions,
    kind: str,
    overwrite: bool,
    face_encoders: tuple[Any, Any],
    faces: str,
    budget: int | None = None,
) -> tuple[Any, Any]:
    """Embed on the cluster into shards, then merge them into the index here (the faces, if any, embedded here);
    an inverted file's codes are added on the cluster in parts and merged here."""
    from ..index.ann.faiss_backend import Kind
    from ..index.parts import PartsBuild
    from ..index.ray import add_parts_on_ray, embed_with_ray, ray_cluster
    from ..index.store import MANIFEST, FaceIndex

    plan.check()
    if (path / MANIFEST).exists() and not overwrite:  # before any work on the cluster
        raise UsageError("index", str(path), "already holds an index (add images with `clipface index add`)")
    shards = plan.shard_dir(path)
    with ray_cluster(plan.address) as _resources:
        run = embed_with_ray(
            model,
            images,
            shards,
            num_workers=plan.workers,
            batch_size=plan.shard_size,
            weights=opts.weights.get(model),
            align=opts.aligner,
            on_no_face=opts.on_no_face,
            device=opts.device,
            gpus_per_worker=plan.gpus_per_worker,
            progress=opts.progress,
        )
        if not run.shards:
            raise UsageError("images", str(images), "no image to index")
        parts = PartsBuild(add_parts_on_ray, plan.workers)
        index, update = FaceIndex.build_from_shards(
            shards,
            path,
            cast(Kind, kind),
            overwrite=overwrite,
            face_encoder=face_encoders[0],
            second_face_encoder=face_encoders[1],
            faces=faces,
            cache=opts.cache,
            progress=opts.progress,
            memory_budget=budget,
            parts=parts,
        )
    update.computed, update.cached = run.computed, run.images - run.computed
    update.ray = {**run.to_dict(), "parts": parts.report}
    return index, update


def add_images(index_dir: str | Path, images: Any, opts: RunOptions | None = None) -> tuple[Any, Any]:
    """Append new images to an index (files already indexed are skipped); returns the index and what was done."""
    from ..index.store import FaceIndex

    index = FaceIndex.load(_index_folder(index_dir, must_exist=True), mmap=False)
    opts = opts if opts is not None else RunOptions()
    weights = next(iter(opts.weights.values()), None)
    encoder = index.load_encoder(weights=weights, device=opts.device)
    update = index.add(
        encoder, images, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress
    )
    return index, update


def query_index(
    index_dir: str | Path,
    *,
    text: str | None = None,
    image: str | Path | None = None,
    k: int = 10,
    weights: str | Path | None = None,
    device: str = "cpu",
) -> list[Any]:
    """The ``k`` best images for a text (CLIP models) or a photo (any model), as
    :class:`~clipface.index.records.SearchHit`."""
    from ..data.images import load_image
    from ..index.store import FaceIndex

    if (text is None) == (image is None):
        raise UsageError("text", text, "give exactly one of --text and --image")
    check_int("k", k, 1, 10_000, allow_none=False)
    index = FaceIndex.load(_index_folder(index_dir, must_exist=True))
    encoder = index.load_encoder(weights=weights, device=device)
    if text is not None:
        return index.query_text(encoder, text, k)
    assert image is not None
    return index.query_image(encoder, load_image(Path(image)), k)
