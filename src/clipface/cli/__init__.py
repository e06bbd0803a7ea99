"""The ``clipface`` command line: options parsed into one object, then one call of the Python API
(:mod:`clipface.jobs`)."""

from __future__ import annotations

from . import cloak, eval, search  # noqa: F401  (each module adds its commands to the app)
from .app import app, main

__all__ = ["app", "main"]
