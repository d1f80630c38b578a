"""Prometheus metrics for every breaker in this process (extra ``[metrics]``).

``enable_metrics()`` registers a hook (see ``distbreaker.hooks``) that keeps, per breaker:

- ``distbreaker_calls_total{breaker, outcome}``: success, failure, slow, ignored,
  rate_limited, refused;
- ``distbreaker_rejections_total{breaker}``: calls refused without touching the upstream;
- ``distbreaker_transitions_total{breaker, from_state, to_state}``;
- ``distbreaker_state{breaker, state}``: 1 for the state this process last saw, else 0;
- ``distbreaker_store_errors_total{breaker, error}``: Redis errors, by exception type;
- ``distbreaker_call_duration_seconds{breaker}``: time spent in admitted calls.

Counts are per process; sum them across workers (``sum by (breaker)``).
``serve_metrics(port)`` exposes them over HTTP for a scraper.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from distbreaker import hooks
from distbreaker.core import STATES, Event
from distbreaker.hooks import CallInfo

_enabled: dict[int, BreakerMetrics] = {}
_lock = threading.Lock()


class BreakerMetrics:
    """The hook object: counters and gauges on ``registry``, fed by breaker callbacks."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        target = REGISTRY if registry is None else registry
        self.registry = target
        self.calls = Counter(
            "distbreaker_calls",
            "Calls through a breaker, by outcome.",
            ["breaker", "outcome"],
            registry=target,
        )
        self.rejections = Counter(
            "distbreaker_rejections",
            "Calls refused by an open breaker without touching the upstream.",
            ["breaker"],
            registry=target,
        )
        self.transitions = Counter(
            "distbreaker_transitions",
            "State transitions seen by this process.",
            ["breaker", "from_state", "to_state"],
            registry=target,
        )
        self.state = Gauge(
            "distbreaker_state",
            "1 for the breaker's state as this process last saw it, 0 for the others.",
            ["breaker", "state"],
            registry=target,
        )
        self.store_errors = Counter(
            "distbreaker_store_errors",
            "Redis errors met by a breaker, by exception type.",
            ["breaker", "error"],
            registry=target,
        )
        self.call_duration = Histogram(
            "distbreaker_call_duration_seconds",
            "Time spent in calls the breaker admitted.",
            ["breaker"],
            registry=target,
        )
        self._last_state: dict[str, str] = {}
        self._state_lock = threading.Lock()

    def on_call(self, info: CallInfo) -> None:
        self.calls.labels(info.name, info.outcome).inc()
        if info.outcome == "refused":
            self.rejections.labels(info.name).inc()
        if info.duration is not None:
            self.call_duration.labels(info.name).observe(info.duration)
        self._set_state(info.name, info.state)

    def on_transition(self, event: Event) -> None:
        self.transitions.labels(event.name, event.from_state, event.to_state).inc()
        self._set_state(event.name, event.to_state)

    def on_store_error(self, name: str, error: BaseException) -> None:
        self.store_errors.labels(name, type(error).__name__).inc()

    def _set_state(self, name: str, state: str) -> None:
        # a call reports its state every time; the gauges change only on a new one
        with self._state_lock:
            if self._last_state.get(name) == state:
                return
            self._last_state[name] = state
        for candidate in STATES:
            self.state.labels(name, candidate).set(1 if candidate == state else 0)


def enable_metrics(registry: CollectorRegistry | None = None) -> BreakerMetrics:
    """Count every breaker of this process on ``registry`` (the default one if None).

    Calling it again with the same registry returns the same hook.
    """
    target = REGISTRY if registry is None else registry
    with _lock:
        metrics = _enabled.get(id(target))
        if metrics is None:
            metrics = BreakerMetrics(target)
            _enabled[id(target)] = metrics
    hooks.add_hook(metrics)
    return metrics


def disable_metrics(metrics: BreakerMetrics) -> None:
    """Stop feeding ``metrics`` (its values stay on the registry)."""
    hooks.remove_hook(metrics)


def serve_metrics(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Enable metrics and serve ``/metrics`` on ``addr:port`` from a daemon thread.

    Returns the HTTP server; ``shutdown()`` and ``server_close()`` stop it. Loopback by
    default: exposing metrics beyond the host is a decision, not a default.
    """
    enable_metrics(registry)
    server, _thread = _start_http_server(port, addr, REGISTRY if registry is None else registry)
    return server
