"""Audit a person: does the search engine return this person's images when asked for them?

The index is queried with the person's name (the text ``"a photo of NAME."``, the paper's
prompt; CLIP models only) or with a photo of them (any model). The top-k results are counted
as the person's by the identity metadata of the index (names compared case- and
separator-insensitively: ``George_W_Bush`` is ``george w bush``).

Verdict rule (:data:`THRESHOLD`): the engine *identifies* the person when at least half of
the top-k results that could be theirs are theirs, that is when
``matches >= 0.5 * min(k, images of the person in the index)``. With at least k images of the
person indexed this is precision@k >= 0.5. With none indexed there is nothing to find and the
verdict is "cannot tell". ``chance`` is the precision@k a random ranking would have.

An index with face vectors (``--face-model``, :mod:`clipface.index.facestore`) also counts, as the person's,
every result in which any stored face matches them, labelled or not (a group photo in which they
appear, an unlabelled photo): a face whose median similarity to the person's reference faces
reaches the face model's LFW threshold at FAR 1e-3 (the rule of the engine audit,
:mod:`.engine`). The references are the face of the query photo, or, for a name, the chosen face
of each image labelled with the name. ``in_index`` counts the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..data.dataset import display_name
from ..data.prompts import PAPER
from ..errors import ImageError
from ..index.records import Exclude, QueryError, SearchHit, identity_key
from ..index.store import FaceIndex
from ..models.base import Encoder
from ..models.registry import get_spec

#: Share of the achievable matches needed for the verdict "identifies".
THRESHOLD = 0.5
#: Text query of a name audit.
TEMPLATE = PAPER[0]


@dataclass
class AuditResult:
    """The answer of :func:`audit_person`."""

    name: str
    query: str
    k: int
    matches: int
    precision: float
    in_index: int
    chance: float
    identifies: bool | None
    verdict: str
    threshold: float = THRESHOLD
    results: list[SearchHit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "query": self.query,
            "k": self.k,
            "matches": self.matches,
            f"precision_at_{self.k}": self.precision,
            "precision_at_k": self.precision,
            "in_index": self.in_index,
            "chance": self.chance,
            "identifies": self.identifies,
            "verdict": self.verdict,
            "threshold": self.threshold,
            "results": [h.to_dict() for h in self.results],
        }


def audit_person(
    index: FaceIndex,
    encoder: Encoder,
    name: str,
    image: Image.Image | None = None,
    k: int = 10,
    exclude: Exclude | None = None,
) -> AuditResult:
    """Query ``index`` for ``name`` (by text, or by ``image`` when given) and judge the top ``k``.

    ``exclude`` (e.g. an opt-out list) removes images from the results and from the count of
    the person's indexed images alike.
    """
    if not name.strip():
        raise QueryError("an audit needs the person's name (to count which results are them)")
    person = display_name(name.strip())
    if image is not None:
        query = "photo"
        hits = index.query_image(encoder, image, k, exclude)
    else:
        query = TEMPLATE.format(person)
        hits = index.query_text(encoder, query, k, exclude)
    key = identity_key(name)
    labelled = index.meta.images_of(name)
    by_face = _face_matches(index, image, [im.id for im in labelled])
    matches = sum(1 for h in hits if (h.identity and identity_key(h.identity) == key) or h.id in by_face)
    theirs = {im.id: im for im in labelled}
    theirs.update({i: im for i, im in index.meta.images(by_face - set(theirs)).items()})
    in_index = sum(1 for im in theirs.values() if exclude is None or not exclude(im))
    n = len(hits)
    if in_index == 0 or n == 0:
        identifies, verdict = None, f"cannot tell: the index holds no image of {person}"
    else:
        identifies = matches >= THRESHOLD * min(n, in_index)
        word = "identifies" if identifies else "does not identify"
        verdict = f"{word} this person: {matches} of the top {n} results are them"
    return AuditResult(
        name=person,
        query=query,
        k=n,
        matches=matches,
        precision=matches / n if n else 0.0,
        in_index=in_index,
        chance=in_index / index.count if index.count else 0.0,
        identifies=identifies,
        verdict=verdict,
        results=hits,
    )


def _face_matches(index: FaceIndex, image: Image.Image | None, labelled: list[int]) -> set[int]:
    """Ids of the images with a face matching the person (empty for an index without face vectors)."""
    if index.faces is None:
        return set()
    store, fm = index.faces.store, index.faces.model
    threshold = get_spec(fm.model).verify_threshold
    if threshold is None:
        return set()
    if image is not None:
        encoder = index.faces.load_encoder()
        try:
            refs = encoder.embed_prepared(encoder.prepare(image.convert("RGB"))[None])
        except ImageError:
            return set()
    else:
        refs = store.first_faces(labelled)
    if not len(refs):
        return set()
    return {int(i) for i in store.image_ids[store.median_matching(refs, float(threshold))]}
