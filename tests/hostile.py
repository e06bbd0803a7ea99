"""A hostile-input corpus, made at test time (nothing large is committed): every kind of file a run must survive.

:func:`make_corpus` writes identity folders holding good images of many kinds (CMYK, RGBA,
16-bit, palette and animated GIF, WebP, every EXIF orientation, 1x1, a link to a file, names
that are not UTF-8 or are far from ASCII, a person with a single photo) beside files that must
be listed as skipped with a reason (truncated, text named .jpg, empty, a pixel bomb, a link
loop, a broken link, a folder named x.jpg, a FIFO, a text file with a non-UTF-8 name).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: File-name bytes that are not UTF-8 (Latin-1 é, and two bytes no encoding starts with).
LATIN1_FOLDER = b"Folder\xe9Latin1"
UNDECODABLE_FILE = b"uniq\xff\xfe.jpg"


@dataclass
class Corpus:
    root: Path
    #: Good image files, by identity folder name (as Python names it).
    good: dict[str, list[Path]] = field(default_factory=dict)
    #: Files that must be skipped -> a phrase their reason must hold.
    bad: dict[Path, str] = field(default_factory=dict)

    @property
    def n_good(self) -> int:
        return sum(len(v) for v in self.good.values())

    def shown(self, path: Path) -> str:
        return shown(path)


def shown(path: Path | str) -> str:
    """A path as JSON, Markdown and the terminal must show it: its bytes as UTF-8, others as ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


def _noise(rng: np.random.Generator, h: int = 48, w: int = 40) -> np.ndarray:
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width x height`` pixels in a few hundred kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def single_colour_png(width: int = 7000, height: int = 5500, mode: str = "L") -> bytes:
    """The issue's upload: a 49 kB single-colour PNG that decodes to 38.5 Mpx."""
    out = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else (128,) * len(mode)).save(out, "PNG")
    return out.getvalue()


def sixteen_bit_png(rng: np.random.Generator, h: int = 48, w: int = 40) -> tuple[bytes, np.ndarray]:
    """A 16-bit greyscale PNG (PIL mode ``I;16``) of mid-grey noise, and its values."""
    values = rng.integers(20_000, 45_000, (h, w), dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG")
    return out.getvalue(), values


def make_corpus(base: Path, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    root = base / "hostile"
    c = Corpus(root)
    broot = os.fsencode(root)

    def person(name: str | bytes) -> Path:
        folder = Path(os.fsdecode(broot + b"/" + (name if isinstance(name, bytes) else name.encode())))
        folder.mkdir(parents=True, exist_ok=True)
        c.good.setdefault(folder.name, [])
        return folder

    def good(folder: Path, name: str | bytes, writer) -> Path:
        path = Path(os.fsdecode(os.fsencode(folder) + b"/" + (name if isinstance(name, bytes) else name.encode())))
        writer(path)
        c.good[folder.name].append(path)
        return path

    def bad(folder: Path, name: str | bytes, reason: str, writer) -> Path:
        path = Path(os.fsdecode(os.fsencode(folder) + b"/" + (name if isinstance(name, bytes) else name.encode())))
        writer(path)
        c.bad[path] = reason
        return path

    def jpeg(path: Path, **kw) -> None:
        Image.fromarray(_noise(rng)).save(path, "JPEG", quality=90, **kw)

    alice = person("Alice_Smith")
    for i in range(2):
        good(alice, f"Alice_Smith_{i:04d}.jpg", jpeg)
    good(alice, "cmyk.jpg", lambda p: Image.fromarray(_noise(rng)).convert("CMYK").save(p, "JPEG"))
    good(alice, "rgba.png", lambda p: Image.fromarray(np.dstack([_noise(rng), _noise(rng)[:, :, 0]]), "RGBA").save(p))
    good(alice, "grey16.png", lambda p: p.write_bytes(sixteen_bit_png(rng)[0]))
    good(alice, "palette.gif", lambda p: Image.fromarray(_noise(rng)).convert("P").save(p))
    frames = [Image.fromarray(_noise(rng)).convert("P") for _ in range(3)]
    good(alice, "animated.gif", lambda p: frames[0].save(p, save_all=True, append_images=frames[1:], duration=50))
    good(alice, "photo.webp", lambda p: Image.fromarray(_noise(rng)).save(p, "WEBP"))
    good(alice, "one_pixel.png", lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        good(alice, f"exif_{orientation}.jpg", lambda p, e=exif: jpeg(p, exif=e.tobytes()))
    good(alice, UNDECODABLE_FILE, jpeg)
    target = base / "elsewhere" / "linked.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    jpeg(target)
    good(alice, "link_to_file.jpg", lambda p: p.symlink_to(target))

    bob = person("Bob_Jones")
    for i in range(2):
        good(bob, f"Bob_Jones_{i:04d}.jpg", jpeg)
    whole = io.BytesIO()
    Image.fromarray(_noise(rng, 96, 80)).save(whole, "JPEG", quality=95)
    cut = whole.getvalue()[: len(whole.getvalue()) // 2]  # a valid header: found only when decoded
    bad(bob, "truncated.jpg", "truncated", lambda p: p.write_bytes(cut))
    bad(bob, "notes.jpg", "not an image", lambda p: p.write_text("this is not an image\n"))
    bad(bob, "empty.jpg", "empty file", lambda p: p.write_bytes(b""))
    bad(bob, "bomb.png", "image too large", lambda p: p.write_bytes(huge_png(20000, 20000)))
    bad(bob, "loop.jpg", "symbolic link loop", lambda p: p.symlink_to(p.name))
    bad(bob, "broken.jpg", "broken symbolic link", lambda p: p.symlink_to("missing-target.jpg"))
    bad(bob, "x.jpg", "a folder, not an image file", lambda p: p.mkdir())
    bad(bob, "fifo.jpg", "not a regular file", lambda p: os.mkfifo(p))
    (bob / ".hidden.jpg").write_text("hidden files are not looked at")

    latin = person(LATIN1_FOLDER)
    for i in range(2):
        good(latin, f"latin_{i}.jpg", jpeg)
    bad(latin, b"bad\xff.jpg", "not an image", lambda p: p.write_text("text with an undecodable name\n"))

    jose = person("José_Müller")
    good(jose, "Zoë 😀 ünïcödé.jpg", jpeg)
    good(jose, "José_Müller_0002.png", lambda p: Image.fromarray(_noise(rng)).save(p))

    solo = person("Solo_Person")
    good(solo, "only.jpg", jpeg)
    return c
