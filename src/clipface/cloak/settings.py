"""What a cloak run does: method, mode (its DSSIM budget), budget region, jitter, seed and parameters.

``mode`` sets the budget: the DSSIM thresholds of Fawkes v1.0 (``protection.py`` ``mode2param``),
low 0.004, mid 0.012, high 0.017, for both methods, so that they compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import ClipfaceError, check_choice, check_int
from ..models.base import Encoder
from . import fawkes, lowkey
from .eot import EOT_TRANSFORMS

__all__ = ["METHODS", "MODES", "PUBLISHED", "REGIONS", "ROBUST", "CloakSettings"]

#: The DSSIM budget of each mode: Fawkes v1.0's ``th`` (declared once, in :data:`.fawkes.MODE_PARAMS`).
MODES: dict[str, float] = {mode: params[0] for mode, params in fawkes.MODE_PARAMS.items()}
METHODS = ("fawkes", "lowkey")
#: The default, robust setting: the face-box jitter and the photo-site transformations (measured in
#: ``benchmarks/results/protection/``: white-box protection 0.87 -> 0.97 with the jitter alone).
ROBUST: dict[str, Any] = {"jitter": 6, "eot": ()}
#: The methods as published (``--published``): the exact face crop, nothing else.
PUBLISHED: dict[str, Any] = {"jitter": 0, "eot": ()}
#: Where the DSSIM budget is measured: the whole image, or the union of the surrogates' crops.
REGIONS = ("image", "face")
#: Largest mean absolute difference (0-255 scale) allowed between a :class:`View` of an image and


@dataclass(frozen=True)
class CloakSettings:
    """What a cloak run does; with the surrogates, it names the outputs (:meth:`digest`)."""

    method: str = "fawkes"
    mode: str = "high"
    enforce_budget: bool = True
    region: str = "face"
    work_side: int = 1024
    seed: int = 0
    params: fawkes.FawkesParams | lowkey.LowKeyParams | None = None  # None: the method's defaults
    #: Largest random move, in pixels, of each edge of a face box at every step (0: as published).
    #: Front ends detect the face again on the cloak and find a box a few pixels off; optimising
    #: over such moves (an expectation over transformations) keeps the cloak aligned with them.
    jitter: int = ROBUST["jitter"]
    #: Further transformations averaged over (:mod:`~clipface.cloak.eot`: ``resize``, ``jpeg``).
    eot: tuple[str, ...] = ROBUST["eot"]

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("mode", self.mode, tuple(MODES))
        check_choice("region", self.region, REGIONS)
        check_int("jitter", self.jitter, 0, 64, allow_none=False)
        for name in self.eot:
            check_choice("eot", name, EOT_TRANSFORMS)
        object.__setattr__(self, "eot", tuple(sorted(set(self.eot))))
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

    @property
    def published(self) -> bool:
        """Whether this is the methods' published setting (no face-box jitter, no other transformation)."""
        return self.jitter == 0 and not self.eot

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["eot"] = list(self.eot)
        out["budget"] = self.budget
        out["setting"] = "published" if self.published else "robust"
        return out

    def digest(self, surrogates: Sequence[Encoder]) -> str:
        """Hash of the settings and the surrogates' weights and front ends (resumes match on it)."""
        doc = {
            "version": 1,
            **self.to_dict(),
            "surrogates": [[s.name, s.fingerprint, s.preprocess_id] for s in surrogates],
        }
        return hashlib.sha256(repr(sorted(doc.items())).encode()).hexdigest()[:16]
