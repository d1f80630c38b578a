"""Instrumentation hooks: explicit callbacks instead of logging sprinkled everywhere.

Register an object with any of ``on_call``, ``on_transition`` or ``on_store_error``;
``distbreaker.metrics`` is one such object. A hook that raises is logged and ignored:
instrumentation never breaks a call.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal, Protocol

from distbreaker.core import Event

logger = logging.getLogger("distbreaker")

CallOutcome = Literal[
    "success", "failure", "slow", "ignored", "rate_limited", "refused", "would_refuse"
]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One call through a breaker: ``duration`` is ``None`` for refused calls.

    ``state`` is the state the call was admitted (or refused) in; ``shared`` is False when
    this process decided alone (Redis unreachable); ``probe`` marks a half-open probe and
    ``generation`` the breaker's generation at admission (-1 when unknown).
    """

    name: str
    outcome: CallOutcome
    state: str
    duration: float | None
    shared: bool
    probe: bool = False
    generation: int = -1


class Hook(Protocol):
    """Any subset of these methods; missing ones are skipped."""

    def on_call(self, info: CallInfo) -> None: ...

    def on_transition(self, event: Event) -> None: ...

    def on_store_error(self, name: str, error: BaseException) -> None: ...


_hooks: list[object] = []
_lock = threading.Lock()


def add_hook(hook: object) -> None:
    """Register ``hook`` for every breaker in this process."""
    with _lock:
        if hook not in _hooks:
            _hooks.append(hook)


def remove_hook(hook: object) -> None:
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def active() -> bool:
    """Whether any hook is registered (lets the hot path skip building call records)."""
    return bool(_hooks)


def emit(method: str, *args: object) -> None:
    """Call ``method`` on every hook that has it."""
    for hook in tuple(_hooks):
        callback = getattr(hook, method, None)
        if callback is None:
            continue
        try:
            callback(*args)
        except Exception:
            logger.exception("distbreaker hook %r failed in %s", hook, method)
