"""A Hugging Face hub on loopback, serving saved models, for testing downloads without a network.

It answers the calls ``huggingface_hub.snapshot_download`` makes: the model info
(``/api/models/REPO/revision/REV``), the file tree, and ``HEAD``/``GET`` of
``/REPO/resolve/REV/FILE`` with the commit, ETag and size headers the client checks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """``with FakeHub({"org/name": folder}) as hub:`` serves each folder's files at ``hub.url``."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {
            repo: {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file()} for repo, folder in repos.items()
        }
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                return

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()

            def _answer(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                parts = path.strip("/").split("/")
                data, headers, status = b'{"error": "not found"}', {"Content-Type": "application/json"}, 404
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = "/".join(parts[2:4])
                    if repo in hub.repos:
                        files = hub.repos[repo]
                        if len(parts) >= 6 and parts[4] == "tree":
                            listing = [
                                {"type": "file", "path": n, "size": f.stat().st_size, "oid": COMMIT}
                                for n, f in files.items()
                            ]
                            data, status = json.dumps(listing).encode(), 200
                        else:
                            info = {
                                "id": repo,
                                "modelId": repo,
                                "sha": COMMIT,
                                "private": False,
                                "siblings": [{"rfilename": n} for n in files],
                            }
                            data, status = json.dumps(info).encode(), 200
                elif len(parts) >= 5 and parts[2] == "resolve":
                    repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                    f = hub.repos.get(repo, {}).get(name)
                    if f is not None:
                        data = f.read_bytes()
                        etag = hashlib.sha256(data).hexdigest()
                        headers = {
                            "Content-Type": "application/octet-stream",
                            "ETag": f'"{etag}"',
                            "X-Repo-Commit": COMMIT,
                        }
                        status = 200
                self._send(status, data, headers)
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
