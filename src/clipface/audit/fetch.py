"""Reading the images an engine's results name, as untrusted input: bounded, public, once per url.

What an engine answers is the engine's to choose, so nothing it names is followed on its word:

* **urls** are fetched only at public addresses (every address the host resolves to is global),
  checked again at every redirect, which are followed by hand (at most :data:`MAX_REDIRECTS`);
  ``allow_private`` lifts this for tests on loopback. Each url is fetched once per audit (its
  outcome is kept), through one pooled connection set, with a browser-like ``User-Agent``; a
  host that fails :attr:`FetchPolicy.host_failures` times in a row (no connection, a timeout; an HTTP
  error status is the host answering) is not asked again. Every
  answer is capped in bytes and in wall time as a whole (a server dripping one byte at a time
  cannot hold a result beyond ``timeout``).
* **local paths** (``image_path``) are read only with ``read_local_paths``, and then only
  regular files under the size cap: a device (``/dev/zero``), a FIFO or a folder is refused
  without being opened.

Known limit: the address is checked on the name's resolution before the request, so a host whose
DNS answer changes between the check and the connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

__all__ = ["Fetched", "FetchPolicy", "Fetcher", "public_host"]

#: Largest image read from a url or a local path.
MAX_FETCH_BYTES = 20 * 2**20
MAX_REDIRECTS = 5
#: What the auditor says it is: an ordinary browser, as sites that refuse scripts otherwise answer them differently.
BROWSER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


@dataclass(frozen=True)
class FetchPolicy:
    """What the auditor may read of a result (see the module docstring)."""

    fetch_urls: bool = True
    allow_private: bool = False
    read_local_paths: bool = False
    user_agent: str = BROWSER_AGENT
    timeout: float = 20.0  # seconds for one url, the whole body included
    max_bytes: int = MAX_FETCH_BYTES
    host_failures: int = 3


@dataclass(frozen=True)
class Fetched:
    """A result's image bytes (``None`` where unread or already judged), its key, where it came from or why not."""

    data: bytes | None
    key: str
    source: str
    ok: bool


def _resolve(host: str) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, None)]


def public_host(host: str, resolve: Callable[[str], list[str]] = _resolve) -> bool:
    """Whether every address ``host`` names (or is) is a global one: not loopback, private, link-local, reserved."""
    try:
        addresses = [host] if _is_ip(host) else resolve(host)
    except OSError:
        return False
    try:
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses)
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Fetcher:
    """Reads result images under a :class:`FetchPolicy`; one per audit (it keeps each url's outcome)."""

    def __init__(
        self, policy: FetchPolicy, transport: Any = None, resolve: Callable[[str], list[str]] = _resolve
    ) -> None:
        import httpx

        self.policy = policy
        self._resolve = resolve
        self._http = httpx.Client(
            timeout=policy.timeout,
            headers={"User-Agent": policy.user_agent},
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )
        self._urls: dict[str, Fetched] = {}  # url -> outcome (the bytes dropped once judged)
        self._failures: dict[str, int] = {}  # host -> failures in a row
        self.requests = 0

    def close(self) -> None:
        self._http.close()

    def read(self, result: dict[str, Any]) -> Fetched:
        """The image of one result: inline ``image``, else ``image_path`` (if allowed), else ``url`` (if allowed)."""
        if isinstance(result.get("image"), str):
            import base64
            import binascii

            try:
                data = base64.b64decode(result["image"], validate=False)
            except (ValueError, TypeError, binascii.Error):
                return Fetched(None, f"id:{result.get('id')}", "the image field is not base64", False)
            return Fetched(data, _digest(data), "image", True)
        path, url = result.get("image_path"), result.get("url")
        why = "no image, image_path or url in the result"
        if isinstance(path, str) and path:
            got = self._local(path)
            if got.ok or not isinstance(url, str):
                return got
            why = got.source
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            if not self.policy.fetch_urls:
                return Fetched(None, f"url:{url}", "url not fetched (--no-fetch)", False)
            if url not in self._urls:
                self._urls[url] = self._fetch(url)
            got = self._urls[url]
            self._urls[url] = Fetched(None, got.key, got.source, got.ok)  # judged once: the bytes need not stay
            return got
        return Fetched(None, f"id:{result.get('id')}", why, False)

    def _local(self, path: str) -> Fetched:
        key = f"path:{path}"
        if not self.policy.read_local_paths:
            return Fetched(
                None, key, "image_path not read (the engine's paths are read only with --read-local-paths)", False
            )
        try:
            st = Path(path).stat()
            if not stat.S_ISREG(st.st_mode):
                return Fetched(None, key, "image_path is not a regular file", False)
            if st.st_size > self.policy.max_bytes:
                return Fetched(None, key, f"image_path over {self.policy.max_bytes // 2**20} MB", False)
            with open(path, "rb") as fh:
                data = fh.read(self.policy.max_bytes + 1)
        except OSError as exc:
            return Fetched(None, key, f"image_path not readable here ({exc.strerror or exc})", False)
        if len(data) > self.policy.max_bytes:
            return Fetched(None, key, f"image_path over {self.policy.max_bytes // 2**20} MB", False)
        return Fetched(data, _digest(data), "image_path", True)

    def _fetch(self, url: str) -> Fetched:
        import httpx

        key, deadline = f"url:{url}", time.monotonic() + self.policy.timeout
        for _ in range(MAX_REDIRECTS + 1):
            host = urlsplit(url).hostname or ""
            if self._failures.get(host, 0) >= self.policy.host_failures:
                return Fetched(
                    None, key, f"host {host} failed {self.policy.host_failures} times: not asked again", False
                )
            if not self.policy.allow_private and not public_host(host, self._resolve):
                return Fetched(None, key, "url at a private, loopback or unresolvable address: not fetched", False)
            try:
                self.requests += 1
                with self._http.stream("GET", url) as resp:
                    if resp.is_redirect and resp.headers.get("location"):
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:  # the host answers: a dead link is no dead host
                        return Fetched(None, key, f"url answered HTTP {resp.status_code}", False)
                    data = bytearray()
                    for chunk in resp.iter_bytes():
                        data += chunk
                        if len(data) > self.policy.max_bytes:
                            return Fetched(None, key, f"url image over {self.policy.max_bytes // 2**20} MB", False)
                        if time.monotonic() > deadline:
                            self._failed(host)
                            return Fetched(None, key, f"url took over {self.policy.timeout:g} s", False)
            except httpx.HTTPError as exc:
                self._failed(host)
                return Fetched(None, key, f"url not reachable ({type(exc).__name__})", False)
            self._failures[host] = 0
            return Fetched(bytes(data), _digest(bytes(data)), "url", True)
        return Fetched(None, key, f"url redirected more than {MAX_REDIRECTS} times", False)

    def _failed(self, host: str) -> None:
        self._failures[host] = self._failures.get(host, 0) + 1


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
