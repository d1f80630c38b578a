"""What is measured: each breaker (or floor) with one prepared callable per case.

Cases: ``healthy`` (closed, the operation succeeds), ``refused`` (open, the operation is
never run) and ``failing`` (closed, the operation raises ``ConnectionError``, which the
harness catches outside; thresholds are set so the breaker stays closed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pybreaker
import redis

from benchmarks.timing import CommandCounter, counting_client
from distbreaker import Breaker, BreakerConfig
from distbreaker.store import breaker_keys, common_args, script_source

Case = Literal["healthy", "refused", "failing"]
CASES: tuple[Case, ...] = ("healthy", "refused", "failing")
NEVER = 10**9  # a failure threshold the benchmark never reaches

BARE = "bare function call"
PYBREAKER_MEMORY = "pybreaker, in-process"
INTERLOCK_MEMORY = "interlock-cb, in-process"
CACHED = "distbreaker cached"
STRICT = "distbreaker strict"
RATE = "distbreaker cached, rate rule"
PYBREAKER_REDIS = "pybreaker + CircuitRedisStorage"
INTERLOCK_REDIS = "interlock-cb + RedisStorage"
PING = "Redis PING (floor)"
EVALSHA = "Redis EVALSHA `return 1` (floor)"
ADMIT_SCRIPT = "EVALSHA admit.lua alone (no Python)"


def succeed() -> int:
    return 1


def fail() -> int:
    raise ConnectionError("upstream unreachable")


class Refused(Exception):
    """What the bare baseline raises for the refused case."""


def refuse() -> int:
    raise Refused("refused")


@dataclass
class Subject:
    """One row group of the table: a label, its calls per case, and its Redis client."""

    label: str
    calls: dict[Case, Callable[[], object]] = field(default_factory=dict)
    remote: set[Case] = field(default_factory=set)  # cases that talk to Redis on every call
    counter: CommandCounter | None = None
    skipped: str | None = None  # why there are no numbers
    closers: list[Callable[[], None]] = field(default_factory=list)
    breakers: dict[Case, Breaker] = field(default_factory=dict)  # distbreaker subjects only

    def close(self) -> None:
        for close in self.closers:
            close()


def check(subject: Subject) -> None:
    """Fail loudly if a prepared call does not do what its case says."""
    for case, call in subject.calls.items():
        try:
            result = call()
        except ConnectionError:
            if case != "failing":
                raise RuntimeError(f"{subject.label}/{case}: the operation failed") from None
            continue
        except Exception as error:
            if case != "refused":
                raise RuntimeError(f"{subject.label}/{case}: unexpected {error!r}") from error
            continue
        if case != "healthy":
            raise RuntimeError(f"{subject.label}/{case}: admitted and returned {result!r}")


def bare() -> Subject:
    """The operation alone; for ``refused``, a function that raises (an exception's cost)."""
    return Subject(BARE, {"healthy": succeed, "refused": refuse, "failing": fail})


def pybreaker_memory() -> Subject:
    healthy = pybreaker.CircuitBreaker()
    refused = pybreaker.CircuitBreaker(reset_timeout=3600)
    refused.open()
    failing = pybreaker.CircuitBreaker(fail_max=NEVER)
    return Subject(
        PYBREAKER_MEMORY,
        {
            "healthy": lambda: healthy.call(succeed),
            "refused": lambda: refused.call(succeed),
            "failing": lambda: failing.call(fail),
        },
    )


def distbreaker_subject(
    url: str, prefix: str, consistency: Literal["cached", "strict"], rate: bool = False
) -> Subject:
    """``rate``: the rate rule (successes counted and reported in batches) in cached mode."""
    counter = CommandCounter()
    client = counting_client(url, counter)
    # a rate no healthy call reaches, and more calls than any run makes: nothing opens
    rule: dict[str, Any] = {"failure_rate_threshold": 0.5, "minimum_calls": 10**7} if rate else {}

    def build(name: str, **settings: Any) -> Breaker:
        merged = {**rule, **settings}
        config = BreakerConfig(key_prefix=prefix, consistency=consistency, **merged)
        return Breaker(name, client, config)

    healthy = build("healthy")
    refused = build("refused", failure_threshold=1, reset_timeout=3600, minimum_calls=1)
    failing = build("failing", failure_threshold=100_000, window=1.0)
    healthy.execute(succeed)  # subscribes (cached) and fills the cache
    with contextlib.suppress(ConnectionError):
        refused.execute(fail)  # trips it: open for an hour
    subject = Subject(
        RATE if rate else (CACHED if consistency == "cached" else STRICT),
        {
            "healthy": lambda: healthy.execute(succeed),
            "refused": lambda: refused.execute(succeed),
            "failing": lambda: failing.execute(fail),
        },
        remote={"failing"} if consistency == "cached" else set(CASES),
        counter=counter,
        breakers={"healthy": healthy, "refused": refused, "failing": failing},
    )
    subject.closers.append(lambda: delete_keys(client, f"{prefix}:*"))
    return subject


def pybreaker_redis(url: str, prefix: str) -> Subject:
    counter = CommandCounter()
    client = counting_client(url, counter)  # bytes replies: the storage decodes them itself

    def storage(case: str) -> pybreaker.CircuitRedisStorage:
        return pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"{prefix}:{case}"
        )

    healthy = pybreaker.CircuitBreaker(state_storage=storage("healthy"))
    refused = pybreaker.CircuitBreaker(reset_timeout=3600, state_storage=storage("refused"))
    refused.open()
    failing = pybreaker.CircuitBreaker(fail_max=NEVER, state_storage=storage("failing"))
    subject = Subject(
        PYBREAKER_REDIS,
        {
            "healthy": lambda: healthy.call(succeed),
            "refused": lambda: refused.call(succeed),
            "failing": lambda: failing.call(fail),
        },
        remote=set(CASES),
        counter=counter,
    )
    subject.closers.append(lambda: delete_keys(client, f"{prefix}:*"))
    return subject


