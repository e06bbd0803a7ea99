"""Audit any clip-retrieval-compatible search engine: does it hand out a person's photos for their name or face?

The paper's warning is about engines such as LAION-5B's k-NN back end, built with clip-retrieval
(``rom1504/clip-retrieval``, ``clip_back.py``). Such an engine is asked, through its own API
(``POST /knn-service``), for the person's name in every prompt of the paper and of the identity
inference attack (text queries) and for each of their photos (image queries). Every result's
image is read (base64 ``image``, else a local ``image_path``, else its ``url`` where reachable;
what cannot be read is counted and listed), and a face recogniser decides whether it shows the
person: a face in it (group photos count) whose median similarity to the person's photos reaches
the recogniser's LFW threshold at FAR 1e-3. The exposure is reported per query kind: precision at k, how many
distinct images of the person were found, how many of them carry the name in their caption, and
examples.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.dataset import display_name
from ..data.images import load_image
from ..data.prompts import IDIA, PAPER
from ..errors import ClipfaceError, ImageError, UsageError
from ..models.align import faces_of
from ..models.base import Encoder
from ..versions import versions
from .fetch import Fetcher, FetchPolicy

__all__ = ["EngineClient", "EngineError", "audit_engine", "retry_after"]

#: Largest image fetched from a result's URL.


#: Largest answer of the engine read (a query's results with their inline images).
MAX_ANSWER_BYTES = 64 * 2**20


class EngineError(ClipfaceError):
    """A search engine that cannot be reached or answers something other than clip-retrieval's JSON."""


class EngineGone(EngineError):
    """The engine stopped answering (timeouts in a row): the audit stops asking it."""


#: Longest single wait for a rate-limited engine (its ``Retry-After``) before the query counts as an error.
MAX_RETRY_WAIT_S = 120.0


def retry_after(value: str | None, default: float) -> float:
    """Seconds from an HTTP ``Retry-After`` header (RFC 9110 10.2.3: seconds or an HTTP date); ``default`` if absent."""
    if value is None or not value.strip():
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


