"""``serve()``: check the settings, connect, and run the dashboard on uvicorn.

Every setting is checked before any I/O, each problem in one sentence (``DashboardError``):
a bind address other than loopback needs a token, a token file must be private to its
owner (mode 0600) and hold one token of printable ASCII. The token is never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from distbreaker.config import BreakerConfig
from distbreaker.dashboard.app import LOOPBACK_NAMES, create_app
from distbreaker.diagnostics import (
    NO_TLS,
    TOOL_ERRORS,
    TlsFiles,
    measure_latency,
    open_client,
    open_cluster_client,
    redact_url,
)
from distbreaker.store import is_denied

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
MIN_TOKEN = 16
MAX_TOKEN = 4096


class DashboardError(Exception):
    """A problem to report in one line; ``code`` 1 = failure, 2 = usage."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    token: str | None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __repr__(self) -> str:  # never show the token
        shown = "None" if self.token is None else "'***'"
        return f"Settings(host={self.host!r}, port={self.port}, token={shown})"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; host names are not resolved."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped), or ``DashboardError``."""
    try:
        info = path.stat()
    except OSError as error:
        raise DashboardError(f"cannot read token file {path}: {error.strerror}", 2) from None
    if not stat.S_ISREG(info.st_mode):
        raise DashboardError(f"token file {path} is not a regular file", 2)
    if info.st_mode & 0o077:
        raise DashboardError(
            f"token file {path} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`",
            2,
        )
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DashboardError(f"cannot read token file {path}: {error}", 2) from None
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN:
        raise DashboardError(
            f"token file {path} must hold one token of {MIN_TOKEN} to {MAX_TOKEN} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
            2,
        )
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise DashboardError(
            f"token file {path} must hold printable ASCII without spaces (it is sent as a header)",
            2,
        )
    return token


def check_settings(host: str, port: int, token_file: Path | None, prefix: str) -> Settings:
    """The checked settings, or ``DashboardError`` (before any I/O but the token file)."""
    try:
        BreakerConfig(key_prefix=prefix)
    except ValidationError:
        raise DashboardError(
            f"bad prefix {prefix!r}: use 1-64 characters of A-Z a-z 0-9 . _ - :", 2
        ) from None
    if not host:
        raise DashboardError("--host must not be empty", 2)
    if not 0 < port < 65536:
        raise DashboardError(f"--port {port} is not a TCP port (1-65535)", 2)
    token = read_token(token_file) if token_file is not None else None
    if token is None and not is_loopback(host):
        raise DashboardError(
            f"refusing to listen on {host} without --token-file: beyond loopback the dashboard "
            "needs a token; bind to 127.0.0.1 (the default) or give a token file",
            2,
        )
    return Settings(host, port, token)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or ``DashboardError`` saying why not."""
    try:
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise DashboardError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise DashboardError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def connect(redis_url: str, cluster: bool, tls: TlsFiles = NO_TLS) -> Any:
    """A Redis client that answered a PING, or ``DashboardError``."""
    shown = redact_url(redis_url)
    try:
        if cluster:
            client = open_cluster_client(redis_url, tls=tls)
        else:
            client = open_client(redis_url, tls=tls)
        measure_latency(client)
    except ValueError as error:
        raise DashboardError(f"bad Redis URL {shown!r}: {error}", 2) from None
    except TOOL_ERRORS as error:
        if is_denied(error):
            raise DashboardError(f"Redis at {shown} refused PING: {error}") from None
        what = "a Redis Cluster" if cluster else "Redis"
        raise DashboardError(f"cannot reach {what} at {shown}: {error}") from None
    return client


def show_controls_in_the_log() -> None:
    """One line on stderr per control applied (who, what, which breaker; never the token)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("distbreaker dashboard: %(message)s"))
    log = logging.getLogger("distbreaker.dashboard")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def serve(
    redis_url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token_file: Path | str | None = None,
    prefix: str = "distbreaker",
    cluster: bool = False,
    tls: TlsFiles = NO_TLS,
) -> None:
    """Run the dashboard until interrupted (Ctrl-C or SIGTERM). ``tls``: certificate files
    for a ``rediss://`` URL. A read-only (observer) Redis user serves the view; the
    controls need an operator user."""
    path = None if token_file is None else Path(token_file)
    settings = check_settings(host, port, path, prefix)
    client = connect(redis_url, cluster, tls)
    sock = listen(settings.host, settings.port)
    allowed = LOOPBACK_NAMES | {host.strip("[]")} if settings.loopback else None
    app = create_app(client, prefix, settings.token, allowed_hosts=allowed)
    shown_host = f"[{host}]" if ":" in host else host
    mode = "controls enabled with the token" if settings.token else "read-only"
    print(
        f"distbreaker dashboard on http://{shown_host}:{settings.port}/ ({mode}) for prefix "
        f"{prefix!r} at {redact_url(redis_url)}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    show_controls_in_the_log()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
