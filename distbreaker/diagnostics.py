"""Startup diagnostics: which breakers exist under a key prefix, and how each one is doing.

``get_network_status()`` answers the questions a worker (or an operator) asks at start-up:
does Redis answer, how fast, and for every breaker found under the prefix, its ``state``,
``failure_count`` and ``healthy``. Breakers are found with a bounded ``SCAN`` of
``{prefix}:{*}:state`` keys, never ``KEYS``; on a Redis Cluster every primary is scanned,
since each breaker's keys live on the master that owns its slot.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ValidationError
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from distbreaker.breaker import Breaker
from distbreaker.config import SHARED_FIELDS, BreakerConfig, validate_name
from distbreaker.errors import StoreUnavailableError
from distbreaker.status import BreakerStatus
from distbreaker.store import (
    SCRIPT_NAMES,
    STORE_ERRORS,
    breaker_keys,
    connect,
    connect_cluster,
    script_source,
)

REDIS_URL_ENV = "DISTBREAKER_REDIS_URL"
REDIS_CLUSTER_ENV = "DISTBREAKER_REDIS_CLUSTER"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "distbreaker"
# Keys a SCAN may walk through at most: an operator tool must not crawl a huge keyspace.
SCAN_BUDGET = 100_000
# An operator tool talks to Redis over real networks: wider than the breaker's 0.25 s.
TOOL_TIMEOUT = 2.0
# A cluster client raises RedisClusterException (not a RedisError) when no node answers.
TOOL_ERRORS: tuple[type[BaseException], ...] = (*STORE_ERRORS, RedisClusterException)
_READ_ERRORS: tuple[type[BaseException], ...] = (*TOOL_ERRORS, StoreUnavailableError)


class RedisHealth(BaseModel):
    """Whether Redis answers, how fast, and which server it is."""

    url: str
    reachable: bool
    latency_ms: float | None = None
    version: str | None = None
    error: str | None = None
    # Primary nodes when Redis is a cluster; latency and version are then one node's.
    primaries: int | None = None


class NetworkStatus(BaseModel):
    """Redis health plus the status of every breaker found under ``prefix``."""

    prefix: str
    redis: RedisHealth
    breakers: dict[str, BreakerStatus]
    truncated: bool = False

    @property
    def healthy(self) -> bool:
        """Redis answers and every breaker lets calls through."""
        return self.redis.reachable and all(b.healthy for b in self.breakers.values())

    def summary(self) -> dict[str, dict[str, Any]]:
        """The seed's shape: ``{name: {"state", "failure_count", "healthy"}}``."""
        return {
            name: {"state": s.state, "failure_count": s.failure_count, "healthy": s.healthy}
            for name, s in self.breakers.items()
        }


def default_redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


