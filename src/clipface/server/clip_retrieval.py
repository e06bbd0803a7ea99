"""clip-retrieval's back-end API beside clipface's own (``clipface serve --clip-retrieval``).

The routes, request fields and answers of clip-retrieval's ``clip_back.py`` (``rom1504/clip-retrieval``),
so that its ``ClipClient`` and its web front end work against a clipface index:

* ``GET /indices-list``: the index names (this server has one, named after its folder);
* ``POST /knn-service``: ``modality`` ("image": the image index is searched; this engine has no text
  index), ``num_images`` (results with metadata), ``num_result_ids`` (results in all), ``indice_name``,
  and one of ``text``, ``image`` (base64), ``embedding_input``; the answer is a list of
  ``{"id", "similarity", "caption", "image_path", "image"}`` (``image``: a base64 JPEG of the
  held file, ``caption``: the person's name where the index knows it; an image query of a face
  index adds ``box``, the matching face, left/top/right/bottom in the held file's pixels), best
  first, ``[]`` for no hit;
* ``POST /metadata``: ``{"ids", "indice_name"}`` to ``[{"id", "metadata"}]``.

Flags this engine does not support (``use_mclip``, ``aesthetic_score``/``aesthetic_weight``,
``use_safety_model``, ``use_violence_detector``, ``deduplicate``) are accepted and listed in the
``X-Clipface-Ignored`` header. ``image_url`` is refused: the server fetches nothing from the
network for a client. Counts above the server's limits are lowered (``X-Clipface-Clamped``), as
the front end asks for 3,000 ids; past the first 100 results, each result asked for with metadata
keeps its caption and path but carries no inline image (said in the same header). Errors are
JSON ``{"error": ...}``, never HTML or a bare 500 (clip-retrieval's own users report both, issues
#174, #278, #306, #355). The token, opt-out and
rate-limit policies of the gate apply to these routes as to ``/api/``.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..index.records import IndexedImage, SearchHit
from ..index.sharded import begin_report
from ..index.store import FaceIndex
from ..textsafe import has_surrogates

__all__ = ["CLIP_RETRIEVAL_PATHS", "IGNORED_FLAGS", "add_clip_retrieval_routes"]

CLIP_RETRIEVAL_PATHS = ("/knn-service", "/metadata", "/indices-list")
IGNORED_FLAGS = (
    "use_mclip",
    "aesthetic_score",
    "aesthetic_weight",
    "use_safety_model",
    "use_violence_detector",
    "deduplicate",
)
#: Results with an inline image (base64 JPEG) in one answer (later ones keep their caption and path), and result ids
#: in one answer.
MAX_IMAGES, MAX_IDS = 100, 1000
IMAGE_SIDE = 384


def _flag_set(value: Any) -> bool:
    return value not in (None, False, "", 0, "0", "false", "False")


def _image_b64(image: IndexedImage) -> str | None:
    from ..data.images import load_image
    from ..errors import ImageError

    try:
        img = load_image(image.path, max_side=IMAGE_SIDE)
    except ImageError:
        return None
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Longest sidecar caption read (bytes): a caption, not a file.
CAPTION_MAX_BYTES = 4096


def caption_of(image: IndexedImage) -> str:
    """The image's caption: a sidecar ``NAME.txt`` beside ``NAME.jpg`` (clip-retrieval's layout, as img2dataset
    writes it), else the person's name, else the path in the indexed folder."""
    sidecar = Path(image.path).with_suffix(".txt")
    try:
        if sidecar.is_file():
            with open(sidecar, "rb") as fh:
                text = fh.read(CAPTION_MAX_BYTES).decode("utf-8", errors="replace").strip()
            if text:
                return " ".join(text.split())
    except OSError:
        pass
    return image.name or image.relpath


def _metadata(image: IndexedImage, with_image: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"caption": caption_of(image), "image_path": image.relpath}
    if with_image:
        encoded = _image_b64(image)
        if encoded is not None:
            meta["image"] = encoded
    return meta


