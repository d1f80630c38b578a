"""The parent's witness of the events channel: every message, and proof of when it listened.

It subscribes straight to Redis (not through the latency proxy) and sends a PING every
0.2 s on the subscribed connection. Redis answers in order, so once the answer to a PING
sent at ``t`` arrives, every message published before ``t`` has been delivered: that is
``covered_until``, the end of the span in which a missing event is a lost event. Before
and after subscribing it reads the server's ``run_id``; if the two differ, the server was
restarted meanwhile and the connection's messages are not attributed to either.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import replace
from typing import Any

import distbreaker
from benchmarks.soak.timeline import ReceivedEvent, RecorderConnection

PING_EVERY = 0.2
STATES = frozenset({"closed", "open", "half_open", "forced_open", "forced_closed"})


def parse(data: bytes | str, received: float, connection: int) -> ReceivedEvent | None:
    """A transition event, or ``None`` for anything else on the channel."""
    try:
        raw = json.loads(data)
        event = ReceivedEvent(
            received=received,
            connection=connection,
            name=str(raw["name"]),
            from_state=str(raw["from"]),
            to_state=str(raw["to"]),
            generation=int(raw["generation"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if event.from_state not in STATES or event.to_state not in STATES:
        return None
    return event


class EventRecorder:
    """A daemon thread recording the channel until ``stop()``."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.events: list[ReceivedEvent] = []
        self.connections: list[RecorderConnection] = []
        self.other_messages = 0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-recorder", daemon=True)

    def start(self, timeout: float = 10.0) -> EventRecorder:
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the event recorder could not subscribe")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            client = distbreaker.connect(self.url, timeout=1.0)
            try:
                self._listen(client)
            except Exception:  # the server went away or killed us: resubscribe
                self._stop.wait(0.02)
            finally:
                with contextlib.suppress(Exception):
                    client.close()

    def _listen(self, client: Any) -> None:
        before = str(client.info("server")["run_id"])
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            opened = self._confirmed(pubsub)
            after = str(client.info("server")["run_id"])
            index = len(self.connections)
            run_id = after if before == after else None
            self.connections.append(RecorderConnection(index, opened, opened, run_id))
            self._subscribed.set()
            pings: dict[str, float] = {}
            next_ping = opened
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_ping:
                    token = str(len(pings))
                    pings[token] = now
                    pubsub.ping(token)
                    next_ping = now + PING_EVERY
                message = pubsub.get_message(timeout=0.05)
                if message is None:
                    continue
                self._take(message, index, pings)
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()

    @staticmethod
    def _confirmed(pubsub: Any, timeout: float = 2.0) -> float:
        """When the server's SUBSCRIBE confirmation arrived: it had subscribed us by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                return time.monotonic()
        raise TimeoutError("no SUBSCRIBE confirmation")

    def _take(self, message: dict[str, Any], index: int, pings: dict[str, float]) -> None:
        received = time.monotonic()
        if message.get("type") == "pong":
            data = message.get("data") or b""
            sent = pings.get(data.decode() if isinstance(data, bytes) else str(data))
            if sent is not None:
                current = self.connections[index]
                self.connections[index] = replace(current, covered_until=sent)
            return
        if message.get("type") != "message":
            return
        event = parse(message["data"], received, index)
        if event is None:
            self.other_messages += 1
        else:
            self.events.append(event)
