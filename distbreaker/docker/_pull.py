"""A pull's progress stream, read on a daemon thread so the caller can stop waiting."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distbreaker.docker._classify import PullTimeoutError


def stream_error(event: Any) -> str | None:
    """The error text of one progress event, or ``None`` for progress."""
    if not isinstance(event, dict):
        return None
    detail = event.get("errorDetail")
    error = event.get("error")
    if detail is None and error is None:
        return None
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return str(error or detail or "unknown error")


class PullReader:
    """Reads a pull's progress events on a daemon thread so the caller can stop waiting."""

    def __init__(self, start: Callable[[], Iterable[Any]], image: str, timeout: float) -> None:
        self._image = image
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stopped = threading.Event()
        thread = threading.Thread(
            target=self._read, args=(start,), name="distbreaker-docker-pull", daemon=True
        )
        thread.start()

    def events(self) -> Iterator[Any]:
        """Each event as it arrives; ``PullTimeoutError`` once the deadline has passed."""
        while True:
            remaining = self._deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise queue.Empty
                kind, value = self._queue.get(timeout=remaining)
            except queue.Empty:
                raise PullTimeoutError(self._image, self._timeout) from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def stop(self) -> None:
        self._stopped.set()

    def _read(self, start: Callable[[], Iterable[Any]]) -> None:
        try:
            stream = start()
            try:
                for event in stream:
                    if self._stopped.is_set():
                        return
                    self._queue.put(("event", event))
            finally:
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
        except BaseException as error:  # handed to the waiting caller, who re-raises it
            self._queue.put(("error", error))
            return
        self._queue.put(("end", None))
