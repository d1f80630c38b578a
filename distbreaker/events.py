"""Transition events: parsing, and the per-process subscriber that keeps local caches fresh.

One subscriber per process, Redis client and channel, shared by all breakers using them
(``subscribe``); ``distbreaker watch`` runs one of its own. It reconnects by itself and
tells its listeners (``Listener``: ``on_event``, ``on_reconnect``, ``on_disconnect``);
while it is disconnected the caches fall back to their bounded staleness (``cache_ttl``),
so nothing ever blocks a call on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import weakref
from typing import Any, Protocol

from distbreaker.config import validate_name
from distbreaker.core import STATES, Event
from distbreaker.store import is_denied

logger = logging.getLogger("distbreaker")


MAX_MESSAGE = 4096  # bytes: our events are a few hundred
_MAX_INT = 2**53 - 1
# The last millisecond of year 9999: a later time cannot even be shown as a date.
MAX_TIME_MS = 253_402_300_799_999


def _bounded(value: object, high: int = _MAX_INT) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # some Lua JSON encoders write integers as floats
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"not a bounded integer: {value!r:.40}")
    return value


def _short_text(value: object, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValueError("not a short printable text")
    return value


def parse_event(data: bytes | str) -> Event | None:
    """An ``Event`` from a channel message, or ``None`` (one debug line) when it is not one.

    Anyone who may publish can write to the channel: every field is checked (known
    states, a valid breaker name, bounded integers, times a date can show, short printable
    texts).
    """
    try:
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"{len(data)} bytes")
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        from_state, to_state = raw["from"], raw["to"]
        if from_state not in STATES or to_state not in STATES:
            raise ValueError("unknown state")
        return Event(
            name=validate_name(raw["name"]),
            from_state=from_state,
            to_state=to_state,
            generation=_bounded(raw["generation"]),
            at_ms=_bounded(raw["at"], MAX_TIME_MS),
            reason=_short_text(raw.get("reason", ""), 200),
            open_until_ms=_bounded(raw.get("open_until", 0), MAX_TIME_MS),
            actor=_short_text(raw.get("actor", ""), 128),
            note=_short_text(raw.get("note", ""), 200),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        logger.debug("event ignored (%s): %r", error, data[:120])
        return None


class Listener(Protocol):
    """What a subscriber tells the objects registered with it."""

    def on_event(self, event: Event) -> None:
        """A transition of a breaker this listener registered for."""

    def on_reconnect(self) -> None:
        """The subscription is (again) live; messages sent while it was not are lost."""

    def on_disconnect(self, error: BaseException) -> None:
        """The connection broke; the subscriber retries by itself."""


class _Listeners:
    """Weakly held listeners per breaker name (``None``: every breaker), so a dropped
    breaker unsubscribes itself. A listener that raises is logged and skipped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str | None, list[weakref.ref[Listener]]] = {}

    def add(self, name: str | None, listener: Listener) -> None:
        with self._lock:
            self._by_name.setdefault(name, []).append(weakref.ref(listener))

    def dispatch(self, event: Event) -> None:
        with self._lock:
            refs = [*self._by_name.get(event.name, ()), *self._by_name.get(None, ())]
        for listener in _alive(refs):
            _safely(listener, "on_event", event)

    def reconnected(self) -> None:
        for listener in self.all():
            _safely(listener, "on_reconnect")

    def disconnected(self, error: BaseException) -> None:
        for listener in self.all():
            _safely(listener, "on_disconnect", error)

    def all(self) -> list[Listener]:
        with self._lock:
            refs = [ref for group in self._by_name.values() for ref in group]
        return _alive(refs)


def _alive(refs: list[weakref.ref[Listener]]) -> list[Listener]:
    return [listener for listener in (ref() for ref in refs) if listener is not None]


def _safely(listener: Listener, method: str, *args: object) -> None:
    try:
        getattr(listener, method)(*args)
    except Exception:
        logger.exception("distbreaker events listener %r failed in %s", listener, method)


