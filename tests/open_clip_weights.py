"""Seeded weights for open_clip-layout test checkpoints (numpy only, so open_clip's side venv can import it).

``tests/fixtures/open_clip/make_reference.py`` fills open_clip's own parameter list (names and shapes, as
open_clip builds them) with these values and records open_clip's embeddings; the test fills the same list the
same way and checks clipface's embeddings against them. Weights are large enough (1/sqrt(fan-in)) that
attention is far from uniform and a swapped query and key or a transposed projection shows.
"""

from __future__ import annotations

import math

import numpy as np


def seeded_state(keys: list[tuple[str, list[int]]], seed: int) -> dict[str, np.ndarray]:
    """One float32 array per (name, shape) of ``keys``, drawn in order from ``seed``."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in keys:
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("logit_scale"):
            value = np.full(shape, math.log(1 / 0.07))
        elif leaf == "weight" and len(shape) == 1:  # layer norms
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif leaf.endswith("bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            value = rng.standard_normal(shape) / math.sqrt(fan_in)
        out[name] = value.astype(np.float32)
    return out
