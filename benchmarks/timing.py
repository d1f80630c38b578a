"""Per-call timing and Redis command counting, shared by every benchmark section.

Each call is timed on its own with ``perf_counter_ns`` while the garbage collector is off,
so a median and a p99 come from the same samples. The timer's own cost is in every sample,
bare calls included; overheads (breaker minus bare) cancel it.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

import distbreaker


@dataclass
class Samples:
    """Nanosecond durations of single calls, pooled over rounds."""

    values: list[int] = field(default_factory=list)
    commands: int = 0  # Redis commands the subject's client sent during the samples

    def add(self, values: Sequence[int], commands: int) -> None:
        self.values.extend(values)
        self.commands += commands

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.values)
        index = min(len(ordered) - 1, int(fraction * len(ordered)))
        return ordered[index] / 1000  # microseconds

    @property
    def median(self) -> float:
        return self.percentile(0.5)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    @property
    def commands_per_call(self) -> float:
        return self.commands / len(self.values) if self.values else 0.0


def time_calls(call: Callable[[], object], iterations: int) -> list[int]:
    """Time ``iterations`` single calls; exceptions are the caller's business, caught here."""
    clock = time.perf_counter_ns
    samples = [0] * iterations
    gc.collect()
    gc.disable()
    try:
        for index in range(iterations):
            start = clock()
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every sample
                call()
            except Exception:
                pass  # refused and failing cases raise by design
            samples[index] = clock() - start
    finally:
        gc.enable()
    return samples


def warm_up(call: Callable[[], object], iterations: int) -> None:
    for _ in range(iterations):
        with contextlib.suppress(Exception):
            call()


class CommandCounter:
    """Counts the commands one Redis client sends (pub/sub connection included)."""

    def __init__(self) -> None:
        self.sent = 0


_counter_ids = itertools.count()


def counting_client(url: str, counter: CommandCounter, **options: Any) -> redis.Redis:
    """A ``distbreaker.connect`` client whose connections count what they send."""

    def send_command(self: redis.Connection, *args: Any, **kwargs: Any) -> None:
        counter.sent += 1
        redis.Connection.send_command(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    connection_class = type(
        f"CountingConnection{next(_counter_ids)}",
        (redis.Connection,),
        {"send_command": send_command},
    )
    options.setdefault("timeout", 2.0)
    return distbreaker.connect(url, connection_class=connection_class, **options)


def server_commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started, from ``INFO commandstats``."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def commands_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands the server ran between two snapshots, not counting our own ``INFO``."""
    delta = {name: after[name] - before.get(name, 0) for name in after}
    return {name: count for name, count in delta.items() if count and name != "info"}
