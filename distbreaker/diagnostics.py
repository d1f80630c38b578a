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
    printable,
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


class BreakerProblem(BaseModel):
    """A key under the prefix that cannot be listed as it is, and what is wrong with it.

    ``key`` is the state key's name made printable (bytes that are not UTF-8 as ``\\xff``);
    ``name`` is the breaker's name when the key names one. A breaker whose state hash is
    unreadable is also listed with its status (as the scripts will repair it); its problem
    says which fields are unreadable.
    """

    key: str
    name: str | None = None
    problem: str


# A client with decode_responses=True meeting a key name that is not UTF-8 fails inside
# SCAN itself, before any key can be looked at.
UNDECODABLE = BreakerProblem(
    key="*",
    problem="a key name is not valid UTF-8 and this client decodes replies "
    "(decode_responses=True): list the breakers with a client that does not",
)


class NetworkStatus(BaseModel):
    """Redis health plus the status of every breaker found under ``prefix``, and the
    keys there that could not be read as breakers (``problems``)."""

    prefix: str
    redis: RedisHealth
    breakers: dict[str, BreakerStatus]
    truncated: bool = False
    problems: list[BreakerProblem] = []

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


def shown_key(key: bytes | str) -> str:
    """A key's name safe to print: undecodable bytes as ``\\xff``, control characters as ``?``."""
    text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key
    return printable(text, 300)


def _name_from_key(key: bytes | str, prefix: str) -> str | BreakerProblem | None:
    """The breaker a state key names, a problem when it names none, ``None`` when the key
    does not have the state key's shape at all."""
    try:
        text = key.decode() if isinstance(key, bytes) else key
    except UnicodeDecodeError:
        return BreakerProblem(key=shown_key(key), problem="key name is not valid UTF-8")
    head, tail = f"{prefix}:{{", "}:state"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    try:
        return validate_name(text[len(head) : -len(tail)])
    except ValueError:
        return BreakerProblem(
            key=shown_key(text),
            problem="not a breaker name (1-128 characters of A-Z a-z 0-9 . _ - :)",
        )


class Survey(BaseModel):
    """What a bounded SCAN found under a prefix: breaker names, keys that name none, and
    whether the scan stopped at its budget."""

    names: list[str]
    problems: list[BreakerProblem] = []
    truncated: bool = False


# Problems listed at most: a keyspace full of junk must not make the listing huge.
MAX_PROBLEMS = 100


def survey_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> Survey:
    """The breakers with a state key under ``prefix`` (sorted), and the keys there that
    name no breaker. On a cluster each primary is scanned with an equal share of ``budget``,
    so one big node cannot hide the breakers of the others."""
    if not is_cluster(client):
        names, problems, truncated = _scan_node(client, prefix, budget)
    else:
        primaries = client.get_primaries()
        share = max(1, budget // max(1, len(primaries)))
        names, problems, truncated = set(), [], False
        for primary in primaries:
            found, odd, stopped = _scan_node(client.get_redis_connection(primary), prefix, share)
            names |= found
            problems += odd
            truncated = truncated or stopped
    return Survey(names=sorted(names), problems=_capped(problems), truncated=truncated)


def scan_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> tuple[list[str], bool]:
    """Names of breakers with a state key under ``prefix``, sorted, and whether the
    SCAN stopped at ``budget`` keys before the end of the keyspace (``survey_breakers``
    also says which keys there name no breaker)."""
    survey = survey_breakers(client, prefix, budget=budget)
    return survey.names, survey.truncated


def _scan_node(
    client: Any, prefix: str, budget: int
) -> tuple[set[str], list[BreakerProblem], bool]:
    names: set[str] = set()
    problems: list[BreakerProblem] = []
    cursor, walked, step = 0, 0, min(1000, budget)
    while True:
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}:{{*}}:state", count=step)
        for key in keys:
            found = _name_from_key(key, prefix)
            if isinstance(found, str):
                names.add(found)
            elif found is not None and len(problems) <= MAX_PROBLEMS:
                problems.append(found)
        walked += step
        if int(cursor) == 0:
            return names, problems, False
        if walked >= budget:
            return names, problems, True


def _capped(problems: list[BreakerProblem]) -> list[BreakerProblem]:
    problems.sort(key=lambda p: p.key)
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = BreakerProblem(key="…", problem=f"more keys with problems than the {MAX_PROBLEMS} shown")
    return [*problems[:MAX_PROBLEMS], more]


def find_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> list[str]:
    """Names of the breakers found under ``prefix`` (a bounded SCAN)."""
    return scan_breakers(client, prefix, budget=budget)[0]


def breaker_exists(client: Any, prefix: str, name: str) -> bool:
    """True when any of the breaker's keys is in Redis."""
    return int(client.exists(*breaker_keys(prefix, name))) > 0


