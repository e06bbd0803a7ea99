"""What a cloak run does: method, mode (its DSSIM budget), budget region, jitter, seed and parameters.

``mode`` sets the budget: the DSSIM thresholds of Fawkes v1.0 (``protection.py`` ``mode2param``),
low 0.004, mid 0.012, high 0.017, for both methods, so that they compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import ClipfaceError
from ..models.base import Encoder
from . import fawkes, lowkey

__all__ = ["METHODS", "MODES", "REGIONS", "CloakSettings"]

MODES: dict[str, float] = {"low": 0.004, "mid": 0.012, "high": 0.017}
METHODS = ("fawkes", "lowkey")
#: Where the DSSIM budget is measured: the whole image, or the union of the surrogates' crops.
REGIONS = ("image", "face")
#: Largest mean absolute difference (0-255 scale) allowed between a :class:`View` of an image and


@dataclass(frozen=True)
class CloakSettings:
    """What a cloak run does; with the surrogates, it names the outputs (:meth:`digest`)."""

    method: str = "fawkes"
    mode: str = "high"
    enforce_budget: bool = True
    region: str = "image"
    work_side: int = 1024
    seed: int = 0
    params: fawkes.FawkesParams | lowkey.LowKeyParams | None = None  # None: the method's defaults
    #: Largest random move, in pixels, of each edge of a face box at every step (0: as published).
    #: Front ends detect the face again on the cloak and find a box a few pixels off; optimising
    #: over such moves (an expectation over transformations) keeps the cloak aligned with them.
    jitter: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ClipfaceError(f"unknown cloaking method {self.method!r}: choose {' or '.join(METHODS)}")
        if self.mode not in MODES:
            raise ClipfaceError(f"unknown cloaking mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.region not in REGIONS:
            raise ClipfaceError(f"unknown budget region {self.region!r}: choose {' or '.join(REGIONS)}")
        if self.jitter < 0:
            raise ClipfaceError(f"jitter must be >= 0 pixels, got {self.jitter}")
        kind = fawkes.FawkesParams if self.method == "fawkes" else lowkey.LowKeyParams
        if self.params is None:
            object.__setattr__(
                self, "params", fawkes.fawkes_params(self.mode) if self.method == "fawkes" else lowkey.LowKeyParams()
            )
        elif not isinstance(self.params, kind):
            raise ClipfaceError(
                f"cloaking method {self.method} needs {kind.__name__}, not {type(self.params).__name__}"
            )

    @property
    def budget(self) -> float | None:
        """The DSSIM budget every saved cloak satisfies (``None``: no hard budget)."""
        return MODES[self.mode] if self.enforce_budget else None

    @property
    def steps(self) -> int:
        """Optimisation steps: Fawkes' ``max_step`` or LowKey's iterations."""
        p = self.params
        return p.max_step if isinstance(p, fawkes.FawkesParams) else p.steps  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["budget"] = self.budget
        return out

    def digest(self, surrogates: Sequence[Encoder]) -> str:
        """Hash of the settings and the surrogates' weights and front ends (resumes match on it)."""
        doc = {
            "version": 1,
            **self.to_dict(),
            "surrogates": [[s.name, s.fingerprint, s.preprocess_id] for s in surrogates],
        }
        return hashlib.sha256(repr(sorted(doc.items())).encode()).hexdigest()[:16]
