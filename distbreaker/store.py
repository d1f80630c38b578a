"""The only module that talks to Redis: loads ``lua/*.lua`` once, runs them, parses replies.

``SyncStore`` and ``AsyncStore`` are twins over redis-py's ``Script`` objects (EVALSHA with
automatic reload on NOSCRIPT, also on a cluster); argument building and reply parsing are
shared and pure.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff

from distbreaker.config import BreakerConfig
from distbreaker.core import (
    STATES,
    Admission,
    Change,
    Command,
    HistoryEntry,
    Outcome,
    Report,
    Snapshot,
    State,
    Window,
)

logger = logging.getLogger("distbreaker")
T = TypeVar("T")

ScriptName = Literal["admit", "record", "report", "control", "status"]
SCRIPT_NAMES: tuple[ScriptName, ...] = ("admit", "record", "report", "control", "status")
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


class BreakerKeys(NamedTuple):
    """One breaker's keys; the hash tag keeps them in one cluster slot."""

    state: str
    failures: str
    probes: str
    history: str
    calls: str
    reporters: str
    control: str


def breaker_keys(prefix: str, name: str) -> BreakerKeys:
    """Every key of breaker ``name`` under ``prefix`` (``{prefix}:{{name}}:…``)."""
    base = f"{prefix}:{{{name}}}"
    return BreakerKeys(*(f"{base}:{part}" for part in BreakerKeys._fields))


def events_channel(prefix: str) -> str:
    return f"{prefix}:events"


def common_args(name: str, config: BreakerConfig) -> tuple[str, ...]:
    """ARGV[2..6], fixed for a breaker's lifetime (ARGV[7], the reporter, is per call)."""
    return (
        name,
        events_channel(config.key_prefix),
        config.settings_arg(),
        config.as_json(),
        config.fingerprint(),
    )


class MalformedReply(redis.ResponseError):
    """A script's reply that is not what the script promises (a foreign server, a bug)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def printable(value: Any, limit: int = 200) -> str:
    """Text from Redis made safe to show: printable characters only, at most ``limit``."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state(value: Any) -> State:
    text = _text(value)
    if text not in STATES:
        raise MalformedReply(f"distbreaker: unexpected state {printable(text, 40)!r} in reply")
    return text


def _parsed(parse: Callable[[Sequence[Any]], T]) -> Callable[[Any], T]:
    """``parse`` with any malformed reply turned into ``MalformedReply`` (a store error)."""

    @functools.wraps(parse)
    def strict(reply: Any) -> T:
        try:
            return parse(reply)
        except MalformedReply:
            raise
        except (IndexError, KeyError, TypeError, ValueError) as error:
            raise MalformedReply(f"distbreaker: malformed script reply ({error})") from None

    return strict


def _window(values: Sequence[Any]) -> Window:
    return Window(*(int(v) for v in values[:4]))


@_parsed
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


@_parsed
def parse_change(reply: Sequence[Any]) -> Change:
    basic = (int(reply[0]) == 1, _state(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))
    if len(reply) <= 5:  # control.lua's reply
        return Change(*basic)
    return Change(*basic, int(reply[5]) == 1, _window(reply[6:10]), _text(reply[10]))


@_parsed
def parse_report(reply: Sequence[Any]) -> Report:
    return Report(
        _state(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]), _window(reply[4:8])
    )


@_parsed
def parse_snapshot(reply: Sequence[Any]) -> Snapshot:
    names = [f.name for f in dataclasses.fields(Snapshot)]
    values: list[Any] = [_state(reply[0])]
    values += [int(x) for x in reply[1:18]]
    values += [printable(x) for x in reply[18:22]]
    values += [_text(reply[22]), _text(reply[23]), printable(reply[24], 2000)]
    if len(values) != len(names):
        raise ValueError(f"{len(reply)} fields")
    return Snapshot(**dict(zip(names, values, strict=True)))


def parse_history_entry(entry_id: Any, fields: dict[Any, Any]) -> HistoryEntry | None:
    """One stream entry, or ``None`` (logged once at debug level) when it is not ours."""
    data = {_text(k): v for k, v in fields.items()}

    def number(key: str) -> int | None:
        raw = data.get(key)
        return None if raw is None else int(_text(raw))

    try:
        states = (_text(data["from"]), _text(data["to"]))
        if states[0] not in STATES or states[1] not in STATES:
            raise ValueError("unknown state")
        return HistoryEntry(
            at_ms=int(_text(data["at"])),
            event=printable(data["event"], 20),
            from_state=states[0],
            to_state=states[1],
            generation=int(_text(data["generation"])),
            reason=printable(data.get("reason", "")),
            open_until_ms=int(_text(data.get("open_until", "0"))),
            failures=int(_text(data.get("failures", "0"))),
            reporters=int(_text(data.get("reporters", "0"))),
            calls=number("calls"),
            rate_failures=number("rate_failures"),
            actor=printable(data.get("actor", ""), 128),
            note=printable(data.get("note", "")),
            id=_text(entry_id),
        )
    except (KeyError, ValueError, TypeError) as error:
        logger.debug("history entry %r ignored: %s", printable(entry_id, 40), error)
        return None


def _now_arg(now_ms: int | None) -> str:
    return "" if now_ms is None else str(int(now_ms))


