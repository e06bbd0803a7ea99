"""The option groups: every command's options as recorded, groups expanded and handed to the jobs without loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest
import typer
from typer.main import get_command

from clipface.cli import app
from clipface.cli.expand import REGISTRY, api_args, expand, flag, flag_of, group

RECORDED = Path(__file__).parent / "fixtures" / "cli" / "options.json"


def options_of(command: Any) -> dict[str, Any]:
    """Every command's options: names, default, required, repeatable (help text aside)."""
    out: dict[str, Any] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        params = {}
        for p in cmd.params:
            default = p.default if isinstance(p.default, (str, int, float, bool, list, type(None))) else str(p.default)
            params["/".join(sorted(p.opts + p.secondary_opts))] = {
                "default": default,
                "required": p.required,
                "multiple": bool(getattr(p, "multiple", False)),
            }
        out[" ".join(path)] = params

    walk(command, [])
    return out


def test_every_command_takes_the_recorded_options() -> None:
    """``--help`` lists the options recorded before the groups replaced per-command signatures (``run`` gained the
    four embedding options it lacked). Rewrite the file on purpose only: ``python tests/test_cli_options.py``."""
    assert options_of(get_command(app)) == json.loads(RECORDED.read_text())


def test_a_field_means_one_flag_and_flags_map_back() -> None:
    assert flag_of("n_gallery") == "--gallery" and flag_of("index_dir") == "--index" and flag_of("src") == "--in"
    assert (
        flag_of("flip") == "--flip" and flag_of("k") == "-k" and flag_of("$CLIPFACE_API_TOKEN") == "$CLIPFACE_API_TOKEN"
    )
    assert flag_of("users") == "--user" and flag_of("cors_origins") == "--cors-origin"
    with pytest.raises(TypeError, match="means two flags"):

        @group
        class Clash:
            seed: int = flag(0, "--random-seed", help="another flag under a known name")

    assert REGISTRY["seed"].metadata["decls"] == ("--seed",)


@group
class _Base:
    shared: int = flag(1, "--shared", help="in both groups")


@group
class _One(_Base):
    first: str = flag("a", "--first", help="one")


@group
class _Two(_Base):
    second: List[str] = flag([], "--second", help="two")


def test_groups_expand_share_a_base_and_arrive_filled() -> None:
    seen: dict[str, Any] = {}

    def cmd(one: _One, two: _Two, extra: int = 5) -> None:
        seen.update(one=one, two=two, extra=extra)

    sub = typer.Typer()
    sub.command("x")(expand(cmd, defaults={"first": "b"}))
    sub.command("y")(lambda: None)
    from typer.testing import CliRunner

    result = CliRunner().invoke(sub, ["x", "--shared", "7", "--second", "p", "--second", "q"])
    assert result.exit_code == 0, result.output
    assert seen["one"] == _One(shared=7, first="b") and seen["two"] == _Two(shared=7, second=["p", "q"])
    assert seen["extra"] == 5
    with pytest.raises(TypeError, match="does not take"):
        expand(cmd, defaults={"nope": 1})

    def only_two(two: _Two) -> None:
        seen.update(only=two)

    sub.command("z")(expand(only_two, drop=("second",)))
    assert CliRunner().invoke(sub, ["z", "--second", "p"]).exit_code == 2  # a dropped option is not taken
    assert CliRunner().invoke(sub, ["z"]).exit_code == 0 and seen["only"] == _Two(shared=1, second=[])


def test_api_args_hands_a_group_over_and_refuses_to_lose_a_field() -> None:
    def job(*, shared: int, first: str, other: int = 0) -> None: ...

    assert api_args(job, _One(shared=2, first="c"), other=3) == {"shared": 2, "first": "c", "other": 3}
    with pytest.raises(TypeError, match="takes no 'second'"):
        api_args(job, _Two())
    assert api_args(job, _Two(), skip=("second",)) == {"shared": 1}


if __name__ == "__main__":
    RECORDED.write_text(json.dumps(options_of(get_command(app)), indent=1, sort_keys=True) + "\n")
