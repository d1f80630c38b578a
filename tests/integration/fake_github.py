"""A fake GitHub REST API on loopback: real HTTP over real sockets, for integration tests.

``FakeGitHub`` serves the few endpoints ``distbreaker.github`` uses and misbehaves on
demand through ``mode`` (switchable from the test at any time):

- ``ok``: answer like GitHub (repositories, App installations, installation tokens);
- ``error``: 503 with a JSON message;
- ``reset``: close the connection with a TCP RST before answering;
- ``hang``: say nothing for ``hang_seconds`` (past the client's timeout), then 503;
- ``primary_rate_limit``: 403 with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``;
- ``secondary_rate_limit``: 403 with ``retry-after: retry_after``.

App JWTs are verified with the test's RSA public key (RS256, ``iss`` = app id, lifetime at
most ten minutes); a bad one gets 401, as on GitHub.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt

MODES = ("ok", "error", "reset", "hang", "primary_rate_limit", "secondary_rate_limit")
_REPO = re.compile(r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)")
_INSTALLATION = re.compile(r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/installation")
_EXCHANGE = re.compile(r"/app/installations/(?P<id>[0-9]+)/access_tokens")


@dataclass
class Installation:
    id: int
    repositories: set[str]
    permissions: dict[str, str] = field(default_factory=lambda: {"contents": "read"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeGitHub


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        fake._note(self.command, self.path, dict(self.headers.items()))
        mode = fake.mode
        if mode == "reset":
            self._reset()
        elif mode == "error":
            self._answer(503, {"message": "Service Unavailable"})
        elif mode == "hang":
            if not fake._stopping.wait(fake.hang_seconds):
                self._answer(503, {"message": "too late"})
            else:
                self._reset()
        elif mode == "primary_rate_limit":
            reset = str(int(time.time() + fake.rate_limit_reset_in))
            headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
            self._answer(403, {"message": "API rate limit exceeded"}, headers)
        elif mode == "secondary_rate_limit":
            headers = {"retry-after": str(fake.retry_after)}
            self._answer(403, {"message": "You have exceeded a secondary rate limit"}, headers)
        else:
            status, body = fake._route(self.command, self.path, self.headers.get("Authorization"))
            self._answer(status, body)

    do_GET = do_POST = _serve

    def _answer(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into an RST instead of a FIN
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


class FakeGitHub:
    """The fake API; see the module docstring. ``requests`` counts every request received."""

    def __init__(
        self,
        *,
        app_id: int = 4242,
        public_key: Any = None,
        hang_seconds: float = 3.0,
        retry_after: int = 90,
        rate_limit_reset_in: int = 600,
        token_lifetime: float = 3600.0,
    ) -> None:
        self.app_id = app_id
        self.public_key = public_key
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.rate_limit_reset_in = rate_limit_reset_in
        self.token_lifetime = token_lifetime
        self.mode = "ok"
        self.public_repositories: set[str] = set()
        # user token -> {"owner/repo": permissions}
        self.user_tokens: dict[str, dict[str, dict[str, bool]]] = {}
        self.installations: dict[int, Installation] = {}
        self.issued: dict[str, int] = {}
        self.jwts_accepted = 0
        self.jwts_rejected = 0
        self.paths: Counter[str] = Counter()
        self.last_headers: dict[str, str] = {}
        self._requests = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeGitHub:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the API ----------------------------------------------------------------------

    def _note(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests += 1
            self.paths[f"{method} {path}"] += 1
            self.last_headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}

    def _route(
        self, method: str, path: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        bearer = authorization.removeprefix("Bearer ") if authorization else None
        if method == "GET" and (match := _INSTALLATION.fullmatch(path)):
            return self._installation(f"{match['owner']}/{match['name']}", bearer)
        if method == "POST" and (match := _EXCHANGE.fullmatch(path)):
            return self._exchange(int(match["id"]), bearer)
        if method == "GET" and (match := _REPO.fullmatch(path)):
            return self._repository(f"{match['owner']}/{match['name']}", bearer)
        return 404, {"message": "Not Found"}

    def _repository(self, name: str, bearer: str | None) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"full_name": name, "private": name not in self.public_repositories}
        if bearer is None:
            return (200, body) if name in self.public_repositories else (404, _NOT_FOUND)
        if bearer in self.issued:
            installation = self.installations[self.issued[bearer]]
            if name not in installation.repositories:
                return 404, _NOT_FOUND
            # GitHub says push=false to installation tokens whatever they may do
            body["permissions"] = {"admin": False, "push": False, "pull": True}
            return 200, body
        if bearer not in self.user_tokens:
            return 401, {"message": "Bad credentials"}
        permissions = self.user_tokens[bearer].get(name)
        if permissions is None:
            return 404, _NOT_FOUND
        body["permissions"] = permissions
        return 200, body

    def _installation(self, name: str, bearer: str | None) -> tuple[int, dict[str, Any]]:
        if not self._valid_jwt(bearer):
            return 401, {"message": "A JSON web token could not be decoded"}
        for installation in self.installations.values():
            if name in installation.repositories:
                return 200, {"id": installation.id, "app_id": self.app_id}
        return 404, _NOT_FOUND

    def _exchange(self, installation_id: int, bearer: str | None) -> tuple[int, dict[str, Any]]:
        if not self._valid_jwt(bearer):
            return 401, {"message": "A JSON web token could not be decoded"}
        installation = self.installations.get(installation_id)
        if installation is None:
            return 404, _NOT_FOUND
        token = "ghs_" + secrets.token_hex(20)
        with self._lock:
            self.issued[token] = installation_id
        expires = datetime.fromtimestamp(time.time() + self.token_lifetime, UTC)
        return 201, {
            "token": token,
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": dict(installation.permissions),
            "repository_selection": "selected",
        }

    def _valid_jwt(self, bearer: str | None) -> bool:
        try:
            claims = jwt.decode(
                bearer or "",
                self.public_key,
                algorithms=["RS256"],
                issuer=str(self.app_id),
                options={"require": ["iat", "exp", "iss"]},
            )
            lifetime = int(claims["exp"]) - int(claims["iat"])
            valid = int(claims["exp"]) - time.time() <= 600 and lifetime <= 660
        except jwt.PyJWTError:
            valid = False
        with self._lock:
            if valid:
                self.jwts_accepted += 1
            else:
                self.jwts_rejected += 1
        return valid


_NOT_FOUND = {"message": "Not Found"}