# Query parameters that carry secrets (redis-py reads ``?password=`` from a URL).
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:password|token|secret)[^=&#]*=)[^&#]*")
_MASK = r"\1***"


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``?password=`` parameter) replaced
    by ``***``, for printing; never raises, whatever the text."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _SECRET_QUERY.sub(_MASK, url)
    end = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
    if "@" not in rest[:end]:
        end = rest.rfind("@") + 1 or end  # a "?" or "#" inside the password
    # the last "@" before the query ends the user part, even if the password holds a "/"
    userinfo, at, location = rest[:end].rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:***"
    head = f"{userinfo}@{location}" if at else location
    return f"{scheme}://{head}{_SECRET_QUERY.sub(_MASK, rest[end:])}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate files for a ``rediss://`` URL: the CA to verify Redis with, and a client
    certificate and its key when Redis asks for one (``tls-auth-clients``)."""

    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    def options(self) -> dict[str, str]:
        """The redis-py connection options (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``)."""
        given = {"ssl_ca_certs": self.ca_cert, "ssl_certfile": self.cert, "ssl_keyfile": self.key}
        return {option: path for option, path in given.items() if path is not None}


NO_TLS = TlsFiles()


def open_client(url: str, timeout: float = TOOL_TIMEOUT, tls: TlsFiles = NO_TLS) -> redis.Redis:
    """A client for operator tools; ``ValueError`` for a URL that is not a Redis URL or
    TLS files that cannot be used with it."""
    return connect(url, timeout=timeout, **tls.options())


def open_cluster_client(url: str, timeout: float = TOOL_TIMEOUT, tls: TlsFiles = NO_TLS) -> Any:
    """A ``RedisCluster`` for operator tools: ``url`` names one node, the others are
    discovered. ``ValueError`` for a bad URL, ``RedisClusterException`` when no node answers."""
    if urlsplit(url).path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    return connect_cluster(url, timeout=timeout, **tls.options())


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def one_node(client: Any) -> Any:
    """The client itself, or on a cluster a plain client of its default node."""
    if not is_cluster(client):
        return client
    return client.get_redis_connection(client.get_default_node())


def measure_latency(client: Any) -> float:
    """One PING round trip in milliseconds, after connecting (raises the client's error
    when Redis is unreachable)."""
    client.ping()
    started = time.perf_counter()
    client.ping()
    return (time.perf_counter() - started) * 1000


def redis_health(client: Any, url: str) -> RedisHealth:
    """Latency and version of Redis (of one node of a cluster, with the primaries counted)."""
    shown = redact_url(url)
    try:
        node = one_node(client)
        latency = measure_latency(node)
        primaries = len(client.get_primaries()) if is_cluster(client) else None
    except TOOL_ERRORS as error:
        return RedisHealth(url=shown, reachable=False, error=f"{type(error).__name__}: {error}")
    return RedisHealth(
        url=shown,
        reachable=True,
        latency_ms=round(latency, 3),
        version=server_version(node),
        primaries=primaries,
    )


def server_version(client: Any) -> str:
    """``redis_version`` from INFO; "unknown" where INFO is missing (fakeredis)."""
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    except redis.ResponseError:
        return "unknown"


def _name_from_key(key: str, prefix: str) -> str | None:
    head, tail = f"{prefix}:{{", "}:state"
    if not (key.startswith(head) and key.endswith(tail)):
        return None
    name = key[len(head) : -len(tail)]
    try:
        return validate_name(name)
    except ValueError:
        return None


def scan_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> tuple[list[str], bool]:
    """Names of breakers with a state key under ``prefix``, sorted, and whether the
    SCAN stopped at ``budget`` keys before the end of the keyspace.

    On a cluster each primary is scanned with an equal share of ``budget``, so one big
    node cannot hide the breakers of the others.
    """
    if not is_cluster(client):
        names, truncated = _scan_node(client, prefix, budget)
        return sorted(names), truncated
    primaries = client.get_primaries()
    share = max(1, budget // max(1, len(primaries)))
    found: set[str] = set()
    truncated = False
    for primary in primaries:
        names, stopped = _scan_node(client.get_redis_connection(primary), prefix, share)
        found |= names
        truncated = truncated or stopped
    return sorted(found), truncated


def _scan_node(client: Any, prefix: str, budget: int) -> tuple[set[str], bool]:
    names: set[str] = set()
    cursor, walked, step = 0, 0, min(1000, budget)
    while True:
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}:{{*}}:state", count=step)
        for key in keys:
            name = _name_from_key(key.decode() if isinstance(key, bytes) else key, prefix)
            if name is not None:
                names.add(name)
        walked += step
        if int(cursor) == 0:
            return names, False
        if walked >= budget:
            return names, True


def find_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> list[str]:
    """Names of the breakers found under ``prefix`` (a bounded SCAN)."""
    return scan_breakers(client, prefix, budget=budget)[0]


def breaker_exists(client: Any, prefix: str, name: str) -> bool:
    """True when any of the breaker's keys is in Redis."""
    return int(client.exists(*breaker_keys(prefix, name))) > 0


def settings_stored(client: Any, prefix: str, name: str) -> bool:
    """True once the breaker has written its settings to its state hash."""
    return bool(client.hexists(breaker_keys(prefix, name)[0], "config"))


def stored_config(client: Any, prefix: str, name: str) -> BreakerConfig:
    """The breaker's own settings from its state hash (defaults where none are stored).

    ``status`` counts failures inside the breaker's window, so reading a breaker with
    the wrong window would report the wrong count.
    """
    raw = client.hget(breaker_keys(prefix, name)[0], "config")
    settings: dict[str, Any] = {}
    if raw:
        try:
            stored = json.loads(raw)
        except ValueError:
            stored = {}
        if isinstance(stored, dict):
            settings = {k: v for k, v in stored.items() if k in SHARED_FIELDS}
    try:
        return BreakerConfig(key_prefix=prefix, on_store_error="raise", **settings)
    except ValidationError:
        return BreakerConfig(key_prefix=prefix, on_store_error="raise")


