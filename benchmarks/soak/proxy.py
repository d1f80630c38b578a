"""A TCP forwarder on loopback that adds latency on demand (standard library, one thread).

Workers reach Redis only through it. ``delay`` is the round trip it adds, half on the way
in and half on the way out; 0 normally. Bytes keep their order when the delay changes,
and bytes already sent by a client that then hung up are still delivered, as a slow
network would: a script can run after its caller gave up waiting for the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

CONNECT_TIMEOUT = 1.0
CHUNK = 65536


class LatencyProxy:
    """Forwards ``host:port`` (chosen at ``start``) to ``host:target_port``."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._transports: set[asyncio.BaseTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 5.0) -> LatencyProxy:
        self._thread = threading.Thread(target=self._run, name="soak-proxy", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            raise RuntimeError("the latency proxy did not start listening")
        return self

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._listening.set()
        async with server:
            await self._stopping.wait()
            for transport in list(self._transports):
                transport.abort()
            handlers = set(self._handlers)
            if handlers:
                _, pending = await asyncio.wait(handlers, timeout=2.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _connection(
        self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            upstream, to_upstream = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.target_port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            to_client.transport.abort()  # as a refused connection looks to the client
            return
        pair = (to_client.transport, to_upstream.transport)
        self._transports.update(pair)
        try:
            results = await asyncio.gather(
                self._pipe(client, to_upstream),
                self._pipe(upstream, to_client),
                return_exceptions=True,
            )
            if any(isinstance(result, BaseException) for result in results):
                for transport in pair:
                    transport.abort()
        finally:
            for transport in pair:
                self._transports.discard(transport)
                transport.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk delivered half the round-trip delay after it came."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(queue, writer))
        last_due = 0.0
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    writer.transport.abort()
                    raise
                last_due = max(loop.time() + self.delay / 2, last_due)
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    @staticmethod
    async def _deliver(
        queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:  # the sender hung up: pass the half-close on
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
