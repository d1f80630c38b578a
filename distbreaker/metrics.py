"""Prometheus metrics (extra ``[metrics]``): per process, and for the fleet from Redis.

``enable_metrics()`` registers a hook (see ``distbreaker.hooks``) that keeps, per breaker
of this process:

- ``distbreaker_calls_total{breaker, outcome}``: success, failure, slow, ignored,
  rate_limited, refused, would_refuse (a dry run);
- ``distbreaker_rejections_total{breaker}``: calls refused without touching the upstream;
- ``distbreaker_transitions_total{breaker, from_state, to_state}``;
- ``distbreaker_state{breaker, state}``: 1 for the state this process last saw, else 0;
- ``distbreaker_store_ok{breaker}``: 0 while this process decides locally because Redis
  is unreachable, 1 while it shares the breaker through Redis;
- ``distbreaker_locally_open{breaker}``: 1 while this process refuses on its own evidence;
- ``distbreaker_store_errors_total{breaker, error}``: Redis errors, by exception type;
- ``distbreaker_call_duration_seconds{breaker, outcome}``: time spent in admitted calls.

Counts are per process; sum them across workers (``sum by (breaker)``).
``serve_metrics(port)`` exposes them over HTTP for a scraper.

``FleetCollector`` is the other view: gauges read from Redis on scrape (through a cached
``distbreaker.fleet.Fleet``), so one target (the dashboard's ``/metrics``) shows every
breaker of the fleet without summing workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"distbreaker.metrics needs prometheus-client ({error}): pip install 'distbreaker[metrics]'"
    ) from error

from distbreaker import hooks
from distbreaker.core import STATES, Event
from distbreaker.fleet import FleetListing
from distbreaker.hooks import CallInfo

Clock = Callable[[], float]

_enabled: dict[int, BreakerMetrics] = {}
_lock = threading.Lock()


class BreakerMetrics:
    """The hook object: counters and gauges on ``registry``, fed by breaker callbacks."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Clock = time.monotonic
    ) -> None:
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
            "Time spent in calls the breaker admitted, by outcome.",
            ["breaker", "outcome"],
            registry=target,
        )
        self.locally_open = Gauge(
            "distbreaker_locally_open",
            "1 while this process refuses on its own evidence (too few reporters fail for "
            "the fleet to open).",
            ["breaker"],
            registry=target,
        )
        self.store_ok = Gauge(
            "distbreaker_store_ok",
            "1 while this process shares the breaker through Redis, "
            "0 while it decides locally because Redis is unreachable.",
            ["breaker"],
            registry=target,
        )
        self._clock = clock
        self._last_state: dict[str, str] = {}
        self._store_error_at: dict[str, float] = {}
        self._seen: set[str] = set()
        self._state_lock = threading.Lock()

    def on_call(self, info: CallInfo) -> None:
        self.calls.labels(info.name, info.outcome).inc()
        if info.outcome == "refused":
            self.rejections.labels(info.name).inc()
        if info.duration is not None:
            self.call_duration.labels(info.name, info.outcome).observe(info.duration)
        self._set_state(info.name, info.state)
        self._set_store_ok(info)

    def on_transition(self, event: Event) -> None:
        self.transitions.labels(event.name, event.from_state, event.to_state).inc()
        self._set_state(event.name, event.to_state)
        if event.reason in ("local_open", "local_closed"):
            self.locally_open.labels(event.name).set(1 if event.reason == "local_open" else 0)

    def on_store_error(self, name: str, error: BaseException) -> None:
        self.store_errors.labels(name, type(error).__name__).inc()
        with self._state_lock:
            self._store_error_at[name] = self._clock()
        self.store_ok.labels(name).set(0)

    def on_store_recovered(self, name: str) -> None:
        self.store_ok.labels(name).set(1)

    def _set_store_ok(self, info: CallInfo) -> None:
        """The first call of a breaker sets the gauge; afterwards the store hooks move it."""
        with self._state_lock:
            if info.name in self._store_error_at or info.name in self._seen:
                return
            self._seen.add(info.name)
        self.store_ok.labels(info.name).set(1 if info.shared else 0)

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


