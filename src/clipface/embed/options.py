"""How embeddings are computed for a run: the encoder choices plus batching, threads, cache and progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import check_int
from ..models.runtime import LoadOptions
from .cache import EmbeddingCache, NullCache

__all__ = ["RunOptions"]

#: Largest batch accepted: far above what helps on any machine, low enough to catch typos.
MAX_BATCH = 4096


@dataclass
class RunOptions(LoadOptions):
    """Everything a task needs to embed images: shared by every task and command.

    ``RunOptions(cache=EmbeddingCache())`` uses the on-disk cache (default: none). Values are
    checked when the object is made (:class:`~clipface.errors.UsageError` naming the field).
    """

    cache: EmbeddingCache | NullCache = field(default_factory=NullCache)
    batch_size: int = 32
    workers: int | None = None  # threads decoding and preparing images (default: from the machine)
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("batch_size", self.batch_size, 1, MAX_BATCH, allow_none=False)
        check_int("workers", self.workers, 1, 256)