class _StoreBase:
    def __init__(self, name: str, config: BreakerConfig, reporter: str) -> None:
        self.name = name
        self.config = config
        keys = breaker_keys(config.key_prefix, name)
        self.keys = list(keys[:6])
        self.control_keys = list(keys)
        self.history_key = keys.history
        self.reporter = reporter
        self._common = common_args(name, config)

    def _args(self, now_ms: int | None, *extra: str) -> list[str]:
        return [_now_arg(now_ms), *self._common, self.reporter, *extra]

    def _record_args(
        self,
        now_ms: int | None,
        call_id: str,
        generation: int,
        outcome: str,
        hold_ms: int,
        reason: str,
        batch: Batch | None,
    ) -> list[str]:
        counts, worker, seq = batch or ("", "", 0)
        return self._args(
            now_ms,
            call_id,
            str(generation),
            outcome,
            str(int(hold_ms)),
            reason,
            counts,
            worker,
            str(seq),
        )


# A batch of counts for record/report: (``"age:calls:retries;..."``, worker id, sequence).
Batch = tuple[str, str, int]


class SyncStore(_StoreBase):
    """Runs the scripts for one breaker on a ``redis.Redis`` (or cluster) client."""

    def __init__(self, client: Any, name: str, config: BreakerConfig, reporter: str = "") -> None:
        super().__init__(name, config, reporter)
        self.client = client
        self._scripts = {n: client.register_script(script_source(n)) for n in SCRIPT_NAMES}

    def admit(self, now_ms: int | None, call_id: str) -> Admission:
        return parse_admission(self._scripts["admit"](self.keys, self._args(now_ms, call_id)))

    def record(
        self,
        now_ms: int | None,
        call_id: str,
        generation: int,
        outcome: Outcome,
        batch: Batch | None = None,
    ) -> Change:
        args = self._record_args(now_ms, call_id, generation, outcome, 0, "", batch)
        return parse_change(self._scripts["record"](self.keys, args))

    def hold(self, now_ms: int | None, hold_ms: int, reason: str = "") -> Change:
        """A worker's rate-limit hold (``record.lua``'s ``hold``: at most an hour)."""
        args = self._record_args(now_ms, "", 0, "hold", hold_ms, reason, None)
        return parse_change(self._scripts["record"](self.keys, args))

    def report(
        self, now_ms: int | None, batch: Batch, would_refuse: int = 0, local_until_ms: int = 0
    ) -> Report:
        counts, worker, seq = batch
        args = self._args(now_ms, counts, worker, str(seq), str(would_refuse), str(local_until_ms))
        return parse_report(self._scripts["report"](self.keys, args))

    def control(
        self,
        now_ms: int | None,
        command: Command,
        hold_ms: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason, actor)
        return parse_change(self._scripts["control"](self.control_keys, args))

    def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(self._scripts["status"](self.keys, self._args(now_ms)))

    def history(self, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` history entries, oldest first."""
        if self.client.type(self.history_key) not in (b"stream", "stream"):
            return []
        raw = self.client.xrevrange(self.history_key, count=limit)
        return _history(raw)


class AsyncStore(_StoreBase):
    """Twin of ``SyncStore`` on a ``redis.asyncio`` client."""

    def __init__(self, client: Any, name: str, config: BreakerConfig, reporter: str = "") -> None:
        super().__init__(name, config, reporter)
        self.client = client
        self._scripts = {n: client.register_script(script_source(n)) for n in SCRIPT_NAMES}

    async def admit(self, now_ms: int | None, call_id: str) -> Admission:
        reply = await self._scripts["admit"](self.keys, self._args(now_ms, call_id))
        return parse_admission(reply)

    async def record(
        self,
        now_ms: int | None,
        call_id: str,
        generation: int,
        outcome: Outcome,
        batch: Batch | None = None,
    ) -> Change:
        args = self._record_args(now_ms, call_id, generation, outcome, 0, "", batch)
        return parse_change(await self._scripts["record"](self.keys, args))

    async def hold(self, now_ms: int | None, hold_ms: int, reason: str = "") -> Change:
        args = self._record_args(now_ms, "", 0, "hold", hold_ms, reason, None)
        return parse_change(await self._scripts["record"](self.keys, args))

    async def report(
        self, now_ms: int | None, batch: Batch, would_refuse: int = 0, local_until_ms: int = 0
    ) -> Report:
        counts, worker, seq = batch
        args = self._args(now_ms, counts, worker, str(seq), str(would_refuse), str(local_until_ms))
        return parse_report(await self._scripts["report"](self.keys, args))

    async def control(
        self,
        now_ms: int | None,
        command: Command,
        hold_ms: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason, actor)
        return parse_change(await self._scripts["control"](self.control_keys, args))

    async def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(await self._scripts["status"](self.keys, self._args(now_ms)))

    async def history(self, limit: int) -> list[HistoryEntry]:
        if await self.client.type(self.history_key) not in (b"stream", "stream"):
            return []
        return _history(await self.client.xrevrange(self.history_key, count=limit))


def _history(raw: Any) -> list[HistoryEntry]:
    entries = [parse_history_entry(entry_id, fields) for entry_id, fields in raw]
    return [entry for entry in reversed(entries) if entry is not None]


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
