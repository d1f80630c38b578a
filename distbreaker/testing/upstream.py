"""A flaky HTTP upstream on loopback, for the demo and for tests (standard library only).

``FlakyUpstream`` answers every request according to its ``mode``, which may be switched
at any time from another thread:

- ``ok``: 200 with a small JSON body;
- ``error``: 503 (an outage: the breaker counts it);
- ``reset``: the connection is closed with a TCP RST before any answer;
- ``hang``: no answer for ``hang_seconds`` (cut short by ``stop()``), then 200;
- ``rate_limited``: 429 with ``Retry-After: retry_after``.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

MODES: tuple[str, ...] = ("ok", "error", "reset", "hang", "rate_limited")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # a stopped upstream must not wait for a hanging handler
    block_on_close = False
    # the stdlib's backlog of 5 makes bursts of clients wait for a SYN retransmit (1 s)
    request_queue_size = 128
    upstream: FlakyUpstream


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without this, Nagle and delayed ACKs add
    # about 40 ms to every answer on loopback
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        upstream = self.server.upstream
        count = upstream._count_request()
        mode = upstream.mode
        if mode == "reset":
            self._reset()
        elif mode == "error":
            self._answer(503, {"error": "upstream unavailable", "request": count})
        elif mode == "rate_limited":
            headers = {"Retry-After": str(upstream.retry_after)}
            self._answer(429, {"error": "rate limited", "request": count}, headers)
        elif mode == "hang":
            if upstream._stopping.wait(upstream.hang_seconds):
                self._reset()
                return
            self._answer(200, {"ok": True, "request": count, "late": True})
        else:
            self._answer(200, {"ok": True, "request": count})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def _answer(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into an RST instead of a FIN
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # the buffered reader holds a reference to the socket: drop it so close() is real
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the demo prints its own lines."""


class FlakyUpstream:
    """An HTTP server on loopback whose behaviour is set by ``mode``; see the module doc."""

    MODES: ClassVar[tuple[str, ...]] = MODES

    def __init__(
        self,
        mode: str = "ok",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hang_seconds: float = 30.0,
        retry_after: int = 60,
    ) -> None:
        self.host = host
        self.port = port
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.mode = mode
        self._requests = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown upstream mode {value!r}; expected one of {', '.join(MODES)}")
        self._mode = value

    @property
    def requests(self) -> int:
        """Requests received so far, whatever the answer."""
        with self._lock:
            return self._requests

    def _count_request(self) -> int:
        with self._lock:
            self._requests += 1
            return self._requests

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FlakyUpstream is not started")
        return f"http://{self.host}:{self.port}/"

    def start(self) -> FlakyUpstream:
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.upstream = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"flaky-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging requests and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FlakyUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._server else "stopped"
        return f"FlakyUpstream(mode={self.mode!r}, {where}, requests={self.requests})"