class FleetCollector(Collector):
    """Fleet-level gauges read from Redis on scrape: ``read`` is ``Fleet.read`` (cached).

    Register it on the registry a dashboard or exporter process serves. Per-breaker
    samples are left out while Redis cannot be read (``distbreaker_fleet_store_ok`` 0):
    stale numbers would look current.
    """

    def __init__(self, read: Callable[[], FleetListing]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not read Redis.
        return iter(_fleet_families())

    def collect(self) -> Iterator[Metric]:
        listing = self._read()
        families = _fleet_families()
        by_name = {family.name: family for family in families}
        by_name["distbreaker_fleet_store_ok"].add_metric([], 1 if listing.store_ok else 0)
        if listing.store_ok:
            by_name["distbreaker_fleet_breakers"].add_metric([], len(listing.rows))
            by_name["distbreaker_fleet_scan_truncated"].add_metric([], int(listing.truncated))
            for row in listing.rows:
                _add_breaker(by_name, row.status, row.config)
        return iter(families)


_FLEET_GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("distbreaker_fleet_store_ok", "1 when this process's last read of Redis succeeded.", ()),
    ("distbreaker_fleet_breakers", "Breakers found under the key prefix.", ()),
    ("distbreaker_fleet_scan_truncated", "1 when the key scan stopped at its budget.", ()),
    (
        "distbreaker_fleet_state",
        "1 for the breaker's state in Redis, 0 for the others.",
        ("breaker", "state"),
    ),
    ("distbreaker_fleet_failures_in_window", "Failures inside the breaker's window.", ("breaker",)),
    (
        "distbreaker_fleet_failure_threshold",
        "Failures in the window that open the breaker.",
        ("breaker",),
    ),
    ("distbreaker_fleet_window_seconds", "Length of the breaker's sliding window.", ("breaker",)),
    (
        "distbreaker_fleet_calls_in_window",
        "Calls inside the breaker's window (rate rule).",
        ("breaker",),
    ),
    ("distbreaker_fleet_failure_rate", "Failures per call inside the window (0-1).", ("breaker",)),
    (
        "distbreaker_fleet_time_until_reset_seconds",
        "Seconds until an open breaker lets a probe through (0 when not open).",
        ("breaker",),
    ),
    ("distbreaker_fleet_generation", "Transitions the breaker went through.", ("breaker",)),
    ("distbreaker_fleet_probes_in_flight", "Half-open probe leases held.", ("breaker",)),
)
_FLEET_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("distbreaker_fleet_opens", "Times the breaker opened (as stored in Redis).", "opens_total"),
    ("distbreaker_fleet_failures", "Failures recorded (as stored in Redis).", "failures_total"),
    (
        "distbreaker_fleet_would_refuse",
        "Calls a dry-run breaker would have refused (as stored in Redis).",
        "would_refuse_total",
    ),
)


def _fleet_families() -> list[GaugeMetricFamily | CounterMetricFamily]:
    families: list[GaugeMetricFamily | CounterMetricFamily] = [
        GaugeMetricFamily(name, text, labels=list(labels)) for name, text, labels in _FLEET_GAUGES
    ]
    families += [
        CounterMetricFamily(name, text, labels=["breaker"]) for name, text, _ in _FLEET_COUNTERS
    ]
    return families


def _number(value: object) -> float | None:
    """``value`` as a float when it is a real number (fields may be absent or None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _add_breaker(by_name: dict[str, Any], status: Any, config: Any) -> None:
    name = status.name
    for state in STATES:
        by_name["distbreaker_fleet_state"].add_metric([name, state], int(status.state == state))
    gauges = {
        "distbreaker_fleet_failures_in_window": status.failure_count,
        "distbreaker_fleet_time_until_reset_seconds": status.time_until_reset,
        "distbreaker_fleet_generation": status.generation,
        "distbreaker_fleet_probes_in_flight": getattr(status, "probes_in_flight", None),
        # fields BreakerStatus gains with the rate rule; absent until then
        "distbreaker_fleet_calls_in_window": getattr(status, "calls_in_window", None),
        "distbreaker_fleet_failure_rate": getattr(status, "failure_rate", None),
    }
    if config is not None:
        gauges["distbreaker_fleet_failure_threshold"] = config.failure_threshold
        gauges["distbreaker_fleet_window_seconds"] = config.window
    for metric, value in gauges.items():
        number = _number(value)
        if number is not None:
            by_name[metric].add_metric([name], number)
    for metric, _, field_name in _FLEET_COUNTERS:
        number = _number(getattr(status, field_name, None))
        if number is not None:
            by_name[metric].add_metric([name], number)
