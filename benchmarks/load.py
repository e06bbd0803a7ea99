"""Load test of the search server on loopback: image searches from concurrent clients, then a pixel-bomb round.

The server is ``clipface serve`` in a child process on 127.0.0.1, over an index of LFW-mini built
with ``--model`` (default ``test-tiny-random``: the server's own work, decoding, limits, FAISS and
JSON, with little model cost; name a real model to include its cost). A sampler reads the
server's resident memory (``VmRSS``) from ``/proc`` every 10 ms, and its lifetime peak
(``VmHWM``) after each round. Rounds, each from ``--clients`` client threads:

1. ``search``: ``--searches`` image searches with LFW-mini photos (k=10); each must be a 200;
2. ``pixel-bomb``: ``--bombs`` uploads of a 49 kB single-colour 7000 x 5500 PNG (38.5 Mpx, under
   the 40 Mpx limit); each must be a 200 or a 413;
3. ``pixel-bomb-rgba``: the same with an alpha channel (163 kB; Pillow holds 4 bytes a pixel and
   compositing on white copies the frame), the costliest PNG to decode;
4. ``rgba-bombs-with-searches``: those bombs interleaved with ordinary searches, whose latency is
   reported apart (they must not queue behind the bombs);
5. ``search-after``: the searches again, to see that the bombs left nothing behind.

For each: requests, p50/p95/max latency, status counts, errors (any other status, or no
answer), RSS before, peak and after (2 s later). The exit status is 1 when a round has errors or
the peak RSS exceeds ``--max-rss-mb`` (2048: the issue's bound).

    python benchmarks/load.py            # 500 searches and 32 bombs, 16 clients
    python benchmarks/load.py --quick    # 60 searches, 16 bombs and 6 RGBA bombs, 16 clients (CI scale)

Writes ``benchmarks/results/load.json`` and ``.md`` (``load_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text
from clipface.report.markdown import md_table
from clipface.versions import versions

HERE = Path(__file__).resolve().parent
LFW_MINI = HERE.parent / "src" / "clipface" / "data" / "bundled" / "lfw-mini"
BOUNDARY = "clipface-load-boundary"


def bomb_png(mode: str = "L", width: int = 7000, height: int = 5500) -> bytes:
    """A single-colour PNG: 49 kB in greyscale (the issue's), 163 kB with an alpha channel (the costliest to decode)."""
    out = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else (128,) * len(mode)).save(out, "PNG")
    return out.getvalue()