def settings_stored(client: Any, prefix: str, name: str) -> bool:
    """True once the breaker has written its settings to its state hash (False while a
    foreign value sits under the state key's name)."""
    try:
        return bool(client.hexists(breaker_keys(prefix, name)[0], "config"))
    except redis.ResponseError:  # WRONGTYPE: the scripts replace it at the next write
        return False


def stored_config(client: Any, prefix: str, name: str) -> BreakerConfig:
    """The breaker's own settings from its state hash (defaults where none are stored).

    ``status`` counts failures inside the breaker's window, so reading a breaker with
    the wrong window would report the wrong count.
    """
    try:
        raw = client.hget(breaker_keys(prefix, name)[0], "config")
    except redis.ResponseError:  # WRONGTYPE: not a hash, so no settings either
        raw = None
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
    """``status()`` of each named breaker (all found under ``prefix`` by default); a
    breaker whose status cannot be read is left out (``list_breakers`` says why)."""
    chosen = find_breakers(client, prefix) if names is None else names
    return read_statuses(client, prefix, chosen)[0]


def problem_of(status: BreakerStatus, prefix: str) -> BreakerProblem | None:
    """The problem a listed breaker has: unreadable fields or foreign values in its keys."""
    if not status.malformed:
        return None
    return BreakerProblem(
        key=breaker_keys(prefix, status.name).state,
        name=status.name,
        problem=f"unreadable: {status.malformed} (shown as the scripts will repair it; "
        f"`distbreaker reset {status.name}{_prefix_option(prefix)}` rewrites it)",
    )


def _prefix_option(prefix: str) -> str:
    return "" if prefix == DEFAULT_PREFIX else f" --prefix {prefix}"


def read_failure(error: BaseException) -> BreakerProblem | None:
    """What a failed ``status()`` says about the breaker alone, or ``None`` when the
    failure is Redis's own (unreachable, timed out): then the whole listing failed."""
    cause = error.__cause__ if isinstance(error, StoreUnavailableError) else error
    if isinstance(cause, redis.ResponseError):
        return BreakerProblem(key="", problem=f"status failed: {printable(cause, 200)}")
    return None


def read_statuses(
    client: Any, prefix: str, names: list[str]
) -> tuple[list[BreakerStatus], list[BreakerProblem]]:
    """Each named breaker's status, and a problem for each that could not be read or has
    unreadable fields. Raises ``_READ_ERRORS`` when Redis itself fails."""
    statuses: list[BreakerStatus] = []
    problems: list[BreakerProblem] = []
    for name in names:
        try:
            status = breaker_for(client, prefix, name).status()
        except _READ_ERRORS as error:
            failure = read_failure(error)
            if failure is None:
                raise
            key = breaker_keys(prefix, name).state
            problems.append(failure.model_copy(update={"key": key, "name": name}))
            continue
        statuses.append(status)
        problem = problem_of(status, prefix)
        if problem is not None:
            problems.append(problem)
    return statuses, problems


class Listing(BaseModel):
    """Every breaker found under a prefix with its status, and every problem found."""

    statuses: list[BreakerStatus]
    problems: list[BreakerProblem] = []
    truncated: bool = False


def list_breakers(
    client: Any, prefix: str = DEFAULT_PREFIX, *, budget: int = SCAN_BUDGET
) -> Listing:
    """A bounded SCAN, then every breaker's status: one bad key is a problem in the
    answer, never the end of the listing. Raises ``_READ_ERRORS`` when Redis fails."""
    survey = survey_breakers(client, prefix, budget=budget)
    statuses, problems = read_statuses(client, prefix, survey.names)
    everything = _capped([*survey.problems, *problems])
    return Listing(statuses=statuses, problems=everything, truncated=survey.truncated)


def get_network_status(redis_or_url: Any = None, prefix: str = DEFAULT_PREFIX) -> NetworkStatus:
    """Redis reachability and latency, and every breaker's state, failures and health.

    ``redis_or_url`` is a Redis URL (default ``$DISTBREAKER_REDIS_URL``, then
    ``redis://localhost:6379/0``) or a client, also a ``redis.cluster.RedisCluster``
    (every primary is scanned). Never raises for an unreachable Redis (the answer says
    ``reachable=False``) nor for bad keys (each is one of ``problems``).
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
        listing = list_breakers(client, prefix)
    except UnicodeDecodeError:
        return NetworkStatus(prefix=prefix, redis=health, breakers={}, problems=[UNDECODABLE])
    except _READ_ERRORS as error:
        health = health.model_copy(
            update={"reachable": False, "error": f"{type(error).__name__}: {printable(error)}"}
        )
        return NetworkStatus(prefix=prefix, redis=health, breakers={})
    return NetworkStatus(
        prefix=prefix,
        redis=health,
        breakers={s.name: s for s in listing.statuses},
        truncated=listing.truncated,
        problems=listing.problems,
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
