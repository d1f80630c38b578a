"""The soak's own ``redis-server``: loopback, append-only file fsynced on every write.

With ``appendfsync always`` every write a client saw acknowledged survives a SIGKILL, so
"SIGKILL + restart" keeps the data (a crash) while "restart empty" removes it (a failover
to an empty replica). The data lives in a tmpfs when there is one, so fsync costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from distbreaker.testing.servers import free_port

AOF_DIR = "appendonlydir"


class RedisProcess:
    """One ``redis-server`` process at a time on a fixed port, restartable."""

    def __init__(self, directory: Path, binary: str = "redis-server") -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.run_id = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, timeout: float = 15.0) -> str:
        """Start (or restart) the server and wait until it answers; returns its run_id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--appenddirname", AOF_DIR,
            "--dir", str(self.directory),
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory.parent / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(  # a fixed argument list, no shell
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                try:
                    self.run_id = str(client.info("server")["run_id"])
                    return self.run_id
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def signal(self, number: signal.Signals) -> None:
        os.kill(self.pid, number)

    def crash(self) -> None:
        """SIGKILL and reap: no shutdown, no final write."""
        self.signal(signal.SIGKILL)
        self._reap()

    def wipe(self) -> None:
        """Remove the persisted data (only while the server is down)."""
        if self.process is not None:
            raise RuntimeError("wipe() needs the server stopped")
        shutil.rmtree(self.directory / AOF_DIR, ignore_errors=True)

    def stop(self) -> None:
        """Stop for good: wake it if stopped, then terminate (kill after 5 s)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=10)
            self.process = None
