"""SQLite helpers: strings stored exactly (undecodable file names included) and ``IN (...)`` lists in chunks."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Iterator, Sequence, TypeVar

from .textsafe import has_surrogates, readable

T = TypeVar("T")

#: Rows per ``IN (...)`` clause: well under SQLite's limit on bound parameters.
SQL_CHUNK = 500


def to_sql_text(text: str | None) -> str | bytes | None:
    """A string as SQLite stores it: itself when it is valid UTF-8, else the file name's bytes (a BLOB).

    :func:`from_sql_text` turns either back into the very same string, so a stored path opens
    the same file.
    """
    if text is None or not has_surrogates(text):
        return text
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to: keep a readable form
        return readable(text)


def from_sql_text(value: str | bytes | None) -> str | None:
    """The string stored by :func:`to_sql_text`."""
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def chunks(items: Sequence[T], size: int = SQL_CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` (which holds one ``{}`` where the ``IN`` list goes) for every value, in chunks."""
    values = list(values)
    for part in chunks(values):
        yield from conn.execute(sql.format(",".join("?" * len(part))), list(part))
