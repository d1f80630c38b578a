"""A real Docker registry on loopback, and a fault proxy in front of it, for integration tests.

``RegistryServer`` runs Debian's ``docker-registry`` (the CNCF distribution registry) in the
foreground with its own config: filesystem storage in a temporary directory, plain HTTP on
a free loopback port; it is stopped by its pid. The engine lists ``127.0.0.0/8`` as
insecure, so ``127.0.0.1:PORT/name:tag`` is pushed and pulled over plain HTTP.

``FaultProxy`` listens on its own loopback port and, by ``mode`` (switchable at any time):

- ``pass``: relays bytes both ways to the registry;
- ``refuse``: nothing listens (connection refused);
- ``unavailable``: answers every HTTP request ``503 Service Unavailable``;
- ``rate_limited``: answers ``429`` with the distribution spec's ``TOOMANYREQUESTS`` body;
- ``hang``: reads the request and never answers (until the proxy stops);
- ``reset``: reads the request and closes the connection with a TCP RST.

The engine first tries HTTPS on an insecure registry: outside ``pass`` a TLS ClientHello is
closed at once (as a plain HTTP server would fail it), so the engine falls back to HTTP.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Literal

from distbreaker.testing import free_port

Mode = Literal["pass", "refuse", "unavailable", "rate_limited", "hang", "reset"]
TOO_MANY_REQUESTS = {
    "errors": [
        {
            "code": "TOOMANYREQUESTS",
            "message": "too many requests",
            "detail": "pull rate limit exceeded for this test",
        }
    ]
}
_TLS_HANDSHAKE = 0x16


class RegistryServer:
    """``docker-registry serve`` on ``127.0.0.1:port`` with storage under ``directory``."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> RegistryServer:
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
        )
        log = (self.directory / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            time.sleep(0.05)
        output = (self.directory / "registry.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.address}: {output}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class FaultProxy:
    """A TCP proxy on loopback in front of ``upstream`` that fails on demand (see module)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._mode: Mode = "pass"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stopped = threading.Event()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self.requests: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            if mode == "refuse":
                self._close_listener()
            elif self._listener is None and not self._stopped.is_set():
                self._listen()
        self._drop_open()  # kept-alive connections must meet the new mode too

    def start(self) -> FaultProxy:
        with self._lock:
            self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            self._close_listener()
        self._drop_open()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- listening ----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._accepting = threading.Thread(
            target=self._accept, args=(listener,), name="fault-proxy", daemon=True
        )
        self._accepting.start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: refuse mode or stop
            self.connections += 1
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _drop_open(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    # -- one connection -----------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        mode = self._mode
        try:
            if mode == "pass":
                self._relay(client)
                return
            head = self._read_head(client)
            if head is None:
                return
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if mode == "hang":
                while self._mode == "hang" and not self._stopped.wait(0.05):
                    pass
            elif mode == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "unavailable":
                client.sendall(_answer(503, "Service Unavailable", b"service unavailable\n"))
            elif mode == "rate_limited":
                body = json.dumps(TOO_MANY_REQUESTS).encode()
                client.sendall(_answer(429, "Too Many Requests", body, "application/json"))
        except OSError:
            pass
        finally:
            self._forget(client)

    def _read_head(self, client: socket.socket) -> bytes | None:
        """The request line and headers; ``None`` for a TLS probe or a closed connection."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk or (chunk[0] == _TLS_HANDSHAKE and not data):
                return None
            data += chunk
        return data.split(b"\r\n\r\n", 1)[0]

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        upstream.settimeout(None)
        self._track(upstream)
        copier = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
        copier.start()
        _copy(client, upstream)
        copier.join(10)
        self._forget(upstream)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            target.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _answer(status: int, reason: str, body: bytes, kind: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Docker-Distribution-Api-Version: registry/2.0\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body