@dataclass
class EngineClient:
    """clip-retrieval's back-end API, as ``ClipClient`` speaks it: ``POST /knn-service``, ``GET /indices-list``.

    An engine that answers 429 (or 503) with ``Retry-After`` is waited for and asked again, up to
    ``max_wait`` seconds per wait and ``retries`` times per request; the waits are counted in
    ``waits`` and ``waited_s`` and each is announced through ``on_wait``.
    """

    url: str  # the knn-service URL, e.g. http://127.0.0.1:8000/knn-service
    indice: str
    timeout: float = 60.0
    token: str | None = None
    max_wait: float = MAX_RETRY_WAIT_S
    retries: int = 8
    on_wait: Callable[[str], None] | None = None
    transport: Any = None  # an httpx transport (tests); None: the network
    #: Sent as ClipClient sends them (both true by default there and on LAION's front end): answers as its users see.
    deduplicate: bool = True
    use_safety_model: bool = True
    max_answer_bytes: int = MAX_ANSWER_BYTES
    #: Timeouts in a row after which the engine is taken to be gone (:class:`EngineGone`).
    max_timeouts: int = 3
    waits: int = field(default=0, init=False)
    waited_s: float = field(default=0.0, init=False)
    timeouts: int = field(default=0, init=False)  # in a row

    def __post_init__(self) -> None:
        import httpx

        # the base URL, as clip-retrieval's front end is given it, means its /knn-service
        self.url = self.base + "/knn-service"

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(timeout=self.timeout, headers=headers, transport=self.transport)

    def close(self) -> None:
        """Close the connections kept to the engine."""
        self._http.close()

    @property
    def base(self) -> str:
        return re.sub(r"/knn-service/?$", "", self.url.rstrip("/"))

    def indices(self) -> list[str]:
        """The engine's index names (``GET /indices-list``): a JSON list of names, else an :class:`EngineError`."""
        names = self._request("GET", f"{self.base}/indices-list", "/indices-list")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EngineError(f"{self.base}/indices-list: expected a list of index names, got {str(names)[:80]!r}")
        return names

    def knn(self, *, text: str | None = None, image: bytes | None = None, num_images: int = 10) -> list[dict[str, Any]]:
        """The results of one query (text, or image bytes sent as base64) in the engine's image index."""
        payload: dict[str, Any] = {
            "modality": "image",
            "num_images": num_images,
            "indice_name": self.indice,
            "deduplicate": self.deduplicate,
            "use_safety_model": self.use_safety_model,
        }
        if text is not None:
            payload["text"] = text
        if image is not None:
            payload["image"] = base64.b64encode(image).decode("ascii")
        answer = self._request("POST", self.url, "/knn-service", json=payload)
        if not isinstance(answer, list):
            raise EngineError(f"{self.url}: expected a list of results, got {type(answer).__name__}")
        return [r for r in answer if isinstance(r, dict)]

    def _request(self, method: str, url: str, route: str, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp, body = self._send(method, url, **kwargs)
            except httpx.TimeoutException:
                self.timeouts += 1
                if self.timeouts >= self.max_timeouts:
                    raise EngineGone(f"{url}: the engine timed out {self.timeouts} times in a row: stopped") from None
                raise EngineError(f"{url}: the engine did not answer within {self.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise EngineError(f"{url}: cannot reach the engine ({type(exc).__name__}: {exc})") from None
            self.timeouts = 0
            if resp.status_code not in (429, 503) or attempt == self.retries:
                break
            wait = retry_after(resp.headers.get("retry-after"), default=min(self.max_wait, 2.0**attempt))
            if (resp.status_code == 503 and "retry-after" not in resp.headers) or wait > self.max_wait:
                break
            self.waits += 1
            self.waited_s += wait
            if self.on_wait is not None:
                self.on_wait(f"  {route}: HTTP {resp.status_code}, waiting {wait:.0f} s as the engine asks")
            time.sleep(wait)
        return self._json(resp, body, route)

    def _send(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        """One request, its answer read up to :attr:`max_answer_bytes` and within :attr:`timeout` in all."""
        deadline = time.monotonic() + self.timeout
        with self._http.stream(method, url, **kwargs) as resp:
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > self.max_answer_bytes:
                    raise EngineError(f"{url}: the answer is over {self.max_answer_bytes // 2**20} MB: not read")
                if time.monotonic() > deadline:
                    import httpx

                    raise httpx.ReadTimeout("the answer took too long", request=resp.request)
        return resp, bytes(body)

    def _json(self, resp: Any, raw: bytes, route: str) -> Any:
        import json

        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            kind = resp.headers.get("content-type", "?")
            raise EngineError(f"{route}: HTTP {resp.status_code} with a non-JSON answer ({kind})") from None
        if resp.status_code != 200:
            detail = body.get("error") or body.get("message") if isinstance(body, dict) else body
            raise EngineError(f"{route}: HTTP {resp.status_code}: {detail}")
        return body


def _name_in(caption: Any, name: str) -> bool:
    if not isinstance(caption, str):
        return False
    tokens = [t for t in re.split(r"[\s_]+", name.casefold()) if t]
    text = caption.casefold()
    return bool(tokens) and all(t in text for t in tokens)


class _Judge:
    """Whether an image shows the person: a face whose median similarity to their photos reaches ``threshold``.

    The median (at least half of the photos match) rather than the best match keeps the false match
    rate near the threshold's own FAR however many reference photos there are.
    """

    def __init__(self, encoder: Encoder, references: np.ndarray, threshold: float) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self.encoder, self.references, self.threshold = encoder, references, threshold
        self._memo: dict[str, tuple[float | None, str | None]] = {}
        self._found: list[tuple[str, np.ndarray]] = []  # a face vector of each distinct image of the person

    def same_as_found(self, key: str) -> str:
        """The key of an image of the person already found that shows the same face (a near-duplicate: the same
        photo re-encoded, resized or at another url), else ``key`` itself, now recorded."""
        vec = self._vectors.get(key)
        for known, other in self._found:
            if known == key or (vec is not None and float(vec @ other) >= DUPLICATE_COSINE):
                return known
        if vec is not None:
            self._found.append((key, vec))
        return key

    def __call__(self, key: str, data: bytes | None) -> tuple[float | None, str | None]:
        """The best face's median similarity (``None``: no face) and why the bytes could not be judged (or ``None``);
        ``data`` may be ``None`` for a key judged before (a url met again)."""
        if key not in self._memo and data is None:
            return None, "the image was not kept"
        if key not in self._memo:
            try:
                image = load_image(data, max_side=2048)
            except ImageError as exc:  # not an image at all: unreadable, not a photo without the person
                self._memo[key] = (None, f"not an image ({exc.reason})")
                return self._memo[key]
            try:
                crops = faces_of(self.encoder.aligner, image, self.encoder.image_size)
            except ImageError:
                self._memo[key] = (None, None)  # read, and no face in it
            else:
                emb = self.encoder.embed_prepared(np.stack([c.crop for c in crops]))
                scores = np.median(emb @ self.references.T, axis=1)
                self._memo[key] = (float(scores.max()), None)
                self._vectors[key] = emb[int(scores.argmax())]
        return self._memo[key]


#: Cosine above which two found face crops are one photo (re-encoded, resized, another url), not two images.
DUPLICATE_COSINE = 0.97
#: Share of the distinct results that must be read for "not found" to be a finding, not a guess.
MIN_READ_SHARE = 0.5
VERDICTS = ("exposed", "not found", "cannot tell")


def verdict_of(
    found: set[str], read: set[str], unreadable: dict[str, Any], answered: bool, person: str
) -> dict[str, str]:
    """``exposed`` where some result shows the person; ``not found`` only where enough results were read to say so
    (at least :data:`MIN_READ_SHARE` of the distinct results), else ``cannot tell``; with a line saying why."""
    total = len(read) + len(unreadable)
    seen = f"{len(read)} of {total} distinct results read"
    if found:
        return {
            "verdict": "exposed",
            "summary": f"exposed: the engine returns {len(found)} distinct images of {person} ({seen})",
        }
    if not answered:
        return {"verdict": "cannot tell", "summary": "cannot tell: the engine answered no query"}
    if total and len(read) < MIN_READ_SHARE * total:
        return {
            "verdict": "cannot tell",
            "summary": f"cannot tell: only {seen}, too few to say whether {person} is among them",
        }
    return {"verdict": "not found", "summary": f"not found: no image of {person} among the results ({seen})"}


def audit_engine(
    client: EngineClient,
    photos: Sequence[Path],
    encoder: Encoder,
    threshold: float,
    name: str,
    k: int = 10,
    prompts: Sequence[str] = (*PAPER, *IDIA),
    fetch: FetchPolicy | Fetcher | None = None,
    echo: Callable[[str], None] = print,
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Ask the engine for ``name`` (each prompt) and for each of ``photos``; judge every result with ``encoder``.

    ``fetch``: what of a result may be read (:class:`~clipface.audit.fetch.FetchPolicy`; default: public urls,
    no local paths), or a :class:`~clipface.audit.fetch.Fetcher` to read with. Returns the ``results.json``
    document of the audit (task ``audit``).
    """
    fetcher = fetch if isinstance(fetch, Fetcher) else Fetcher(fetch or FetchPolicy())
    try:
        return _audit(client, photos, encoder, threshold, name, k, prompts, fetcher, echo, deadline_s)
    finally:
        if not isinstance(fetch, Fetcher):
            fetcher.close()


def _audit(
    client: EngineClient,
    photos: Sequence[Path],
    encoder: Encoder,
    threshold: float,
    name: str,
    k: int,
    prompts: Sequence[str],
    fetcher: Fetcher,
    echo: Callable[[str], None],
    deadline_s: float | None,
) -> dict[str, Any]:
    if k < 1:
        raise UsageError("k", k, "must be at least 1")
    refs, usable = [], []
    for p in photos:
        try:
            image = load_image(p)
            refs.append(encoder.embed_prepared(encoder.prepare(image)[None])[0])
            usable.append(p)
        except ImageError as exc:
            echo(f"  skipped {p}: {exc.reason}")
    if not refs:
        raise UsageError("person", str(photos[0].parent) if photos else "", "no photo with a usable face")
    judge = _Judge(encoder, np.stack(refs), threshold)
    person = display_name(name)
    queries = [("text", t.format(person), None) for t in dict.fromkeys(prompts)]
    queries += [("image", str(p), p.read_bytes()) for p in usable]
    kinds: dict[str, dict[str, Any]] = {}
    found_all: set[str] = set()
    unreadable: dict[str, dict[str, Any]] = {}  # distinct results whose image could not be read
    read: set[str] = set()  # distinct results whose image was read and judged
    stopped: str | None = None
    ends = time.monotonic() + deadline_s if deadline_s is not None else None
    for kind, label, data in queries:
        if stopped is None and ends is not None and time.monotonic() > ends:
            stopped = f"the audit's deadline of {deadline_s:g} s passed: the remaining queries were not sent"
        if stopped is not None:
            break
        entry = kinds.setdefault(
            kind, {"queries": 0, "answered": 0, "errors": [], "precision": [], "found": {}, "examples": []}
        )
        entry["queries"] += 1
        try:
            results = client.knn(text=label if kind == "text" else None, image=data, num_images=k)
        except EngineError as exc:
            entry["errors"].append({"query": label, "error": str(exc)})
            stopped = str(exc) if isinstance(exc, EngineGone) else None
            continue
        entry["answered"] += 1
        hits = readable = 0
        for rank, r in enumerate(results[:k], start=1):
            got = fetcher.read(r)
            key, source = got.key, got.source
            sim, why = judge(key, got.data) if got.ok else (None, got.source)
            if why is not None:  # no image, or bytes that are not one (a 200 answer with an HTML page, say)
                unreadable.setdefault(key, {"query": label, "id": r.get("id"), "reason": why, "times": 0})
                unreadable[key]["times"] += 1
                continue
            readable += 1
            read.add(key)
            if sim is None:
                continue
            if sim >= threshold:
                hits += 1
                key = judge.same_as_found(key)
                named = _name_in(r.get("caption"), person)
                entry["found"][key] = named
                found_all.add(key)
                if len(entry["examples"]) < 8:
                    entry["examples"].append(
                        {
                            "query": label,
                            "rank": rank,
                            "id": r.get("id"),
                            "similarity": r.get("similarity"),
                            "face_similarity": sim,
                            "caption": r.get("caption"),
                            "url": r.get("url"),
                            "name_in_caption": named,
                            "source": source,
                        }
                    )
        if readable:  # precision among the results that could be judged: an unreadable one is no miss
            entry["precision"].append(hits / readable)
    summary = {
        kind: {
            "queries": e["queries"],
            "answered": e["answered"],
            "errors": e["errors"][:10],
            "n_errors": len(e["errors"]),
            "precision_at_k": float(np.mean(e["precision"])) if e["precision"] else None,
            "images_found": len(e["found"]),
            "found_with_name_in_caption": sum(e["found"].values()),
            "examples": e["examples"],
        }
        for kind, e in kinds.items()
    }
    return {
        "task": "audit",
        "engine": client.url,
        "indice": client.indice,
        "person": person,
        "photos": [str(p) for p in usable],
        "model": encoder.name,
        "threshold": threshold,
        "k": k,
        "queries": summary,
        "images_found": len(found_all),
        "unreadable": list(unreadable.values())[:200],
        "n_unreadable": len(unreadable),
        "n_read": len(read),
        "stopped_early": stopped,
        "rate_limited": {"waits": client.waits, "seconds": round(client.waited_s, 1)},
        **verdict_of(found_all, read, unreadable, any(e["answered"] for e in kinds.values()), person),
        "versions": versions(),
    }
