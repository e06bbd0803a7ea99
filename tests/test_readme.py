"""Every snippet in the README runs: Python blocks are executed, every ``clipface`` command line parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer import _click
from typer.core import TyperGroup
from typer.testing import CliRunner

from clipface.cli import app
from clipface.models.dlib_resnet import availability

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def command_lines() -> list[str]:
    lines = []
    for block in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|;|&", line):
                part = part.strip()
                if part.startswith("clipface "):
                    lines.append(part)
    return lines


def test_readme_has_snippets() -> None:
    assert len(blocks("python")) >= 1 and len(command_lines()) >= 10


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Leaf commands record the values click parsed (types, choices, ranges, callbacks) instead of running."""
    calls: list[tuple[str, dict]] = []
    invoke = _click.core.Command.invoke

    def record(self: _click.core.Command, ctx: _click.Context) -> None:
        if isinstance(self, TyperGroup):
            return invoke(self, ctx)
        calls.append((ctx.command_path, dict(ctx.params)))
        return None

    monkeypatch.setattr(_click.core.Command, "invoke", record)
    return calls


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses(line: str, parsed: list[tuple[str, dict]]) -> None:
    """Each line's option values are parsed as the command would parse them, and reach exactly one command."""
    args = shlex.split(line)[1:]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{line}\n{res.output}"
    if args[-1] == "--help":
        assert not parsed and "Usage" in res.output
        return
    assert len(parsed) == 1, line
    path, params = parsed[0]
    words = [a for a in args if not a.startswith("-")]
    assert path.split()[1:] == words[: len(path.split()) - 1], (line, path)
    for option, value in zip(args, args[1:]):
        if option.startswith("--") and not value.startswith("-") and "=" not in option:
            name = option[2:].replace("-", "_")
            if name in params and isinstance(params[name], (int, float)) and not isinstance(params[name], bool):
                assert float(value) == params[name], (line, option)


def test_a_bad_value_fails_to_parse(parsed: list[tuple[str, dict]]) -> None:
    """The parse is real: a wrong type or an unknown option fails before any command runs."""
    assert CliRunner().invoke(app, ["index", "query", "--index", "x", "-k", "ten"]).exit_code == 2
    assert CliRunner().invoke(app, ["eval", "zeroshot", "--no-such-option"]).exit_code == 2
    assert not parsed


@pytest.mark.skipif(not availability()[0], reason="dlib is not installed")
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_blocks_run(index: int, tmp_path: Path) -> None:
    code = blocks("python")[index]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={**os.environ}, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    """`.ci/run` calls exactly command 2 of the README, and command 1 needs no venv of the user's own."""
    commands = [line for line in blocks("bash")[0].splitlines() if line.startswith("bash install.sh")]
    assert len(commands) == 2 and commands[0].startswith("bash install.sh && .venv/bin/clipface run")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci
    install = (REPO / "install.sh").read_text(encoding="utf-8")
    assert "python3" in install and "-m venv .venv" in install