def add_clip_retrieval_routes(
    app: FastAPI,
    index: FaceIndex,
    encoder: Any,
    indice_name: str,
    exclude: Callable[[IndexedImage], bool],
    refresh: Callable[[], None],
    decode: Callable[[bytes], Image.Image],
) -> None:
    """Add ``/indices-list``, ``/knn-service`` and ``/metadata`` (see the module docstring) to ``app``."""

    async def body_of(request: Request) -> dict[str, Any]:
        import json

        raw = await request.body()
        try:
            data = json.loads(raw or b"{}")  # clip-retrieval's client sends JSON without a Content-Type
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return data

    def check_indice(data: dict[str, Any]) -> None:
        name = data.get("indice_name")
        if name is None:
            raise HTTPException(400, "indice_name is required (see /indices-list)")
        if name != indice_name:
            raise HTTPException(404, f"unknown indice_name {str(name)[:100]!r}: this engine has {indice_name!r}")

    def count(data: dict[str, Any], key: str, default: int | None, limit: int, clamped: list[str]) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise HTTPException(400, f"{key} must be a whole number >= 0")
        if value > limit:
            clamped.append(f"{key}={limit}")
            return limit
        return value

    @app.get("/indices-list", include_in_schema=True, tags=["clip-retrieval"])
    def indices_list() -> list[str]:
        """The index names (clip-retrieval's ``/indices-list``)."""
        return [indice_name]

    @app.post("/knn-service", tags=["clip-retrieval"])
    async def knn_service(request: Request) -> JSONResponse:
        """Nearest images to a text, an image (base64) or an embedding (clip-retrieval's ``/knn-service``).

        Decoding, embedding and searching run in the thread pool, as the native routes do, so that
        one client's large photo never holds the event loop (and every other client) meanwhile.
        """
        return await run_in_threadpool(knn_answer, await body_of(request))

    def knn_answer(data: dict[str, Any]) -> JSONResponse:
        check_indice(data)
        if "num_images" not in data:
            raise HTTPException(400, "num_images is required")
        modality = data.get("modality", "image")
        if modality == "text":
            raise HTTPException(400, "this engine has no text index: use modality 'image' (texts search the images)")
        if modality != "image":
            raise HTTPException(400, "modality must be 'image' or 'text'")
        clamped: list[str] = []
        num_images = count(data, "num_images", None, MAX_IDS, clamped)
        if num_images > MAX_IMAGES:  # metadata for every one asked; the inline image for the first MAX_IMAGES only
            clamped.append(f"images={MAX_IMAGES}")
        # as clip_back: num_result_ids results in all (num_images by default), the first num_images with metadata
        num_ids = count(data, "num_result_ids", num_images, MAX_IDS, clamped)
        text, image, image_url, vector = (data.get(k) for k in ("text", "image", "image_url", "embedding_input"))
        by_photo = False
        if text not in (None, ""):
            if not isinstance(text, str) or len(text) > 1000:
                raise HTTPException(400, "text must be a string of at most 1000 characters")
            if has_surrogates(text):
                raise HTTPException(400, "text must be valid Unicode (it holds a lone surrogate)")
            query = encoder_text(text)
        elif image not in (None, ""):
            if not isinstance(image, str):
                raise HTTPException(400, "image must be a base64 string")
            try:
                raw = base64.b64decode(image.split(",", 1)[-1] if image.startswith("data:") else image, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPException(400, "image is not valid base64") from None
            query = index.embed_query_image(encoder, decode(raw))
            by_photo = True
        elif image_url not in (None, ""):
            raise HTTPException(
                400, "image_url is not supported (the server fetches nothing for clients): send image as base64"
            )
        elif vector is not None:
            query = _embedding_input(vector, index.manifest.dim)
        else:
            raise HTTPException(400, "give one of text, image or embedding_input")
        refresh()
        report = begin_report()
        hits: list[SearchHit] = []
        if num_ids:
            hits = (
                index.search_query(encoder, query, num_ids, exclude)
                if by_photo
                else index.search_vectors(query, num_ids, exclude)[0]
            )
        answer = []
        for rank, hit in enumerate(hits):
            entry: dict[str, Any] = _metadata(hit, with_image=rank < MAX_IMAGES) if rank < num_images else {}
            entry["id"] = hit.id
            entry["similarity"] = hit.score
            if hit.box is not None:
                entry["box"] = [round(v, 1) for v in hit.box]
            answer.append(entry)
        headers = {}
        ignored = [f for f in IGNORED_FLAGS if _flag_set(data.get(f))]
        if ignored:
            headers["X-Clipface-Ignored"] = ", ".join(ignored)
        if clamped:
            headers["X-Clipface-Clamped"] = ", ".join(clamped)
        if report is not None:  # clip-retrieval's answer is a bare list: the shards are said in a header
            headers["X-Clipface-Shards"] = f"{report.answered}/{report.total}"
        return JSONResponse(answer, headers=headers)

    def encoder_text(text: str) -> np.ndarray:
        if not getattr(encoder, "has_text", False):
            raise HTTPException(400, f"{encoder.name} has no text tower: query with an image")
        index.check_encoder(encoder)
        return encoder.encode_text([text])

    @app.post("/metadata", tags=["clip-retrieval"])
    async def metadata(request: Request) -> list[dict[str, Any]]:
        """The metadata of result ids (clip-retrieval's ``/metadata``); opted-out images are left out."""
        return await run_in_threadpool(metadata_answer, await body_of(request))

    def metadata_answer(data: dict[str, Any]) -> list[dict[str, Any]]:
        ids = data.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise HTTPException(400, "ids must be a list of whole numbers")
        if not ids:
            return []
        check_indice(data)
        if len(ids) > MAX_IMAGES:
            raise HTTPException(413, f"at most {MAX_IMAGES} ids per request")
        refresh()
        found = index.meta.images(ids)
        return [
            {"id": i, "metadata": _metadata(found[i], with_image=True)}
            for i in ids
            if i in found and not exclude(found[i])
        ]


def _embedding_input(vector: Any, dim: int) -> np.ndarray:
    """A client's ``embedding_input`` as a ``(1, dim)`` unit query: a flat list of ``dim`` JSON numbers (no strings,
    booleans or nested lists), finite and not all zero, normalised in float64 so that huge values do not overflow."""
    ok = isinstance(vector, list) and len(vector) == dim
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector)
    if not ok:
        raise HTTPException(400, f"embedding_input must be {dim} numbers (a flat list of JSON numbers)")
    try:
        query = np.asarray(vector, dtype=np.float64).reshape(1, -1)
    except OverflowError:  # an integer beyond float64
        raise HTTPException(400, f"embedding_input must be {dim} finite numbers (one is beyond float64)") from None
    norm = float(np.linalg.norm(query)) if np.isfinite(query).all() else float("nan")
    if not np.isfinite(norm):  # inf, nan, or a norm beyond float64: scale by the largest first
        biggest = float(np.max(np.abs(query))) if np.isfinite(query).all() else float("nan")
        if not np.isfinite(biggest):
            raise HTTPException(400, f"embedding_input must be {dim} finite numbers")
        query, norm = query / biggest, float(np.linalg.norm(query / biggest))
    if norm == 0.0:
        raise HTTPException(400, f"embedding_input must be {dim} finite numbers, not all zero")
    return (query / norm).astype(np.float32)
