"""The only module that talks to Redis: loads ``lua/*.lua`` once, runs them, parses replies.

``SyncStore`` and ``AsyncStore`` are twins over redis-py's ``Script`` objects (EVALSHA with
automatic reload on NOSCRIPT, also on a cluster); argument building and reply parsing are
shared and pure. ``status.lua`` is flagged ``no-writes`` and runs with ``EVALSHA_RO``, so a
read-only ACL user and a replica can read breakers; servers older than Redis 7 (and
fakeredis) run it without the flag. A command Redis refuses for lack of an ACL permission
becomes ``PermissionDeniedError``, never a store outage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, NoScriptError

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
from distbreaker.errors import PermissionDeniedError

logger = logging.getLogger("distbreaker")
T = TypeVar("T")

ScriptName = Literal["admit", "record", "report", "control", "status"]
SCRIPT_NAMES: tuple[ScriptName, ...] = ("admit", "record", "report", "control", "status")
_INCLUDE = "--!include _lib.lua"
_SHEBANG = "#!lua"

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


@functools.cache
def unflagged_source(name: ScriptName) -> str:
    """``script_source(name)`` without its ``#!lua flags=`` line, for servers before Redis 7."""
    text = script_source(name)
    if not text.startswith(_SHEBANG):
        return text
    return text.split("\n", 1)[1]


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


