"""The only module that talks to Redis: loads ``lua/*.lua`` once, runs them, parses replies.

``SyncStore`` and ``AsyncStore`` are twins over redis-py's ``Script`` objects (EVALSHA with
automatic reload on NOSCRIPT, also on a cluster); argument building and reply parsing are
shared and pure.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import redis
import redis.asyncio
from redis.backoff import NoBackoff

from distbreaker.config import BreakerConfig
from distbreaker.core import STATES, Admission, Change, Command, Outcome, Snapshot, State

ScriptName = Literal["admit", "record", "control", "status"]
SCRIPT_NAMES: tuple[ScriptName, ...] = ("admit", "record", "control", "status")
_INCLUDE = "--!include _lib.lua"

# What a store failure looks like: the server is gone, hung, loading, read-only or the
# cluster is reshaping. redis-py raises all of these as RedisError subclasses.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def _lua_dir() -> Path:
    packaged = resources.files("distbreaker").joinpath("lua")
    if packaged.is_dir():
        return Path(str(packaged))
    # a source checkout: lua/ sits next to the package
    return Path(__file__).resolve().parent.parent / "lua"


@functools.cache
def script_source(name: ScriptName) -> str:
    """The full text of one script, with the shared library inserted."""
    folder = _lua_dir()
    text = (folder / f"{name}.lua").read_text(encoding="utf-8")
    library = (folder / "_lib.lua").read_text(encoding="utf-8")
    if _INCLUDE not in text:
        raise RuntimeError(f"lua/{name}.lua lacks its {_INCLUDE!r} line")
    return text.replace(_INCLUDE, library, 1)


def breaker_keys(prefix: str, name: str) -> tuple[str, str, str]:
    """State, failures and probes keys; the hash tag keeps them in one cluster slot."""
    base = f"{prefix}:{{{name}}}"
    return (f"{base}:state", f"{base}:failures", f"{base}:probes")


def events_channel(prefix: str) -> str:
    return f"{prefix}:events"


def common_args(name: str, config: BreakerConfig) -> tuple[str, ...]:
    """ARGV[2..10], fixed for a breaker's lifetime."""
    return (
        name,
        events_channel(config.key_prefix),
        str(config.failure_threshold),
        str(config.window_ms),
        str(config.reset_timeout_ms),
        str(config.half_open_max_calls),
        str(config.success_threshold),
        str(config.probe_timeout_ms),
        config.as_json(),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(value: Any) -> State:
    text = _text(value)
    if text not in STATES:
        raise redis.ResponseError(f"distbreaker: unexpected state {text!r} in reply")
    return text


def parse_admission(reply: Sequence[Any]) -> Admission:
    retry_after = int(reply[3])
    return Admission(
        allowed=int(reply[0]) == 1,
        state=_state(reply[1]),
        generation=int(reply[2]),
        retry_after_ms=None if retry_after < 0 else retry_after,
        probe=int(reply[4]) == 1,
        open_until_ms=int(reply[5]),
    )


def parse_change(reply: Sequence[Any]) -> Change:
    return Change(int(reply[0]) == 1, _state(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))


def parse_snapshot(reply: Sequence[Any]) -> Snapshot:
    n = [int(x) for x in reply[1:]]
    return Snapshot(_state(reply[0]), *n)


def _now_arg(now_ms: int | None) -> str:
    return "" if now_ms is None else str(int(now_ms))


class _StoreBase:
    def __init__(self, name: str, config: BreakerConfig) -> None:
        self.name = name
        self.config = config
        self.keys = list(breaker_keys(config.key_prefix, name))
        self._common = common_args(name, config)

    def _args(self, now_ms: int | None, *extra: str) -> list[str]:
        return [_now_arg(now_ms), *self._common, *extra]


class SyncStore(_StoreBase):
    """Runs the scripts for one breaker on a ``redis.Redis`` (or cluster) client."""

    def __init__(self, client: Any, name: str, config: BreakerConfig) -> None:
        super().__init__(name, config)
        self.client = client
        self._scripts = {n: client.register_script(script_source(n)) for n in SCRIPT_NAMES}

    def admit(self, now_ms: int | None, call_id: str) -> Admission:
        return parse_admission(self._scripts["admit"](self.keys, self._args(now_ms, call_id)))

    def record(self, now_ms: int | None, call_id: str, generation: int, outcome: Outcome) -> Change:
        args = self._args(now_ms, call_id, str(generation), outcome)
        return parse_change(self._scripts["record"](self.keys, args))

    def control(
        self, now_ms: int | None, command: Command, hold_ms: int = 0, reason: str = ""
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason)
        return parse_change(self._scripts["control"](self.keys, args))

    def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(self._scripts["status"](self.keys, self._args(now_ms)))


class AsyncStore(_StoreBase):
    """Twin of ``SyncStore`` on a ``redis.asyncio`` client."""

    def __init__(self, client: Any, name: str, config: BreakerConfig) -> None:
        super().__init__(name, config)
        self.client = client
        self._scripts = {n: client.register_script(script_source(n)) for n in SCRIPT_NAMES}

    async def admit(self, now_ms: int | None, call_id: str) -> Admission:
        reply = await self._scripts["admit"](self.keys, self._args(now_ms, call_id))
        return parse_admission(reply)

    async def record(
        self, now_ms: int | None, call_id: str, generation: int, outcome: Outcome
    ) -> Change:
        args = self._args(now_ms, call_id, str(generation), outcome)
        return parse_change(await self._scripts["record"](self.keys, args))

    async def control(
        self, now_ms: int | None, command: Command, hold_ms: int = 0, reason: str = ""
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason)
        return parse_change(await self._scripts["control"](self.keys, args))

    async def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(await self._scripts["status"](self.keys, self._args(now_ms)))


def _breaker_grade(options: dict[str, Any], timeout: float, retry: Any) -> dict[str, Any]:
    """Short timeouts and the given retry policy, unless the caller chose otherwise."""
    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", timeout)
    options.setdefault("retry", retry)
    return options


def connect(url: str, *, timeout: float = 0.25, **options: Any) -> redis.Redis:
    """A ``redis.Redis`` with breaker-grade settings: short timeouts and no client retries.

    redis-py's defaults (5 s timeouts, three retries with backoff) can stall a call for
    seconds when Redis is down; the breaker decides itself what to do on a store error.
    """
    from redis.retry import Retry

    return redis.Redis.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 0)))


def connect_async(url: str, *, timeout: float = 0.25, **options: Any) -> redis.asyncio.Redis:
    """The ``redis.asyncio`` twin of :func:`connect`."""
    from redis.asyncio.retry import Retry

    settings = _breaker_grade(options, timeout, Retry(NoBackoff(), 0))
    return redis.asyncio.Redis.from_url(url, **settings)


def connect_cluster(url: str, *, timeout: float = 0.25, **options: Any) -> Any:
    """A ``redis.cluster.RedisCluster`` with breaker-grade timeouts.

    One retry (not none) lets the client follow a slot that moved during a failover.
    """
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    return RedisCluster.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 1)))


def connect_cluster_async(url: str, *, timeout: float = 0.25, **options: Any) -> Any:
    """The ``redis.asyncio.cluster.RedisCluster`` twin of :func:`connect_cluster`."""
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry

    return RedisCluster.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 1)))
