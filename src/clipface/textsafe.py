"""File names as text: undecodable bytes kept exact for reopening, shown as ``\\xNN`` for reading.

File names on Linux are bytes. Python hands a name that is not valid UTF-8 over as a string
holding surrogate escapes (``b"uniq\\xff.jpg"`` becomes ``"uniq\\udcff.jpg"``), which opens the
same file again but cannot be encoded as UTF-8. Such strings are shown as :func:`readable` text
(``uniq\\xff.jpg``) in JSON, Markdown, HTML and on the terminal, hashed by :func:`key_bytes`,
and stored exactly by :mod:`clipface.sql`.
"""

from __future__ import annotations

import re

SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds surrogate escapes (an undecodable file name's bytes)."""
    return not text.isascii() and SURROGATE.search(text) is not None


def readable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name shown as ``\\xNN`` (printable, valid UTF-8).

    Strings without surrogate escapes come back unchanged.
    """
    return SURROGATE.sub(_escape, text) if has_surrogates(text) else text


def key_bytes(text: str) -> bytes:
    """UTF-8 bytes of ``text`` for hashing: a string made from an undecodable file name still has one stable key."""
    return text.encode("utf-8", errors="surrogatepass")