_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: what datetime can show


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
        at_ms = int(_text(data["at"]))
        if not 0 <= at_ms <= _LAST_MS:
            raise ValueError("a time beyond year 9999")
        return HistoryEntry(
            at_ms=at_ms,
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


def is_denied(error: BaseException) -> bool:
    """Did Redis refuse a command for lack of an ACL permission?

    ``NOPERM`` for the command itself or the keys it declares; from inside a script Redis
    7.0 answers ``ERR The user executing the script can't ...`` instead.
    """
    if isinstance(error, NoPermissionError):
        return True
    if not isinstance(error, redis.ResponseError):
        return False
    text = str(error)
    return text.startswith("NOPERM") or "user executing the script can't" in text


def _lacks_read_only_scripts(error: redis.ResponseError) -> bool:
    """The server (Redis < 7, fakeredis) or the ACL user cannot run ``EVALSHA_RO``."""
    text = str(error).lower()
    if "unknown command" in text:
        return True
    return is_denied(error) and ("'evalsha_ro'" in text or "'eval_ro'" in text)


# Per client: does it run EVALSHA_RO? Learned from the first status read, then kept.
_read_only_support: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _supports_read_only(client: Any) -> bool:
    if not hasattr(client, "execute_command"):  # a wrapper offering only register_script
        return False
    try:
        return _read_only_support.get(client, True)
    except TypeError:  # a client that cannot be weakly referenced: try every time
        return True


def _remember_read_only(client: Any, supported: bool) -> None:
    with contextlib.suppress(TypeError):
        _read_only_support[client] = supported


def _cluster_target(client: Any, keys: Sequence[str]) -> dict[str, Any]:
    """On a cluster, the node that owns the keys: redis-py would otherwise ask the server
    for EVALSHA_RO's keys (``COMMAND GETKEYS``) before every call."""
    if not hasattr(client, "get_node_from_key"):
        return {}
    return {"target_nodes": client.get_node_from_key(keys[0])}


class _ReadOnlyScript:
    """One ``no-writes`` script run with ``EVALSHA_RO`` (``EVAL_RO`` on NOSCRIPT, which
    also caches it), or as a plain ``Script`` where read-only scripts are not supported."""

    def __init__(self, client: Any, name: ScriptName) -> None:
        self.client = client
        self.text = script_source(name)
        # Redis names scripts by their SHA1 digest: an identifier, not a security measure
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()
        self.fallback = client.register_script(unflagged_source(name))

    def _read_only_args(self, keys: Sequence[str], args: Sequence[str]) -> list[Any]:
        return [len(keys), *keys, *args]


class _SyncReadOnly(_ReadOnlyScript):
    def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        client = self.client
        if _supports_read_only(client):
            call = self._read_only_args(keys, args)
            target = _cluster_target(client, keys)
            try:
                try:
                    reply = client.execute_command("EVALSHA_RO", self.sha, *call, **target)
                except NoScriptError:
                    reply = client.execute_command("EVAL_RO", self.text, *call, **target)
            except redis.ResponseError as error:
                if not _lacks_read_only_scripts(error):
                    raise
                _remember_read_only(client, False)
            else:
                return reply
        return self.fallback(keys, args)


class _AsyncReadOnly(_ReadOnlyScript):
    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        client = self.client
        if _supports_read_only(client):
            call = self._read_only_args(keys, args)
            target = _cluster_target(client, keys)
            try:
                try:
                    reply = await client.execute_command("EVALSHA_RO", self.sha, *call, **target)
                except NoScriptError:
                    reply = await client.execute_command("EVAL_RO", self.text, *call, **target)
            except redis.ResponseError as error:
                if not _lacks_read_only_scripts(error):
                    raise
                _remember_read_only(client, False)
            else:
                return reply
        return await self.fallback(keys, args)


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

    def _denied(self, operation: str, error: redis.ResponseError) -> PermissionDeniedError:
        """The ``PermissionDeniedError`` for ``operation``, naming the right it needs."""
        base = f"{self.config.key_prefix}:{{{self.name}}}"
        channel = events_channel(self.config.key_prefix)
        if operation == "status":
            needed = f"read access to {base}:* and EVALSHA_RO (the observer role)"
        elif operation == "history":
            needed = f"read access to {self.history_key} with TYPE and XREVRANGE"
        elif operation in ("admit", "record", "report", "worker hold"):
            needed = (
                f"write access to {base}:* but :control, EVALSHA, SCRIPT LOAD and PUBLISH to "
                f"{channel} (the worker role)"
            )
        else:
            needed = f"write access to {base}:control (the operator role)"
        return PermissionDeniedError(self.name, operation, needed, printable(error))

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
        self._scripts: dict[ScriptName, Callable[[Sequence[str], Sequence[str]], Any]] = {
            n: client.register_script(script_source(n)) for n in SCRIPT_NAMES if n != "status"
        }
        self._scripts["status"] = _SyncReadOnly(client, "status")

    def _run(
        self, script: ScriptName, operation: str, keys: Sequence[str], args: Sequence[str]
    ) -> Any:
        try:
            return self._scripts[script](keys, args)
        except redis.ResponseError as error:
            if is_denied(error):
                raise self._denied(operation, error) from None
            raise

    def admit(self, now_ms: int | None, call_id: str) -> Admission:
        return parse_admission(self._run("admit", "admit", self.keys, self._args(now_ms, call_id)))

    def record(
        self,
        now_ms: int | None,
        call_id: str,
        generation: int,
        outcome: Outcome,
        batch: Batch | None = None,
    ) -> Change:
        args = self._record_args(now_ms, call_id, generation, outcome, 0, "", batch)
        return parse_change(self._run("record", "record", self.keys, args))

    def hold(self, now_ms: int | None, hold_ms: int, reason: str = "") -> Change:
        """A worker's rate-limit hold (``record.lua``'s ``hold``: at most an hour)."""
        args = self._record_args(now_ms, "", 0, "hold", hold_ms, reason, None)
        return parse_change(self._run("record", "worker hold", self.keys, args))

    def report(
        self, now_ms: int | None, batch: Batch, would_refuse: int = 0, local_until_ms: int = 0
    ) -> Report:
        counts, worker, seq = batch
        args = self._args(now_ms, counts, worker, str(seq), str(would_refuse), str(local_until_ms))
        return parse_report(self._run("report", "report", self.keys, args))

    def control(
        self,
        now_ms: int | None,
        command: Command,
        hold_ms: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason, actor)
        return parse_change(self._run("control", command, self.control_keys, args))

    def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(self._run("status", "status", self.keys, self._args(now_ms)))

    def history(self, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` history entries, oldest first."""
        try:
            if self.client.type(self.history_key) not in (b"stream", "stream"):
                return []
            raw = self.client.xrevrange(self.history_key, count=limit)
        except redis.ResponseError as error:
            if is_denied(error):
                raise self._denied("history", error) from None
            raise
        return _history(raw)


class AsyncStore(_StoreBase):
    """Twin of ``SyncStore`` on a ``redis.asyncio`` client."""

    def __init__(self, client: Any, name: str, config: BreakerConfig, reporter: str = "") -> None:
        super().__init__(name, config, reporter)
        self.client = client
        self._scripts: dict[ScriptName, Callable[[Sequence[str], Sequence[str]], Any]] = {
            n: client.register_script(script_source(n)) for n in SCRIPT_NAMES if n != "status"
        }
        self._scripts["status"] = _AsyncReadOnly(client, "status")

    async def _run(
        self, script: ScriptName, operation: str, keys: Sequence[str], args: Sequence[str]
    ) -> Any:
        try:
            return await self._scripts[script](keys, args)
        except redis.ResponseError as error:
            if is_denied(error):
                raise self._denied(operation, error) from None
            raise

    async def admit(self, now_ms: int | None, call_id: str) -> Admission:
        reply = await self._run("admit", "admit", self.keys, self._args(now_ms, call_id))
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
        return parse_change(await self._run("record", "record", self.keys, args))

    async def hold(self, now_ms: int | None, hold_ms: int, reason: str = "") -> Change:
        args = self._record_args(now_ms, "", 0, "hold", hold_ms, reason, None)
        return parse_change(await self._run("record", "worker hold", self.keys, args))

    async def report(
        self, now_ms: int | None, batch: Batch, would_refuse: int = 0, local_until_ms: int = 0
    ) -> Report:
        counts, worker, seq = batch
        args = self._args(now_ms, counts, worker, str(seq), str(would_refuse), str(local_until_ms))
        return parse_report(await self._run("report", "report", self.keys, args))

    async def control(
        self,
        now_ms: int | None,
        command: Command,
        hold_ms: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> Change:
        args = self._args(now_ms, command, str(int(hold_ms)), reason, actor)
        return parse_change(await self._run("control", command, self.control_keys, args))

    async def snapshot(self, now_ms: int | None) -> Snapshot:
        return parse_snapshot(await self._run("status", "status", self.keys, self._args(now_ms)))

    async def history(self, limit: int) -> list[HistoryEntry]:
        try:
            if await self.client.type(self.history_key) not in (b"stream", "stream"):
                return []
            raw = await self.client.xrevrange(self.history_key, count=limit)
        except redis.ResponseError as error:
            if is_denied(error):
                raise self._denied("history", error) from None
            raise
        return _history(raw)


def _history(raw: Any) -> list[HistoryEntry]:
    entries = [parse_history_entry(entry_id, fields) for entry_id, fields in raw]
    return [entry for entry in reversed(entries) if entry is not None]


def _breaker_grade(options: dict[str, Any], timeout: float, retry: Any) -> dict[str, Any]:
    """Short timeouts and the given retry policy, unless the caller chose otherwise."""
    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", timeout)
    options.setdefault("retry", retry)
    return options


TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def check_tls(url: str, options: dict[str, Any]) -> None:
    """``ValueError`` before any I/O for TLS options that cannot work: ``ssl_*`` options
    with a URL that is not ``rediss://``, unreadable certificate or key files, a key
    without its certificate. (The URL's query may carry them too, as redis-py allows.)"""
    given = sorted(k for k, v in options.items() if k.startswith("ssl_") and v is not None)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if given and scheme != "rediss":
        raise ValueError(f"{given[0]} needs a rediss:// URL (TLS), not {scheme or 'this'}://")
    for option in TLS_FILE_OPTIONS:
        path = options.get(option)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ValueError(f"{option}: {printable(path)!s} is not a readable file")
    if options.get("ssl_keyfile") is not None and options.get("ssl_certfile") is None:
        raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")


def connect(url: str, *, timeout: float = 0.25, **options: Any) -> redis.Redis:
    """A ``redis.Redis`` with breaker-grade settings: short timeouts and no client retries.

    redis-py's defaults (5 s timeouts, three retries with backoff) can stall a call for
    seconds when Redis is down; the breaker decides itself what to do on a store error.
    For TLS use a ``rediss://`` URL, with ``ssl_ca_certs`` (and ``ssl_certfile`` and
    ``ssl_keyfile`` for a client certificate); the TLS handshake is bounded by the same
    timeout.
    """
    from redis.retry import Retry

    check_tls(url, options)
    return redis.Redis.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 0)))


def connect_async(url: str, *, timeout: float = 0.25, **options: Any) -> redis.asyncio.Redis:
    """The ``redis.asyncio`` twin of :func:`connect`."""
    from redis.asyncio.retry import Retry

    check_tls(url, options)
    settings = _breaker_grade(options, timeout, Retry(NoBackoff(), 0))
    return redis.asyncio.Redis.from_url(url, **settings)


def connect_cluster(url: str, *, timeout: float = 0.25, **options: Any) -> Any:
    """A ``redis.cluster.RedisCluster`` with breaker-grade timeouts.

    One retry (not none) lets the client follow a slot that moved during a failover.
    """
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    check_tls(url, options)
    return RedisCluster.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 1)))


def connect_cluster_async(url: str, *, timeout: float = 0.25, **options: Any) -> Any:
    """The ``redis.asyncio.cluster.RedisCluster`` twin of :func:`connect_cluster`."""
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry

    check_tls(url, options)
    return RedisCluster.from_url(url, **_breaker_grade(options, timeout, Retry(NoBackoff(), 1)))
