"""``clipface serve`` in a child process on loopback (127.0.0.1, a free port), for tests that need a real server."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

STARTUP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def serve(
    index: Path, *args: str, token: str | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen]]:
    """Start the server on the index; yield its port and process once ``/api/health`` answers; stop it."""
    port = free_port()
    env = {**(env or {}), **({"CLIPFACE_API_TOKEN": token} if token else {})}
    cmd = [sys.executable, "-m", "clipface", "serve", "-i", str(index), "--host", "127.0.0.1", "--port", str(port)]
    with child_server([*cmd, *args], port, "/api/health", env) as proc:
        yield port, proc


@contextlib.contextmanager
def child_server(
    cmd: list[str], port: int, health: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` (a server on ``port``); yield its process once ``health`` answers 200; stop it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log = tempfile.TemporaryFile("w+")  # not a pipe: a server that logs much must never block on it
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited with {proc.returncode}: {log.read()}")
            try:
                if get(port, health, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {STARTUP_S} s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        log.close()