def interlock_subject(url: str | None, prefix: str) -> Subject:
    """interlock-cb, in-process (``url`` None) or coordinated through its ``RedisStorage``."""
    label = INTERLOCK_MEMORY if url is None else INTERLOCK_REDIS
    try:
        import interlock
        from interlock.integrations.redis import RedisStorage
    except ImportError as error:
        return Subject(label, skipped=f"not installable here: {error}")
    counter = CommandCounter() if url is not None else None
    client = None if url is None or counter is None else counting_client(url, counter)

    def build(name: str, **settings: Any) -> Any:
        storage = None if client is None else RedisStorage(client, key_prefix=f"{prefix}:")
        config = interlock.Config(**settings)
        return interlock.CircuitBreaker(name=name, config=config, storage=storage)

    healthy = build("healthy")
    refused = build("refused", minimum_number_of_calls=1, wait_duration_in_open=3600)
    # a count window of 100 never holds the minimum number of calls: never trips
    failing = build("failing", minimum_number_of_calls=NEVER)
    with contextlib.suppress(ConnectionError):
        refused.call(fail)  # trips it: open for an hour
    subject = Subject(
        label,
        {
            "healthy": lambda: healthy.call(succeed),
            "refused": lambda: refused.call(succeed),
            "failing": lambda: failing.call(fail),
        },
        counter=counter,
    )
    subject.closers.extend([healthy.close, refused.close, failing.close])
    if client is not None:
        subject.closers.append(lambda: delete_keys(client, f"{prefix}:*"))
    return subject


def redis_floor(url: str, prefix: str) -> list[Subject]:
    """The physical floor: one round trip doing (almost) nothing, and the admit script alone."""
    counter = CommandCounter()
    client = counting_client(url, counter)
    trivial = client.script_load("return 1")
    admit = client.register_script(script_source("admit"))
    keys = list(breaker_keys(prefix, "floor"))[:6]
    args = ["", *common_args("floor", BreakerConfig(key_prefix=prefix)), "floor-host", "id"]
    return [
        Subject(PING, {"healthy": client.ping}, {"healthy"}, counter),
        Subject(
            EVALSHA,
            {"healthy": lambda: client.evalsha(trivial, 0)},
            {"healthy"},
            counter,
        ),
        Subject(
            ADMIT_SCRIPT,
            {"healthy": lambda: admit(keys, args)},
            {"healthy"},
            counter,
        ),
    ]


def delete_keys(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=500))
    if keys:
        client.delete(*keys)
