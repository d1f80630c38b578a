"""``make soak`` for real: the latency proxy, and the short chaos run as a subprocess."""

from __future__ import annotations

import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.soak.proxy import LatencyProxy
from benchmarks.soak.report import HEADER
from benchmarks.soak.schedule import FAULTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODES = ("cached", "strict")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        return received, time.monotonic() - started


def test_the_proxy_adds_its_delay_to_a_round_trip_and_keeps_the_bytes(echo_port: int) -> None:
    proxy = LatencyProxy(echo_port).start()
    try:
        fast, _ = _round_trip(proxy.port, b"PING\r\n")
        proxy.delay = 0.3
        slow, elapsed = _round_trip(proxy.port, b"x" * 200_000)
    finally:
        proxy.stop()
    assert fast == b"PING\r\n"
    assert slow == b"x" * 200_000
    assert elapsed >= 0.3


def test_the_proxy_refuses_clients_when_its_target_is_down() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
    proxy = LatencyProxy(dead_port).start()
    try:
        received, _ = _round_trip(proxy.port, b"PING\r\n")
    except OSError:  # reset or broken pipe: refused either way
        received = b""
    finally:
        proxy.stop()
    assert received == b""


@pytest.fixture(scope="module")
def short_run() -> subprocess.CompletedProcess[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_short_soak_prints_one_row_per_fault_and_mode(
    short_run: subprocess.CompletedProcess[str],
) -> None:
    assert short_run.returncode in (0, 1), short_run.stderr  # 2: the harness failed
    assert HEADER in short_run.stdout
    for fault in FAULTS:
        for mode in MODES:
            assert f"| {fault} | {mode} |" in short_run.stdout
    assert "Result: " in short_run.stdout


def test_the_short_soak_holds_every_invariant(short_run: subprocess.CompletedProcess[str]) -> None:
    assert short_run.returncode == 0, short_run.stdout
