"""Prompt templates for zero-shot name identification."""

from __future__ import annotations

from typing import Sequence

from ..errors import UsageError

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


def _template_problem(template: str) -> str | None:
    """Why ``template`` cannot take a name, or ``None``."""
    if template.count("{}") != 1:
        found = "no {}" if "{}" not in template else f"{template.count('{}')} {{}}"
        return f"a template needs exactly one {{}} where the name goes (found {found})"
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError):
        return "a template may hold no braces other than one {} (write {{ and }} for literal braces)"
    return None


def get_prompts(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A named prompt set (``paper``, ``idia``/``ensemble``) or explicit templates with one ``{}``.

    Anything else is a :class:`~clipface.errors.UsageError` naming the template and the problem.
    """
    if isinstance(spec, str):
        if spec in PROMPT_SETS:
            return PROMPT_SETS[spec]
        spec = [spec]
    templates = tuple(spec)
    if not templates:
        raise UsageError("prompts", "", f"give a prompt set ({', '.join(PROMPT_SETS)}) or a template with {{}}")
    for t in templates:
        problem = _template_problem(t)
        if problem is not None:
            raise UsageError(
                "prompts", t, f"neither a prompt set ({', '.join(PROMPT_SETS)}) nor a usable template: {problem}"
            )
    return templates
