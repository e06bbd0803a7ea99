"""The JSON API's request and answer models (they make the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..search.records import SearchHit

__all__ = ["AuditResponse", "ErrorResponse", "Result", "SearchResponse", "TextQuery", "result_of"]


class TextQuery(BaseModel):
    query: str = Field(..., min_length=1, max_length=500, description="Text to search for, e.g. a person's name.")
    k: int = Field(10, ge=1, description="Number of results.")


class Result(BaseModel):
    rank: int
    id: int
    path: str = Field(description="Path of the image relative to the indexed folder.")
    identity: str | None
    name: str | None
    score: float
    image_url: str = Field(description="Thumbnail URL (same token required).")


class SearchResponse(BaseModel):
    query: str
    k: int
    model: str
    results: list[Result]


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


class ErrorResponse(BaseModel):
    error: str


def result_of(hit: SearchHit) -> Result:
    return Result(
        rank=hit.rank,
        id=hit.id,
        path=hit.relpath,
        identity=hit.identity,
        name=hit.name,
        score=hit.score,
        image_url=f"/api/image/{hit.id}",
    )