def multipart(data: bytes, filename: str, k: int = 10) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def post(port: int, body: bytes, timeout: float) -> tuple[int | None, float]:
    """Status (``None``: no answer) and latency in ms of one image search."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/search/image", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = conn.getresponse()
        response.read()
        status: int | None = response.status
    except OSError:
        status = None
    finally:
        conn.close()
    return status, (time.perf_counter() - start) * 1000


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The largest ``VmRSS`` of a process since the last :meth:`reset`."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kb, self._stop = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, proc_kb(self.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(self.every)

    def reset(self) -> int:
        self.peak_kb = proc_kb(self.pid, "VmRSS")
        return self.peak_kb

    def stop(self) -> None:
        self._stop.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index: Path, port: int, log: Any, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "clipface", "serve", "-i", str(index), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--no-auth", "--rate-limit", "0"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 180 s")


def run_round(
    name: str,
    bodies: list[tuple[str, bytes]],
    port: int,
    clients: int,
    ok: dict[str, set[int]],
    sampler: Sampler,
    pid: int,
    timeout: float,
) -> dict[str, Any]:
    """Send ``(kind, body)`` requests from ``clients`` threads; latency for the round and for each kind."""
    before = sampler.reset() / 1024
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda kb: (kb[0], *post(port, kb[1], timeout)), bodies))
    seconds = time.perf_counter() - start
    peak = sampler.peak_kb / 1024
    time.sleep(2.0)
    lat = np.array([ms for _, _, ms in answers])
    statuses = Counter("no answer" if s is None else str(s) for _, s, _ in answers)
    errors = sum(1 for kind, s, _ in answers if s not in ok[kind])
    by_kind = {
        kind: {
            "requests": len(mine),
            "latency_p50_ms": round(float(np.percentile(mine, 50)), 1),
            "latency_p95_ms": round(float(np.percentile(mine, 95)), 1),
        }
        for kind in sorted({k for k, _, _ in answers})
        if (mine := [ms for k, _, ms in answers if k == kind])
    }
    return {
        "round": name,
        "requests": len(bodies),
        "clients": clients,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(bodies) / seconds, 1),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
        "latency_max_ms": round(float(lat.max()), 1),
        "by_kind": by_kind,
        "statuses": dict(sorted(statuses.items())),
        "errors": errors,
        "rss_before_mb": round(before),
        "rss_peak_mb": round(peak),
        "rss_after_mb": round(proc_kb(pid, "VmRSS") / 1024),
        "vm_hwm_mb": round(proc_kb(pid, "VmHWM") / 1024),
    }


def markdown(doc: dict[str, Any]) -> str:
    c, m = doc["config"], doc["machine"]
    head = ["round", "requests", "clients", "req/s", "p50 ms", "p95 ms", "max ms", "search p50/p95 ms"]
    head += ["statuses", "errors"]
    head += ["RSS before MB", "RSS peak MB", "RSS 2 s after MB"]
    rows = [
        [
            r["round"],
            r["requests"],
            r["clients"],
            f"{r['requests_per_s']:.1f}",
            f"{r['latency_p50_ms']:.0f}",
            f"{r['latency_p95_ms']:.0f}",
            f"{r['latency_max_ms']:.0f}",
            (
                f"{r['by_kind']['search']['latency_p50_ms']:.0f} / {r['by_kind']['search']['latency_p95_ms']:.0f}"
                if "search" in r["by_kind"]
                else "—"
            ),
            ", ".join(f"{k}: {v}" for k, v in r["statuses"].items()),
            r["errors"],
            r["rss_before_mb"],
            r["rss_peak_mb"],
            r["rss_after_mb"],
        ]
        for r in doc["rounds"]
    ]
    verdict = "passed" if doc["passed"] else "FAILED"
    return (
        "# Server load test (loopback)\n\n"
        f"`clipface serve` over LFW-mini ({c['model']}) in a child process on 127.0.0.1; the pixel bomb is a "
        f"{c['bomb_bytes'] / 1000:.0f} kB single-colour 7000 x 5500 PNG (38.5 Mpx), the RGBA one the same with an "
        f"alpha channel ({c['bomb_rgba_bytes'] / 1000:.0f} kB). RSS sampled every 10 ms from "
        f"/proc; the server's lifetime peak (VmHWM) was {doc['vm_hwm_mb']} MB. Bound: every answer 200 (or 413 for "
        f"bombs) and peak RSS under {c['max_rss_mb']} MB: **{verdict}**. {m['cpu']}, {m['logical_cpus']} logical "
        f"CPUs, load average {m['load_average_1m_at_start']} at start (a shared machine: latencies vary).\n\n"
        + md_table(head, rows)
        + "\n\nRerun: `python benchmarks/load.py"
        + (" --quick" if c["quick"] else "")
        + (f" --mmap-threshold {c['mmap_threshold']}" if c["mmap_threshold"] is not None else "")
        + "`.\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="60 searches, 16 bombs, 6 RGBA bombs (CI scale)")
    p.add_argument("--searches", type=int, default=500)
    p.add_argument("--bombs", type=int, default=32)
    p.add_argument("--rgba-bombs", type=int, default=None, help="RGBA bombs per round (default: --bombs)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--model", default="test-tiny-random")
    p.add_argument("--max-rss-mb", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a client waits for one answer")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=None,
        help="the server's $CLIPFACE_MMAP_THRESHOLD (bytes; 0: glibc's own growing threshold); default: the server's",
    )
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.searches, args.bombs, args.rgba_bombs = 60, 16, 6
    if args.rgba_bombs is None:
        args.rgba_bombs = args.bombs
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    machine = machine_info()
    photos = [path.read_bytes() for path in sorted(LFW_MINI.glob("*/*.jpg"))]
    searches = [multipart(photos[i % len(photos)], "face.jpg") for i in range(args.searches)]
    bomb, bomb_rgba = bomb_png(), bomb_png("RGBA")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clipface-load-") as tmp:
        index = Path(tmp) / "index"
        build = [sys.executable, "-m", "clipface", "index", "build", "-m", args.model, "--images", str(LFW_MINI)]
        subprocess.run([*build, "-i", str(index), "-q", "--no-cache"], check=True, capture_output=True)
        port = free_port()
        with open(Path(tmp) / "server.log", "w") as server_log:
            env = {} if args.mmap_threshold is None else {"CLIPFACE_MMAP_THRESHOLD": str(args.mmap_threshold)}
            server = start_server(index, port, server_log, env)
            sampler = Sampler(server.pid)
            sampler.start()
            try:
                post(port, searches[0], args.timeout)  # warm up: first request loads lazily-imported code
                rounds = []
                ok = {"search": {200}, "bomb": {200, 413}}
                found = [("search", b) for b in searches]
                bombs = [("bomb", multipart(bomb, "bomb.png"))] * args.bombs
                bombs_rgba = [("bomb", multipart(bomb_rgba, "bomb.png"))] * args.rgba_bombs
                # bombs and searches interleaved: do ordinary searches wait behind the bombs?
                mixed = [item for pair in zip(bombs_rgba, found[::3]) for item in pair]
                for name, bodies in (
                    ("search", found),
                    ("pixel-bomb", bombs),
                    ("pixel-bomb-rgba", bombs_rgba),
                    ("rgba-bombs-with-searches", mixed),
                    ("search-after", found),
                ):
                    rounds.append(run_round(name, bodies, port, args.clients, ok, sampler, server.pid, args.timeout))
                    r = rounds[-1]
                    log(
                        f"{name}: {r['requests']} requests, p50 {r['latency_p50_ms']:.0f} ms, p95 "
                        f"{r['latency_p95_ms']:.0f} ms, statuses {r['statuses']}, RSS {r['rss_before_mb']} -> peak "
                        f"{r['rss_peak_mb']} -> {r['rss_after_mb']} MB"
                    )
                vm_hwm = round(proc_kb(server.pid, "VmHWM") / 1024)
            finally:
                sampler.stop()
                server.terminate()
                server.wait(30)
    peak = max(vm_hwm, *(r["rss_peak_mb"] for r in rounds))
    passed = all(r["errors"] == 0 for r in rounds) and peak < args.max_rss_mb
    doc = {
        "benchmark": "load",
        "config": {
            "model": args.model,
            "searches": args.searches,
            "bombs": args.bombs,
            "rgba_bombs": args.rgba_bombs,
            "clients": args.clients,
            "bomb_bytes": len(bomb),
            "bomb_rgba_bytes": len(bomb_rgba),
            "max_rss_mb": args.max_rss_mb,
            "mmap_threshold": args.mmap_threshold,
            "quick": args.quick,
        },
        "machine": machine,
        "versions": versions(),
        "seconds": round(time.perf_counter() - start, 1),
        "rounds": rounds,
        "vm_hwm_mb": vm_hwm,
        "passed": passed,
    }
    name = "load_quick" if args.quick else "load"
    if args.mmap_threshold is not None:
        name += f"-mmap{args.mmap_threshold}"
    write_json(args.out / f"{name}.json", doc)
    write_text(args.out / f"{name}.md", markdown(doc))
    log(f"wrote {args.out / name}.json and .md in {doc['seconds']:.0f} s: {'passed' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
