"""dlib's serialisation primitives, read without dlib: integers, floats, bools, strings, tensors.

Everything mirrors dlib 20.0.1's source:

* integers (``dlib/serialize.h`` ``pack_int``/``unpack_int``): one control byte, then ``size``
  little-endian magnitude bytes. Signed types: the size is ``ctrl & 0x0F`` and bit 0x80 is the
  sign; unsigned types: the size is ``ctrl & 0x8F``, so a sign bit is an error. A size of 0 or
  more than ``sizeof(T)`` (LP64: int 4, long/long long/size_t 8) is an error.
* float/double (``serialize.h`` and ``float_details.h``): an int64 mantissa and an int16
  exponent in the integer encoding, value ``ldexp(mantissa, exponent)``; exponents 32000, 32001,
  32002 are +inf, -inf and NaN. A first byte with any of the bits 0x70 set is the pre-2013 ASCII
  format, which is not supported.
* bool: one ASCII byte, ``'1'`` or ``'0'``. std::string: an unsigned long length, then the bytes.
* ``resizable_tensor`` (``dlib/cuda/tensor.h``): an int version 2, four long longs (num_samples,
  k, nr, nc), then raw little-endian IEEE float32. ``alias_tensor``: int version 1 and four dims.

Every error names the byte offset and the path of the object being read (``layer<27> con_
details > resizable_tensor``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...errors import WeightsUnavailableError

#: ``sizeof(T)`` on LP64 (where the model was written and is read).
INT_SIZES = {
    "int16": 2,
    "int": 4,
    "long": 8,
    "long long": 8,
    "int64": 8,
    "unsigned int": 4,
    "unsigned long": 8,
    "size_t": 8,
}
UNSIGNED = ("unsigned int", "unsigned long", "size_t")
FLOAT_IS_INF, FLOAT_IS_NINF, FLOAT_IS_NAN = 32000, 32001, 32002


class DlibFormatError(WeightsUnavailableError, ValueError):
    """A byte stream that is not what dlib would have written; names the offset and the object being read."""

    def __init__(self, problem: str, offset: int, context: list[str] | None = None, path: str = "") -> None:
        self.problem, self.offset, self.context = problem, offset, list(context or [])
        where = " > ".join(self.context) if self.context else "file header"
        prefix = f"{path}: " if path else ""
        super().__init__(f"{prefix}at byte offset {offset} (0x{offset:x}) while reading [{where}]: {problem}")


@dataclass(frozen=True)
class Tensor:
    """A ``resizable_tensor``: shape (num_samples, k, nr, nc) and its float32 values."""

    shape: tuple[int, int, int, int]
    data: np.ndarray
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class AliasTensor:
    """An ``alias_tensor``: a shape only."""

    shape: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Reader:
    """Sequential reader over bytes with a position and a stack naming the object being read."""

    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.ctx: list[str] = []

    def error(self, problem: str, offset: int | None = None) -> DlibFormatError:
        return DlibFormatError(problem, self.pos if offset is None else offset, self.ctx)

    @contextlib.contextmanager
    def context(self, name: str) -> Iterator[None]:
        self.ctx.append(name)
        try:
            yield
        finally:
            self.ctx.pop()

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def raw(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise self.error(f"need {n} byte(s) for {what} but only {self.remaining()} remain (truncated file?)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    # -- numbers --------------------------------------------------------------------------
    def int_(self, ctype: str = "int") -> int:
        """``unpack_int`` for the C type ``ctype``."""
        sizeof, signed, start = INT_SIZES[ctype], ctype not in UNSIGNED, self.pos
        if self.remaining() < 1:
            raise self.error(f"end of data while reading the control byte of a {ctype} (truncated file?)")
        ctrl = self.buf[self.pos]
        size = ctrl & (0x0F if signed else 0x8F)
        if size == 0 or size > sizeof:
            sign = " (sign bit set on an unsigned type)" if not signed and ctrl & 0x80 else ""
            raise self.error(
                f"bad control byte 0x{ctrl:02x} for a {ctype}: payload size {size} not in 1..{sizeof}{sign}"
            )
        self.pos += 1
        value = int.from_bytes(self.raw(size, f"a {ctype}"), "little")
        if signed and ctrl & 0x80:
            value = -value
        if signed and not -(1 << (8 * sizeof - 1)) <= value < 1 << (8 * sizeof - 1):
            raise self.error(f"{ctype} value {value} overflows {8 * sizeof} bits", start)
        return value

    def expect_int(self, expected: int | tuple[int, ...], what: str, ctype: str = "int") -> int:
        start, value = self.pos, self.int_(ctype)
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if value not in allowed:
            raise self.error(f"expected {what} {expected!r} but found {value}", start)
        return value

    def float_(self, ctype: str = "float") -> float:
        """``deserialize(float&)``/``(double&)``: mantissa and exponent (``float_details``)."""
        start = self.pos
        if self.remaining() < 1:
            raise self.error(f"end of data while reading a {ctype} (truncated file?)")
        if self.buf[self.pos] & 0x70:
            first = self.buf[self.pos]
            raise self.error(f"a {ctype} in dlib's old ASCII float format (first byte 0x{first:02x})", start)
        with self.context(f"{ctype} mantissa"):
            mantissa = self.int_("int64")
        with self.context(f"{ctype} exponent"):
            exponent = self.int_("int16")
        if exponent == FLOAT_IS_INF:
            value = math.inf
        elif exponent == FLOAT_IS_NINF:
            value = -math.inf
        elif exponent >= FLOAT_IS_NAN:
            value = math.nan
        else:
            value = math.ldexp(float(mantissa), exponent)
        return float(np.float32(value)) if ctype == "float" else value

    # -- bool, string -----------------------------------------------------------------------
    def bool_(self) -> bool:
        start = self.pos
        c = self.raw(1, "a bool")[0]
        if c not in (ord("0"), ord("1")):
            raise self.error(f"a bool must be the ASCII byte '0' or '1', found 0x{c:02x}", start)
        return c == ord("1")

    def string(self) -> str:
        with self.context("std::string length"):
            n = self.int_("unsigned long")
        return bytes(self.raw(n, "std::string bytes")).decode("latin-1")

    def expect_string(self, expected: str | tuple[str, ...], what: str) -> str:
        start = self.pos
        try:
            s = self.string()
        except DlibFormatError as exc:
            problem = f"expected {what} {expected!r} but no string could be read ({exc.problem})"
            raise self.error(problem, start) from None
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if s not in allowed:
            raise self.error(f"expected {what} {expected!r} but found {s[:40]!r}", start)
        return s

    # -- tensors ---------------------------------------------------------------------------
    def _dims(self, start: int) -> tuple[int, int, int, int]:
        dims = tuple(self.int_("long long") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative tensor dimension in {dims}", start)
        return dims  # type: ignore[return-value]

    def tensor(self) -> Tensor:
        start = self.pos
        with self.context("resizable_tensor"):
            self.expect_int(2, "resizable_tensor version")
            dims = self._dims(start)
            n = math.prod(dims)
            raw = self.raw(4 * n, f"{n} float32 values of tensor {dims}")
            data = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        return Tensor(dims, data, start)

    def alias_tensor(self) -> AliasTensor:
        start = self.pos
        with self.context("alias_tensor"):
            self.expect_int(1, "alias_tensor version")
            return AliasTensor(self._dims(start))
