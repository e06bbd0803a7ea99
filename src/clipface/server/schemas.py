"""The JSON API's request and answer models (they make the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from ..data.textnorm import NOT_BLANK
from ..index.records import SearchHit
from ..textsafe import readable

__all__ = ["AuditResponse", "ErrorResponse", "Result", "SearchResponse", "TextQuery", "result_of", "text_query_model"]


class TextQuery(BaseModel):
    query: str = Field(
        ..., min_length=1, max_length=500, pattern=NOT_BLANK, description="Text to search for, e.g. a person's name."
    )
    k: int = Field(10, ge=1, le=100, description="Number of results.")


def text_query_model(max_k: int) -> type[TextQuery]:
    """:class:`TextQuery` with ``k <= max_k`` in its schema (the server's own limit)."""
    if max_k == 100:
        return TextQuery
    field = (int, Field(10, ge=1, le=max_k, description="Number of results."))
    return create_model("TextQuery", __base__=TextQuery, k=field)  # type: ignore[call-overload]


class Result(BaseModel):
    rank: int
    id: int
    path: str = Field(description="Path of the image relative to the indexed folder.")
    identity: str | None
    name: str | None
    score: float
    image_url: str = Field(description="Thumbnail URL (same token required).")
    box: list[float] | None = Field(
        None, description="The matching face (left, top, right, bottom, in the image's pixels), for a face index."
    )
    width: int = Field(0, description="Width of the indexed image in pixels (the box's frame).")
    height: int = Field(0, description="Height of the indexed image in pixels.")


class SearchResponse(BaseModel):
    query: str
    k: int
    model: str
    results: list[Result]
    #: Served as shards (``serve --shards``): how many answered, of how many (else null).
    shards: dict[str, int] | None = None


class AuditResponse(BaseModel):
    name: str
    query: str
    k: int
    matches: int
    precision_at_k: float
    in_index: int
    chance: float
    identifies: bool | None
    verdict: str
    threshold: float
    results: list[Result]
    shards: dict[str, int] | None = None


class ErrorResponse(BaseModel):
    error: str


def result_of(hit: SearchHit) -> Result:
    """The answer for one hit; file names that are not UTF-8 are shown with ``\\xNN`` escapes."""
    return Result(
        rank=hit.rank,
        id=hit.id,
        path=readable(hit.relpath),
        identity=readable(hit.identity) if hit.identity is not None else None,
        name=hit.name,
        score=hit.score,
        image_url=f"/api/image/{hit.id}",
        box=[round(float(v), 1) for v in hit.box] if hit.box is not None else None,
        width=hit.width,
        height=hit.height,
    )
