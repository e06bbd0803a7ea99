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
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from ..errors import ClipfaceError, ModelNotFoundError, UsageError
from ..textsafe import readable
from .engine_options import JsonOption
from .expand import api_args, command, flag_of
from .options import (
    CloakOptions,
    CloakReuse,
    EmbedOptions,
    IdentityOptions,
    OutOption,
    SampleOptions,
    StudyOptions,
    check,
)

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


@command(app, "models")
def models_cmd(js: JsonOption) -> None:
    """List registered models and whether each can run here now."""
    from ..models.registry import models_table

    rows = guard(models_table)
    if js.as_json:
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


ReportOut = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Folder of the re-rendered report (default: beside it).")
]
Results = Annotated[Path, typer.Argument(help="A results.json written by clipface.")]
#: The study's cloak options: its own methods, budget and setting (:class:`StudyOptions`) replace these.
STUDY_DROPS = ("method", "mode", "region", "no_budget", "jitter", "eot", "published", "cloak_batch", "prompts", "tau")


@command(
    app,
    "run",
    drop=STUDY_DROPS,
    defaults={"idia_k": "3,5,7,9,10", "surrogate": ["facenet-casia"], "out": Path("runs/main")},
)
def run_cmd(
    data: SampleOptions,
    study: StudyOptions,
    ids: IdentityOptions,
    cl: CloakOptions,
    reuse: CloakReuse,
    emb: EmbedOptions,
    o: OutOption,
) -> None:
    """The study: every chosen model on a dataset, clean and cloaked (report.md, report.html, results.json)."""

    def go() -> None:
        from ..jobs import run_main

        check(cl.surrogate, out=o.out, sample=data)
        opts = emb.run_options([*study.models, *cl.surrogate])
        k, ks = ids.idia()
        given = api_args(
            run_main,
            study,
            ids,
            reuse,
            o,
            skip=("cloak", "prompts", "tau", "idia_k"),
            idia_ks=ks or ((k,) if k else ()),
            non_members=ids.non_member_names(),
            cloak_methods=study.methods(),
            surrogates=cl.surrogate,
            cloak_steps=cl.steps,
            echo=echo,
        )
        path = run_main(data.load(echo), opts=opts, **given)
        echo(f"report: {path} and {path.with_name('report.html')}")

    guard(go)


@app.command("report")
def report_cmd(results: Results, out: ReportOut = None) -> None:
    """Re-render the Markdown and HTML report of a saved results.json."""

    def go() -> None:
        from ..jobs import report

        for path in report(results, out):
            echo(f"wrote {path}")

    guard(go)


@app.command("download")
def download_cmd(
    models: List[str] = typer.Argument(
        ..., help="Model names or presets (default, paper, all); see `clipface models`."
    ),
) -> None:
    """Fetch CLIP checkpoints into the Hugging Face cache (with progress); face recognisers come with their packages."""

    def go() -> None:
        from ..models.download import download_models
        from ..models.registry import resolve_models

        fetched = download_models(resolve_models(models), echo=echo)
        if not all(f.ok for f in fetched):
            raise typer.Exit(1)

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
