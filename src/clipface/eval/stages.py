"""The stages of a long job on the terminal: what runs now, how long each took, and about how long is left.

The job plans its stages with a first guess of their cost in seconds; after each stage the guess for
the stages of the same kind still to come is scaled by how the finished ones compared with theirs, so
that stages that turn out cheap (cloaks already made, embeddings cached) make the estimate fall.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["Stages"]


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


@dataclass
class _Stage:
    label: str
    kind: str
    guess: float
    took: float | None = None


@dataclass
class Stages:
    """Planned stages, each with a kind and a first guess of its seconds; :meth:`run` one by its label."""

    echo: Callable[[str], None] = print
    stages: list[_Stage] = field(default_factory=list)
    started: float = field(default_factory=lambda: time.perf_counter())

    def plan(self, label: str, kind: str, guess: float) -> None:
        self.stages.append(_Stage(label, kind, max(0.0, guess)))

    def left(self) -> float:
        """Seconds the stages not yet run should take, their guesses scaled by their kind's pace so far."""
        total = 0.0
        for s in self.stages:
            if s.took is not None:
                continue
            done = [d for d in self.stages if d.kind == s.kind and d.took is not None]
            guessed = sum(d.guess for d in done)
            total += s.guess * (sum(d.took for d in done) / guessed if done and guessed > 0 else 1.0)  # type: ignore[misc]
        return total

    @contextmanager
    def run(self, label: str) -> Iterator[None]:
        """Announce the stage ``label``, run the block, then say how long it took and about how long is left."""
        number = next((i for i, s in enumerate(self.stages) if s.label == label), None)
        if number is None:
            self.plan(label, label, 0.0)
            number = len(self.stages) - 1
        stage, n = self.stages[number], len(self.stages)
        if number == 0:
            self.echo(
                f"{n} stage{'s' if n != 1 else ''}, about {_clock(self.left())} in all "
                "(the estimate follows the measured pace)"
            )
        self.echo(f"stage {number + 1}/{n}: {label}")
        start = time.perf_counter()
        try:
            yield
        finally:
            stage.took = time.perf_counter() - start
            rest = self.left()
            tail = f", about {_clock(rest)} left" if any(s.took is None for s in self.stages) else ""
            self.echo(
                f"stage {number + 1}/{n} done in {_clock(stage.took)} "
                f"({_clock(time.perf_counter() - self.started)} elapsed{tail})"
            )
