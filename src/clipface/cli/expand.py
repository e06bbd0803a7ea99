"""Option groups expanded into commands: each flag, its default and its help declared once, as a dataclass field.

A group is a ``@group`` dataclass whose fields are made with :func:`flag`. A command names the
groups it takes as parameters (``def cmd(data: SampleOptions, emb: EmbedOptions)``), and
:func:`command` registers it with typer under a signature in which every field of every group is
an option of its own; the command is then called with the groups filled in. A command may leave
fields out (``drop``, they keep the group's default) or give some another default
(``defaults``). Two groups that share a field through a common base class (``seed``) share its
one option and its value.

This is the role of click's ``@click.option`` stacks shared with decorators, and of typer's
``Annotated`` aliases, with the values arriving as one typed object per group, which the command
hands to the Python API as it is.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterable, TypeVar, get_type_hints

import typer
from typing_extensions import Annotated

__all__ = ["REQUIRED", "api_args", "command", "flag", "flag_of", "group"]

T = TypeVar("T")

#: The default of a flag that must be given (typer's ``...``).
REQUIRED: Any = ...
#: API argument names that differ from their flag's field name (the API says ``n_gallery``, the CLI ``--gallery``).
API_NAMES = {"n_gallery": "gallery", "aligner": "align", "index_dir": "index"}
#: Every field of every group, by name, in the order the groups were declared.
REGISTRY: dict[str, dataclasses.Field[Any]] = {}


def flag(default: Any, *decls: str, help: str, argument: bool = False) -> Any:
    """A group field: the option's default (:data:`REQUIRED` for none), its names (``"--seed"``) and help."""
    meta = {"decls": decls, "help": help, "argument": argument}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(cls: type[T]) -> type[T]:
    """Make ``cls`` an option group (a keyword-only dataclass) and record its flags for :func:`flag_of`."""
    made = dataclasses.dataclass(kw_only=True)(cls)
    for f in dataclasses.fields(made):
        known = REGISTRY.setdefault(f.name, f)
        if known.metadata["decls"] != f.metadata["decls"]:
            raise TypeError(
                f"option field {f.name!r} means two flags: {known.metadata['decls']} and {f.metadata['decls']}"
            )
    return made


def flag_of(arg: str) -> str:
    """The command-line flag of an API argument name (``batch_size`` -> ``--batch-size``; ``$VAR`` stays)."""
    if arg.startswith("$"):
        return arg
    f = REGISTRY.get(API_NAMES.get(arg, arg))
    if f is not None and f.metadata["decls"]:
        decls = f.metadata["decls"]
        return next((d.split("/")[0] for d in decls if d.startswith("--")), decls[0])
    return "--" + arg.replace("_", "-")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def _option(f: dataclasses.Field[Any], hint: Any) -> Any:
    info = typer.Argument if f.metadata["argument"] else typer.Option
    return Annotated[hint, info(*f.metadata["decls"], help=f.metadata["help"])]


def expand(
    fn: Callable[..., Any], drop: Iterable[str] = (), defaults: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """``fn`` as typer sees it: every group parameter replaced by its fields (see the module's docstring)."""
    drop, defaults = set(drop), dict(defaults or {})
    hints = get_type_hints(fn, include_extras=True)
    params: dict[str, inspect.Parameter] = {}
    owners: dict[str, dataclasses.Field[Any]] = {}
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in inspect.signature(fn).parameters.values():
        cls = hints.get(p.name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            params[p.name] = p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            continue
        field_hints = get_type_hints(cls, include_extras=True)
        names = []
        for f in dataclasses.fields(cls):
            if f.name in drop:
                continue
            names.append(f.name)
            if f.name in owners:
                if owners[f.name] is not f:
                    raise TypeError(f"{fn.__name__}: option {f.name!r} comes from two groups")
                continue  # one option shared by two groups (a common base class)
            owners[f.name] = f
            default = defaults.pop(f.name, _default(f))
            params[f.name] = inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if default is REQUIRED else default,
                annotation=_option(f, field_hints[f.name]),
            )
        groups[p.name] = (cls, names)
    if defaults:
        raise TypeError(f"{fn.__name__}: defaults for options it does not take: {sorted(defaults)}")

    def run(**values: Any) -> Any:
        filled = {name: cls(**{n: values[n] for n in names}) for name, (cls, names) in groups.items()}
        plain = {k: v for k, v in values.items() if k not in owners}
        return fn(**filled, **plain)

    run.__name__, run.__qualname__, run.__doc__, run.__module__ = (
        fn.__name__,
        fn.__qualname__,
        fn.__doc__,
        fn.__module__,
    )
    run.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
    run.__annotations__ = {name: p.annotation for name, p in params.items()}
    return run


def command(
    app: typer.Typer, name: str, *, drop: Iterable[str] = (), defaults: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as ``app``'s command ``name``, its groups expanded (:func:`expand`)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name)(expand(fn, drop, defaults))
        return fn

    return register


def api_args(fn: Callable[..., Any], *groups: Any, skip: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
    """The keyword arguments of ``fn`` that ``groups`` hold, by field name, with ``extra`` added (and winning).

    A group is handed to the API as it is: every field must be a parameter of ``fn`` of the same
    name, unless it is in ``skip`` or ``extra`` (a value the command turns into another), so that
    no option is ever dropped on its way.
    """
    params = inspect.signature(fn).parameters
    skip = set(skip) | set(extra)
    out: dict[str, Any] = {}
    for g in groups:
        for f in dataclasses.fields(g):
            if f.name in skip:
                continue
            if f.name not in params:
                raise TypeError(f"{fn.__name__} takes no {f.name!r} (option of {type(g).__name__})")
            out[f.name] = getattr(g, f.name)
    return {**out, **extra}
