"""Audit a clip-retrieval-compatible search engine for one person (:mod:`clipface.audit.engine`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.dataset import display_name
from ..data.images import is_image_path
from ..errors import UsageError, check_float, check_int
from ..models.registry import get_spec
from ..models.runtime import LoadOptions, load_encoder
from ..report.write import write_results
from .tasks import Echo, check_out

__all__ = ["audit"]


def audit(
    engine: str,
    indice: str,
    person: str | Path,
    *,
    name: str | None = None,
    model: str = "dlib",
    k: int = 10,
    out: str | Path | None = None,
    fetch_urls: bool = True,
    allow_private_urls: bool = False,
    read_local_paths: bool = False,
    user_agent: str | None = None,
    deduplicate: bool = True,
    use_safety_model: bool = True,
    deadline: float | None = 1800.0,
    token: str | None = None,
    threshold: float | None = None,
    echo: Echo = print,
) -> dict[str, Any]:
    """How exposed ``person`` (a folder of their photos) is on the engine at ``engine`` (its ``/knn-service`` URL).

    Text queries give the person's name (``name``, default: the folder's) in every prompt; image
    queries send each photo. ``model`` judges the results at its LFW threshold at FAR 1e-3 (or
    ``threshold``). Writes ``results.json``, ``results.md`` and ``report.html`` to ``out``. What the
    engine's results name is read as :class:`~clipface.audit.fetch.FetchPolicy` allows: public urls
    (``fetch_urls``; private addresses with ``allow_private_urls``), local paths only with
    ``read_local_paths``. ``deduplicate`` and ``use_safety_model`` are sent as clip-retrieval's
    ``ClipClient`` sends them (true), so the engine answers as its users see it; ``deadline``
    (seconds) bounds the whole audit.
    """
    from ..audit.engine import EngineClient, audit_engine
    from ..audit.fetch import BROWSER_AGENT, FetchPolicy

    if not engine.startswith(("http://", "https://")):
        raise UsageError("engine", engine, "give the engine's knn-service URL, e.g. http://127.0.0.1:8000/knn-service")
    check_int("k", k, 1, 1000, allow_none=False)
    folder = Path(person)
    if not folder.is_dir():
        raise UsageError("person", str(folder), "not a folder of the person's photos")
    photos = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))
    if not photos:
        raise UsageError("person", str(folder), "holds no image file")
    spec = get_spec(model)
    if threshold is None:
        if spec.verify_threshold is None:
            raise UsageError(
                "model", model, "no LFW threshold is recorded for it: use a face recogniser (dlib) or --threshold"
            )
        threshold = spec.verify_threshold
    if out is not None:
        check_out(out)
    check_float("deadline", deadline, 1.0, None)
    token = token or os.environ.get("CLIPFACE_API_TOKEN") or None
    client = EngineClient(
        engine, indice, token=token, on_wait=echo, deduplicate=deduplicate, use_safety_model=use_safety_model
    )
    try:
        known = client.indices()
        if indice not in known:
            raise UsageError("indice", indice, f"the engine has no such index (it has: {', '.join(known) or 'none'})")
        encoder = load_encoder(spec.name, LoadOptions())
        policy = FetchPolicy(fetch_urls, allow_private_urls, read_local_paths, user_agent or BROWSER_AGENT)
        who = name or display_name(folder.name)
        doc = audit_engine(client, photos, encoder, threshold, who, k=k, fetch=policy, echo=echo, deadline_s=deadline)
    finally:
        client.close()
    if out is not None:
        write_results(doc, out)
    return doc
