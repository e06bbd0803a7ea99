"""The jobs: one call per command-line job, as the command line runs it (:mod:`.tasks`, :mod:`.study`,
:mod:`.cloaking`, :mod:`.search`, :mod:`.audit`).

Each function checks its arguments first (a :class:`~clipface.errors.UsageError` names the bad
one) and that ``out`` can be written, then runs, writing its results as it goes.
"""

from __future__ import annotations

from .audit import audit
from .cloaking import check_cloak_folders, cloak_folder, cloak_settings, parse_ks, poisoning, protection
from .search import add_images, build_index, query_index
from .study import run_main
from .tasks import TASKS, check_out, check_task, evaluate, report

__all__ = [
    "TASKS",
    "add_images",
    "audit",
    "build_index",
    "check_out",
    "check_task",
    "check_cloak_folders",
    "cloak_folder",
    "cloak_settings",
    "evaluate",
    "parse_ks",
    "poisoning",
    "protection",
    "query_index",
    "report",
    "run_main",
]
