"""The people of the engine-audit tests: who is held out of every engine's index, and Tony Blair's probe photos (the
``probes`` fixture is in ``conftest.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import LFW_MINI

OUTSIDE = "Vladimir_Putin"  # in no engine's index
PROBES = [f"Tony_Blair_{i:04d}.jpg" for i in (1, 2, 3, 4)]  # his photos that the engines do not hold


def indexed_people(root: Path) -> Path:
    """LFW-mini without the outsider and the probe photos, copied under ``root``."""
    people = root / "people"
    shutil.copytree(LFW_MINI, people, ignore=shutil.ignore_patterns(OUTSIDE, *PROBES))
    return people
