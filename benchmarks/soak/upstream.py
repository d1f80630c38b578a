"""The upstream the workers call: distbreaker's ``FlakyUpstream`` in a process of its own.

It runs apart from the parent so that serving hundreds of requests a second does not slow
the fault driver, the latency proxy or the event recorder down. The parent switches its
mode through a pipe.
"""

from __future__ import annotations

import multiprocessing
import socketserver
from multiprocessing.connection import Connection
from typing import Any

try:
    from distbreaker.upstream import FlakyUpstream
except ImportError:  # its new home once distbreaker.testing becomes a package
    from distbreaker.testing.upstream import FlakyUpstream

STOP = "stop"
# socketserver listens with a backlog of 5: a fleet connecting at once overflows it and
# the kernel drops SYNs, which cost the caller a 1 s retransmit. This process is ours.
BACKLOG = 256


def serve(control: Connection, hang_seconds: float) -> None:
    """Child process: serve until told to stop; report the request count."""
    socketserver.TCPServer.request_queue_size = BACKLOG
    with FlakyUpstream("ok", hang_seconds=hang_seconds) as upstream:
        control.send(upstream.port)
        while True:
            message = control.recv()
            if message == STOP:
                control.send(upstream.requests)
                return
            upstream.mode = message


class UpstreamProcess:
    """Handle on the child: ``url``, ``set_mode(mode)``, ``stop() -> requests served``."""

    def __init__(self, context: Any, hang_seconds: float) -> None:
        self._control, child = multiprocessing.Pipe()
        args = (child, hang_seconds)
        self._process = context.Process(target=serve, args=args, name="soak-upstream")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> UpstreamProcess:
        self._process.start()
        if not self._control.poll(timeout):
            self._process.terminate()
            raise RuntimeError("the upstream process did not start")
        self.port = int(self._control.recv())
        return self

    def set_mode(self, mode: str) -> None:
        self._control.send(mode)

    def stop(self, timeout: float = 10.0) -> int | None:
        requests = None
        if self._process.is_alive():
            self._control.send(STOP)
            if self._control.poll(timeout):
                requests = int(self._control.recv())
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
        return requests
