"""One pub/sub connection per dashboard server, fanned out by the listener it feeds.

``EventFeed`` is a daemon thread on the events channel: each valid transition goes to
``listener.on_event(event)``, each (re)subscription to ``listener.on_reconnect()`` (events
sent while disconnected are lost, so the listener re-reads Redis). Messages that are not
transitions of a valid breaker name are ignored, with one log line per feed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Protocol

from distbreaker.config import validate_name
from distbreaker.core import Event
from distbreaker.events import parse_event

logger = logging.getLogger("distbreaker.dashboard")


class FeedListener(Protocol):
    """What the feed calls, from its own thread."""

    def on_event(self, event: Event) -> None: ...

    def on_reconnect(self) -> None: ...


class EventFeed:
    """Listens to ``channel`` on a sync redis-py ``client`` until ``close()``."""

    def __init__(
        self,
        client: Any,
        channel: str,
        listener: FeedListener,
        *,
        poll: float = 0.5,
        max_pause: float = 5.0,
    ) -> None:
        self.client = client
        self.channel = channel
        self.listener = listener
        self.connected = threading.Event()
        self.ignored = 0
        self._poll = poll
        self._max_pause = max_pause
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"distbreaker-dashboard-feed:{channel}", daemon=True
        )

    def start(self) -> EventFeed:
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.connected.set()
                pause = 0.1
                self.listener.on_reconnect()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=self._poll)
                    if message and message.get("type") == "message":
                        self._deliver(message.get("data"))
            except Exception as error:  # any failure: drop the connection, subscribe again
                self.connected.clear()
                logger.debug("dashboard feed on %s lost: %s", self.channel, error)
                self._stop.wait(pause)
                pause = min(pause * 2, self._max_pause)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
        self.connected.clear()

    def _deliver(self, data: object) -> None:
        event = parse_event(data) if isinstance(data, bytes | str) else None
        if event is not None:
            try:
                validate_name(event.name)
            except ValueError:
                event = None
        if event is None:
            self.ignored += 1
            if self.ignored == 1:
                logger.warning(
                    "ignoring a message on %s that is not a transition "
                    "(further ones are ignored silently)",
                    self.channel,
                )
            return
        self.listener.on_event(event)
