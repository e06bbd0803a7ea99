"""What counts as blank text, said once for every engine that checks it.

A query or a name must hold at least one character that is neither Unicode ``White_Space``
(UAX #44 PropList) nor an invisible format character that renders as nothing (zero-width
spaces and joiners, the word joiner, the byte-order mark, the Mongolian vowel separator).

The rule is one explicit character class, :data:`NOT_BLANK`, rather than ``\\S``: regex engines
disagree on ``\\s`` (Python's ``re`` counts U+001C-U+001F, ECMA-262 counts U+FEFF, Rust's
``regex`` neither), and so did schemathesis' generator and pydantic's validator on the server,
which made the OpenAPI schema and the server disagree on some inputs. An explicit class means
the same in Python, ECMA-262 (JSON Schema's dialect) and Rust.
"""

from __future__ import annotations

import re

__all__ = ["BLANK", "NOT_BLANK", "is_blank"]

#: Unicode White_Space, then invisible format characters (as ``\\uXXXX`` escapes every engine reads).
BLANK = (
    r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\u180e\u200b-\u200d\u2060\ufeff"
)
#: A pattern (search semantics, as JSON Schema's ``pattern``) that matches any text that is not blank.
NOT_BLANK = f"[^{BLANK}]"
_NOT_BLANK = re.compile(NOT_BLANK)


def is_blank(text: str) -> bool:
    """Whether ``text`` holds nothing but white space and invisible characters (:data:`BLANK`)."""
    return _NOT_BLANK.search(text) is None
