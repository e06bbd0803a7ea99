"""The ``clipface`` command line: option groups (:mod:`.options`) expanded into each command (:mod:`.expand`), then
one job of :mod:`clipface.jobs`."""

from __future__ import annotations

from . import cloak, eval, search  # noqa: F401  (each module adds its commands to the app)
from .app import app, main

__all__ = ["app", "main"]
