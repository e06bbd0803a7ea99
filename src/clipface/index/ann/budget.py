"""Which index fits a memory budget (``--memory-budget 16G``): autofaiss's ``max_index_memory_usage``, simplified.

autofaiss (``autofaiss build_index --max_index_memory_usage 16G``) searches the index factories whose
served size fits the budget and keeps the fastest that does. Here the choice is a short ladder, since
every approximate kind re-ranks its candidates exactly from ``vectors.f32``:

1. what ``kind="auto"`` (or the ``kind`` asked for) chooses (:func:`~.faiss_backend.choose_kind`,
   :func:`~.faiss_backend.default_params`), when it fits;
2. otherwise the same product quantiser with fewer sub-quantisers (half, a quarter, ... of the
   default, down to ``dim / 64``: 16, 8, 4 bytes a 512-d vector at 4 bits), re-ranking more candidates
   (``k_factor`` grows as the codes shrink; ``nprobe`` is tuned after the build as always);
3. if even the smallest codes do not fit, one line saying how much is needed, before any work.

What is counted is what a served index holds in RAM: the codes (in the heap, or mapped from
``ann.ivfdata`` after an on-disk merge), 8 bytes of id per vector, the centroids
(``nlist x dim x 4``) and codebooks, and fast-scan's padding of each list to blocks of 32. The exact
vectors (``vectors.f32``) are memory-mapped and read only for re-ranking, so they are not counted,
except for ``flat``, whose every query reads all of them. The budget and the estimate are recorded
in the manifest's parameters (``"memory"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from .faiss_backend import FLAT_MAX, IVF_MIN, choose_kind, default_params

__all__ = ["Fit", "estimate_bytes", "fit_budget", "kind_and_params", "parse_size", "show_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
#: Fast-scan lays each inverted list out in blocks of this many vectors.
BLOCK = 32
#: The most candidates re-ranked per result, however small the codes.
K_FACTOR_MAX = 64


def parse_size(text: str, arg: str = "memory_budget") -> int:
    """Bytes of ``"16G"``, ``"500M"``, ``"1.5T"`` or ``"1000000"`` (K, M, G, T: powers of 1024; a trailing
    ``B``/``iB`` allowed); anything else is a :class:`~clipface.errors.UsageError` naming ``arg``."""
    m = _SIZE.match(str(text))
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()]) if m else 0
    if size <= 0:
        raise UsageError(arg, text, "not a size: give bytes with K, M, G or T (powers of 1024), e.g. 16G or 500M")
    return size


def show_size(n: int) -> str:
    """``n`` bytes for people: ``"48.2 MiB"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def estimate_bytes(kind: str, params: dict[str, Any], n: int, dim: int) -> int:
    """RAM of ``n`` vectors of ``dim`` served by ``kind`` with ``params`` (see the module's docstring)."""
    if kind == "flat":
        return n * dim * 4
    factory = str(params["factory"])
    if kind == "hnsw":  # 8-bit codes, 2 x 32 links of 4 bytes on the base level, about 16 bytes more above
        return n * (dim + 2 * 32 * 4 + 16)
    nlist = int(params["nlist"])
    centroids = nlist * dim * 4
    pq = re.search(r"PQ(\d+)x(\d+)(fs)?", factory)
    if pq:
        m, bits, fast = int(pq.group(1)), int(pq.group(2)), bool(pq.group(3))
        code = (m * bits + 7) // 8
        codebooks = (1 << bits) * dim * 4
        padding = nlist * BLOCK * code if fast else 0
        return n * (code + 8) + centroids + codebooks + padding
    return n * (dim + 8) + centroids + 2 * dim * 4  # SQ8: one byte a dimension, its trained ranges


@dataclass
class Fit:
    """The kind and parameters chosen for a budget, and their estimated RAM."""

    kind: str
    params: dict[str, Any]
    estimate: int


def _smaller_codes(kind: str, params: dict[str, Any], dim: int) -> list[dict[str, Any]]:
    """``params`` with a half, a quarter, ... of its PQ sub-quantisers, down to ``dim / 64``; more re-ranking."""
    pq = re.search(r"PQ(\d+)x(\d+)(\w*)", str(params.get("factory", "")))
    if kind not in ("ivfpqfs", "ivfpq") or not pq:
        return []
    m0, bits, tail = int(pq.group(1)), pq.group(2), pq.group(3)
    out, m = [], m0 // 2
    while m >= max(1, dim // 64):
        if dim % m == 0:
            k_factor = min(K_FACTOR_MAX, int(params["k_factor"]) * m0 // m)
            factory = params["factory"].replace(pq.group(0), f"PQ{m}x{bits}{tail}")
            out.append({**params, "factory": factory, "k_factor": k_factor})
        m //= 2
    return out


def fit_budget(n: int, dim: int, budget: int, kind: str = "auto", flat_max: int = FLAT_MAX) -> Fit:
    """The kind and parameters for ``n`` vectors of ``dim`` whose RAM fits ``budget`` bytes (module docstring);
    a :class:`~clipface.errors.UsageError` naming ``memory_budget`` and the minimum needed where none does."""
    first = choose_kind(n, kind, flat_max)
    options = [(first, default_params(first, n, dim))]
    if first == "flat" and kind == "auto" and n >= IVF_MIN:
        options.append(("ivfpqfs", default_params("ivfpqfs", n, dim)))
    options += [(k, p) for k, p in list(options) for p in _smaller_codes(k, p, dim)]
    fits = [Fit(k, p, estimate_bytes(k, p, n, dim)) for k, p in options]
    for fit in fits:
        if fit.estimate <= budget:
            fit.params = {**fit.params, "memory": {"budget": budget, "estimate": fit.estimate}}
            return fit
    least = min(fits, key=lambda f: f.estimate)
    codes = least.params.get("factory", least.kind)
    raise UsageError(
        "memory_budget",
        budget,
        f"too small ({show_size(budget)}) for {n:,} vectors of {dim} dimensions: the smallest codes ({codes}) "
        f"need {show_size(least.estimate)} in RAM (codes, ids, centroids; vectors.f32 is memory-mapped, not counted)",
    )


def kind_and_params(n: int, dim: int, kind: str, flat_max: int = FLAT_MAX, budget: int | None = None) -> Fit:
    """A new index's kind and parameters: :func:`fit_budget` under a budget, else ``kind="auto"``'s rule."""
    if budget is not None:
        return fit_budget(n, dim, budget, kind, flat_max)
    chosen = choose_kind(n, kind, flat_max)
    params = default_params(chosen, n, dim)
    return Fit(chosen, params, estimate_bytes(chosen, params, n, dim))
