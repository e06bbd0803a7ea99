"""Every snippet in the README runs: Python blocks are executed, every ``clipface`` command line parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses(line: str) -> None:
    args = shlex.split(line)[1:]
    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, f"{line}\n{res.output}"


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
