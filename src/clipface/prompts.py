"""Prompt templates for zero-shot name identification."""

from __future__ import annotations

from typing import Sequence

#: The paper's single prompt (Bhat and Jain, 2023).
PAPER = ("a photo of {}.",)

#: The 21 templates of the identity inference attack of "Does CLIP Know My Face?"
#: (Hintersdorf et al., 2022/2024).
IDIA = (
    "{}",
    "an image of {}",
    "a photo of {}",
    "{} on a photo",
    "a photo of a person named {}",
    "a person named {}",
    "a man named {}",
    "a woman named {}",
    "the name of the person is {}",
    "a photo of a person with the name {}",
    "{} at a gala",
    "a photo of the celebrity {}",
    "actor {}",
    "actress {}",
    "a colored photo of {}",
    "a black and white photo of {}",
    "a cool photo of {}",
    "a cropped photo of {}",
    "a cropped image of {}",
    "{} in a suit",
    "{} in a dress",
)

PROMPT_SETS: dict[str, tuple[str, ...]] = {"paper": PAPER, "idia": IDIA, "ensemble": IDIA}


def get_prompts(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A named prompt set (``paper``, ``idia``/``ensemble``) or explicit templates with ``{}``."""
    if isinstance(spec, str):
        if spec in PROMPT_SETS:
            return PROMPT_SETS[spec]
        spec = [spec]
    templates = tuple(spec)
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(
            f"prompt {bad[0] if bad else spec!r} is neither a prompt set ({', '.join(PROMPT_SETS)}) "
            "nor a template with {}"
        )
    return templates
