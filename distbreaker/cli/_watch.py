"""``distbreaker watch``: print transitions as the events subscriber delivers them."""

from __future__ import annotations

import queue
import sys
import time
from typing import Any

from distbreaker.cli._render import STATE_STYLES, Output, event_json, event_line
from distbreaker.core import Event
from distbreaker.events import Subscriber

# How long the first subscription may take before the command gives up.
SUBSCRIBE_TIMEOUT = 5.0


class Watcher:
    """Listens through ``distbreaker.events.Subscriber`` (which reconnects by itself) and
    prints each transition; says so when the connection is lost and when it is back, since
    transitions meanwhile are not replayed."""

    def __init__(self, client: Any, channel: str, only: str | None, as_json: bool) -> None:
        self.only = only
        self.as_json = as_json
        self.out = Output()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._lost = False
        self._subscriber = Subscriber(client, channel)
        self._subscriber.listeners.add(only, self)

    def wait_connected(self, timeout: float = SUBSCRIBE_TIMEOUT) -> bool:
        return self._subscriber.connected.wait(timeout)

    def close(self) -> None:
        self._subscriber.close()

    # -- the subscriber's listener contract (called on its thread) ----------------------

    def on_event(self, event: Event) -> None:
        self._events.put(event)

    def on_reconnect(self) -> None:
        if self._lost:
            self._lost = False
            print("watching again", file=sys.stderr, flush=True)

    def on_disconnect(self, error: BaseException) -> None:
        self._lost = True
        print(
            f"lost Redis ({error}); reconnecting, transitions meanwhile are missed",
            file=sys.stderr,
            flush=True,
        )

    # -- the command's thread -----------------------------------------------------------

    def run(self, count: int | None, deadline: float) -> int:
        """Print until ``count`` transitions were seen or ``deadline`` (monotonic) passed."""
        seen = 0
        while (count is None or seen < count) and (left := deadline - time.monotonic()) > 0:
            try:
                event = self._events.get(timeout=min(0.5, left))
            except queue.Empty:
                continue
            shown = event_json(event) if self.as_json else event_line(event)
            self.out.line(shown, STATE_STYLES.get(event.to_state))
            seen += 1
        return seen