def _warn_if_denied(error: BaseException, channel: str, warned: bool) -> bool:
    """One warning when Redis refuses the subscription (an ACL without ``&channel``);
    True once warned. Other errors are ordinary reconnects, logged at debug level."""
    if warned or not is_denied(error):
        return warned
    logger.warning(
        "events subscriber: Redis refused SUBSCRIBE %s (%s); this Redis user needs the "
        "channel permission &%s; caches rely on cache_ttl meanwhile",
        channel,
        error,
        channel,
    )
    return True


class _Reconnect:
    """Back-off between reconnection attempts: 0.1 s doubling to 5 s."""

    def __init__(self) -> None:
        self.delay = 0.1

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, 5.0)
        return delay

    def reset(self) -> None:
        self.delay = 0.1


class Subscriber:
    """A daemon thread listening to the events channel on a sync Redis client."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.listeners = _Listeners()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(
            target=self._run, name=f"distbreaker-events:{channel}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        backoff = _Reconnect()
        while not self._stop.is_set():
            pubsub = None
            try:
                # subscribe confirmations are read: only they say the subscription is live
                # (a refused SUBSCRIBE comes back as an error instead)
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    kind = message.get("type") if message else None
                    if kind == "subscribe" and not self.connected.is_set():
                        self.connected.set()
                        self.listeners.reconnected()
                        backoff.reset()
                    elif kind == "message":
                        self._deliver(message["data"])
            except Exception as error:  # any failure: drop the connection, retry later
                self._lost(error)
                self._stop.wait(backoff.next())
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def _lost(self, error: BaseException) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        logger.debug("events subscriber on %s lost: %s", self.channel, error)
        self._warned = _warn_if_denied(error, self.channel, self._warned)
        if was_connected:
            self.listeners.disconnected(error)

    def _deliver(self, data: bytes | str) -> None:
        event = parse_event(data)
        if event is not None:
            self.listeners.dispatch(event)


class AsyncSubscriber:
    """The asyncio twin: a task on the running loop over a ``redis.asyncio`` client."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.listeners = _Listeners()
        self.connected = asyncio.Event()
        self._warned = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        backoff = _Reconnect()
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a client swallowed it: end anyway
            pubsub = None
            try:
                pubsub = self.client.pubsub()  # confirmations read, as in Subscriber
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if task is not None and task.cancelling():
                        # some clients (the asyncio cluster pub/sub) swallow cancellation
                        raise asyncio.CancelledError
                    kind = message.get("type") if message else None
                    if kind == "subscribe" and not self.connected.is_set():
                        self.connected.set()
                        self.listeners.reconnected()
                        backoff.reset()
                    elif kind == "message":
                        event = parse_event(message["data"])
                        if event is not None:
                            self.listeners.dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                was_connected = self.connected.is_set()
                self.connected.clear()
                logger.debug("events subscriber on %s lost: %s", self.channel, error)
                self._warned = _warn_if_denied(error, self.channel, self._warned)
                if was_connected:
                    self.listeners.disconnected(error)
                await asyncio.sleep(backoff.next())
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pubsub.aclose(), timeout=1.0)


_registry_lock = threading.Lock()
_sync_registry: dict[tuple[int, int, str], Subscriber] = {}
_async_registry: dict[tuple[int, int, int, str], AsyncSubscriber] = {}


def subscribe(client: Any, channel: str, name: str, listener: Listener) -> Subscriber:
    """Register ``listener`` (held weakly) for events of breaker ``name``; start this
    process's subscriber for ``client`` and ``channel`` if needed."""
    key = (os.getpid(), id(client), channel)
    with _registry_lock:
        subscriber = _sync_registry.get(key)
        if subscriber is None:
            subscriber = Subscriber(client, channel)
            _sync_registry[key] = subscriber
    subscriber.listeners.add(name, listener)
    return subscriber


def subscribe_async(client: Any, channel: str, name: str, listener: Listener) -> AsyncSubscriber:
    """The asyncio twin of :func:`subscribe`; call it from inside the running loop."""
    loop = asyncio.get_running_loop()
    key = (os.getpid(), id(loop), id(client), channel)
    with _registry_lock:
        subscriber = _async_registry.get(key)
        if subscriber is None or subscriber._task.done():
            subscriber = AsyncSubscriber(client, channel)
            _async_registry[key] = subscriber
    subscriber.listeners.add(name, listener)
    return subscriber
