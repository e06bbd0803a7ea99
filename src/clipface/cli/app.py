"""The ``clipface`` command: its sub-commands, and the boundary that turns errors into one line and an exit code.

Exit codes: 0 success, 1 a run error (a model that cannot load, a file that cannot be read),
2 a usage error (a bad argument, found before any work starts), 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .._util import readable
from ..errors import ClipfaceError, ModelNotFoundError, UsageError
from .options import CacheDir, CliOptions, Dataset, IncludeTestModels, Quiet, flag_of

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="How well CLIP models and face recognisers recognise faces."
)
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models on a face dataset.")
app.add_typer(eval_app, name="eval")


def echo(message: str) -> None:
    """A line on standard error (progress, skips, summaries); undecodable file-name bytes shown as ``\\xNN``."""
    typer.echo(readable(message), err=True)


def error_line(message: str) -> None:
    """``error: message`` on standard error, without exiting (one model failed; the others go on)."""
    typer.echo(f"error: {readable(message)}", err=True)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` and exit with ``code``."""
    typer.echo(f"error: {readable(message)}", err=True)
    raise typer.Exit(code)


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; report a usage error (exit 2), a run error (exit 1) or an interruption (130) in one line."""
    try:
        return fn()
    except UsageError as exc:
        fail(exc.as_flag(flag_of(exc.arg)), 2)
    except ModelNotFoundError as exc:
        fail(str(exc), 2)
    except ClipfaceError as exc:
        fail(str(exc), 1)
    except sqlite3.DatabaseError as exc:
        fail(f"a database file is damaged or not a database ({exc}); delete or rebuild it", 1)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(f"{where}{exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        echo("interrupted: finished batches are cached; run the same command again to resume")
        raise typer.Exit(130) from None


def summary(doc: dict[str, Any], keys: tuple[str, ...]) -> None:
    """One line per model with its headline metrics."""
    for r in doc["results"]:
        vals = ", ".join(f"{k} {r[k]:.3f}" for k in keys if isinstance(r.get(k), (int, float)))
        emb = r["embeddings"]
        echo(f"{r['model']}: {vals} ({emb['computed']} embeddings computed, {emb['cached']} cached)")


def finish(doc: dict[str, Any], out: Path) -> None:
    """Announce the files written; exit 1 when some model failed."""
    echo(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    if doc.get("errors"):
        raise typer.Exit(1)


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List registered models and whether each can run here now."""
    from ..models.catalog import models_table

    rows = guard(models_table)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "family", "params", "pretraining", "available", title="clipface models")
    for r in rows:
        name = r["name"] + (" [TEST MODEL]" if r["is_test"] else "")
        table.add_row(
            name, r["family"], r["params"], r["pretraining"], ("yes: " if r["available"] else "no: ") + r["reason"]
        )
    Console(width=160).print(table)


@app.command("run")
def run_cmd(
    dataset: Dataset = "bundled:lfw-mini",
    out: Optional[Path] = typer.Option(Path("runs/main"), "--out", "-o", help="Output folder of the report."),
    include_test_models: IncludeTestModels = False,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """The main job: every available real model (CLIP and face recognisers) on a dataset, one report."""
    o = CliOptions.of(locals())

    def go() -> None:
        from ..api import run_main

        o.check()
        path = run_main(
            o.load_dataset(),
            o.out or Path("runs/main"),
            o.run_options(),
            include_test_models=o.include_test_models,
            echo=echo,
        )
        echo(f"report: {path}")

    guard(go)


def main() -> None:
    """Entry point of the ``clipface`` script."""
    from ..models.backends.threads import prefer_passive_waits

    prefer_passive_waits()  # before torch is imported: idle inference threads sleep instead of spinning
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
