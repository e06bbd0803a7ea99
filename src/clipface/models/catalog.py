"""The registry as rows, with availability checked on this machine (no network is touched)."""

from __future__ import annotations

from typing import Any

from .registry import list_models


def models_table() -> list[dict[str, Any]]:
    """One row per registered model: name, family, size, data, and whether it can run here."""
    rows = []
    for spec in list_models():
        try:
            ok, reason = spec.availability()
        except Exception as exc:  # a broken optional backend must not hide the other models
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "is_test": spec.is_test,
                "params": f"{spec.approx_params_m:g}M" if spec.approx_params_m else "?",
                "pretraining": spec.pretraining,
                "hf_id": spec.hf_id,
                "available": ok,
                "reason": reason,
                "description": spec.description,
            }
        )
    return rows
