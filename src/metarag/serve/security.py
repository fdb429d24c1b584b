"""Who may call the server: the API key, the bind rule, and a bound on request bodies.

- A key is a Bearer token read from an environment variable or a file, never from
  the command line (other users see a process's arguments).
- Binding to anything but a loopback address without a key is refused: the server
  answers from private corpora and its admin endpoints read server-side folders.
- On loopback a key is optional (``require_key`` makes it mandatory); without one,
  the admin endpoints are off, and the Host header must name the loopback host,
  so that a web page cannot reach the server through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

from metarag.errors import MetaRAGError

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class SecurityError(MetaRAGError, ValueError):
    """The server would run in an unsafe setting, or its key cannot be read."""


def trusted_hosts(host: str) -> list[str] | None:
    """The Host headers a server bound to ``host`` accepts: the loopback names (IPv6 as
    browsers send it, in brackets) and ``host`` itself when it is loopback, so a web page
    cannot reach it through a name it rebinds to 127.0.0.1; None (any) otherwise.
    """
    if not is_loopback(host):
        return None
    bare = host.strip("[]")
    names = {*LOOPBACK_NAMES, bare}
    return sorted(names | {f"[{n}]" for n in names if ":" in n})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") only accepts connections from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def read_api_key(env: str | None = None, file: str | Path | None = None) -> str | None:
    """The API key from an environment variable or a file (surrounding whitespace dropped).

    Args:
        env: Name of the environment variable holding the key.
        file: A file holding the key.

    Returns:
        The key, or None when neither source is given.

    Raises:
        SecurityError: Both sources given, a source missing or empty, or a key shorter
            than `MIN_KEY_CHARS` characters.
    """
    if env and file:
        raise SecurityError("give the API key by --api-key-env or by --api-key-file, not both")
    if env:
        if env not in os.environ:
            raise SecurityError(f"--api-key-env {env}: the environment variable is not set")
        key, source = os.environ[env].strip(), f"environment variable {env}"
    elif file:
        path = Path(file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SecurityError(f"--api-key-file {path}: cannot read it ({err.strerror})"
                                ) from None
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("%s can be read by other users; chmod 600 it", path)
        source = f"file {path}"
    else:
        return None
    if len(key) < MIN_KEY_CHARS:
        raise SecurityError(f"the API key in {source} has {len(key)} characters; use at least "
                            f"{MIN_KEY_CHARS} (e.g. python -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')")
    return key


def check_bind(host: str, api_key: str | None, *, require_key: bool = False) -> None:
    """Refuse to serve without a key on a non-loopback host (or when ``require_key``).

    Raises:
        SecurityError: Saying why, and how to give a key.
    """
    how = "give one with --api-key-env VAR or --api-key-file PATH"
    if api_key is None and not is_loopback(host):
        raise SecurityError(f"--host {host} accepts connections from other machines, so an API "
                            f"key is required: {how} (or bind to 127.0.0.1)")
    if api_key is None and require_key:
        raise SecurityError(f"--require-key is set but no API key is given: {how}")


def key_matches(authorization: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <api_key>`` (constant-time)."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              api_key.encode())


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, before the app reads it.

    The declared Content-Length is checked first; a chunked body is read up to the
    limit and then replayed to the app, so nothing larger is ever held in memory.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._too_large(send)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        import json

        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