def breaker_for(client: Any, prefix: str, name: str) -> Breaker:
    """A ``Breaker`` for operator commands: the stored settings, errors raised, no cache."""
    settings = stored_config(client, prefix, name).model_dump()
    settings["consistency"] = "strict"
    return Breaker(name, client, BreakerConfig(**settings))


def breaker_statuses(
    client: Any, prefix: str = DEFAULT_PREFIX, names: list[str] | None = None
) -> list[BreakerStatus]:
    """``status()`` of each named breaker (all found under ``prefix`` by default)."""
    chosen = find_breakers(client, prefix) if names is None else names
    return [breaker_for(client, prefix, name).status() for name in chosen]


def get_network_status(redis_or_url: Any = None, prefix: str = DEFAULT_PREFIX) -> NetworkStatus:
    """Redis reachability and latency, and every breaker's state, failures and health.

    ``redis_or_url`` is a Redis URL (default ``$DISTBREAKER_REDIS_URL``, then
    ``redis://localhost:6379/0``) or a client, also a ``redis.cluster.RedisCluster``
    (every primary is scanned). Never raises for an unreachable Redis: the answer says
    ``reachable=False``.
    """
    if redis_or_url is None or isinstance(redis_or_url, str):
        url = redis_or_url or default_redis_url()
        client = open_client(url)
    else:
        client = redis_or_url
        url = _client_url(client)
    health = redis_health(client, url)
    if not health.reachable:
        return NetworkStatus(prefix=prefix, redis=health, breakers={})
    try:
        names, truncated = scan_breakers(client, prefix)
        statuses = breaker_statuses(client, prefix, names)
    except _READ_ERRORS as error:
        health = health.model_copy(
            update={"reachable": False, "error": f"{type(error).__name__}: {error}"}
        )
        return NetworkStatus(prefix=prefix, redis=health, breakers={})
    return NetworkStatus(
        prefix=prefix, redis=health, breakers={s.name: s for s in statuses}, truncated=truncated
    )


def _client_url(client: Any) -> str:
    """Where ``client`` connects, as a URL without credentials."""
    if is_cluster(client):
        node = client.get_default_node()
        ssl = client.get_connection_kwargs().get("ssl", False)
        return f"{'rediss' if ssl else 'redis'}://{node.host}:{node.port}/0"
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    connection_class = getattr(pool, "connection_class", None)
    tls = isinstance(connection_class, type) and issubclass(connection_class, redis.SSLConnection)
    host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
    return f"{'rediss' if tls else 'redis'}://{host}:{port}/{db}"


def load_scripts(client: Any) -> dict[str, str]:
    """``SCRIPT LOAD`` every breaker script; their SHA1 digests by name."""
    return {name: str(client.script_load(script_source(name))) for name in SCRIPT_NAMES}


class ServiceCheck(BaseModel):
    """Whether one outside service answered; ``skipped`` when its extra is not installed."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False


GITHUB_API_URL = "https://api.github.com"


def check_github(base_url: str = GITHUB_API_URL, timeout: float = 2.0) -> ServiceCheck:
    """Does GitHub's API answer (any HTTP status counts as an answer)?"""
    try:
        import httpx
    except ImportError:
        return ServiceCheck(name="github", ok=False, detail="httpx not installed", skipped=True)
    try:
        response = httpx.get(base_url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as error:
        return ServiceCheck(
            name="github",
            ok=False,
            detail=f"{base_url}: {type(error).__name__}: {error}",
        )
    remaining = response.headers.get("x-ratelimit-remaining")
    limit = f", rate limit remaining {remaining}" if remaining is not None else ""
    return ServiceCheck(
        name="github",
        ok=response.status_code < 500,
        detail=f"{base_url} answered HTTP {response.status_code}{limit}",
    )


def check_docker(timeout: float = 2.0) -> ServiceCheck:
    """Does the Docker daemon (``docker.from_env()``) answer a ping?"""
    try:
        import docker
    except ImportError:
        return ServiceCheck(
            name="docker", ok=False, detail="docker SDK not installed", skipped=True
        )
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
            info = client.version()
        finally:
            client.close()
    except Exception as error:  # DockerException, requests errors: all mean "no daemon"
        return ServiceCheck(name="docker", ok=False, detail=f"{type(error).__name__}: {error}")
    return ServiceCheck(
        name="docker",
        ok=True,
        detail=f"daemon {info.get('Version', '?')} answers (API {info.get('ApiVersion', '?')})",
    )
