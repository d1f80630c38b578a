"""The typer app: one function per ``distbreaker`` subcommand."""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from distbreaker.breaker import HISTORY_LIMIT, Breaker
from distbreaker.cli._history import (
    breakers_with_history,
    history_json,
    parse_since,
    period_start,
    read_history,
    server_now,
    show_history,
)
from distbreaker.cli._render import (
    STATE_STYLES,
    STATUS_COLUMNS,
    WHY_COLUMN,
    Output,
    clock_time,
    conflict_text,
    error_line,
    status_row,
    why_text,
)
from distbreaker.cli._watch import Watcher
from distbreaker.config import BreakerConfig, validate_name
from distbreaker.diagnostics import (
    DEFAULT_PREFIX,
    DEFAULT_REDIS_URL,
    GITHUB_API_URL,
    REDIS_CLUSTER_ENV,
    REDIS_URL_ENV,
    TOOL_ERRORS,
    BreakerProblem,
    RedisHealth,
    ServiceCheck,
    TlsFiles,
    breaker_exists,
    breaker_for,
    check_docker,
    check_github,
    list_breakers,
    load_scripts,
    measure_latency,
    open_client,
    open_cluster_client,
    problem_of,
    redact_url,
    redis_health,
    settings_stored,
    stored_config,
)
from distbreaker.errors import PermissionDeniedError, StoreUnavailableError
from distbreaker.status import BreakerStatus
from distbreaker.store import check_tls, events_channel, is_denied

EXTERNAL_CHECK_TIMEOUT = 5.0
TLS_CA_CERT_ENV = "DISTBREAKER_TLS_CA_CERT"
TLS_CERT_ENV = "DISTBREAKER_TLS_CERT"
TLS_KEY_ENV = "DISTBREAKER_TLS_KEY"
_READ_ERRORS: tuple[type[BaseException], ...] = (*TOOL_ERRORS, StoreUnavailableError)


class CliError(Exception):
    """A problem to report in one line; ``code`` 1 = failure, 2 = usage."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- connecting -------------------------------------------------------------------------


def _url(value: str | None) -> str:
    return value or DEFAULT_REDIS_URL


def _prefix(value: str) -> str:
    try:
        return BreakerConfig(key_prefix=value).key_prefix
    except ValidationError:
        raise CliError(
            f"bad --prefix {value!r}: use 1-64 characters of A-Z a-z 0-9 . _ - :", 2
        ) from None


def _name(value: str) -> str:
    try:
        return validate_name(value)
    except ValueError as error:
        raise CliError(str(error), 2) from None


def tls_files(url: str, ca_cert: str | None, cert: str | None, key: str | None) -> TlsFiles:
    """The ``--tls-*`` options checked against ``url`` (a usage ``CliError`` naming the
    option), before any I/O."""
    tls = TlsFiles(ca_cert, cert, key)
    names = {
        "ssl_ca_certs": "--tls-ca-cert",
        "ssl_certfile": "--tls-cert",
        "ssl_keyfile": "--tls-key",
    }
    try:
        check_tls(url, dict(tls.options()))
    except ValueError as error:
        text = str(error)
        for option, flag in names.items():
            text = text.replace(option, flag)
        raise CliError(text, 2) from None
    return tls


def open_tool_client(url: str, cluster: bool, tls: TlsFiles | None = None) -> Any:
    """A single-node or cluster client (not yet checked), or a usage ``CliError``; a
    cluster client asks its node for the others at once, so it may raise ``TOOL_ERRORS``."""
    tls = tls or TlsFiles()
    try:
        return open_cluster_client(url, tls=tls) if cluster else open_client(url, tls=tls)
    except ValueError as error:
        raise CliError(f"bad Redis URL {redact_url(url)!r}: {error}", 2) from None


def connect_checked(url: str, cluster: bool = False, tls: TlsFiles | None = None) -> Any:
    """A client that has answered a PING, or a one-line ``CliError``."""
    what = "a Redis Cluster" if cluster else "Redis"
    try:
        client = open_tool_client(url, cluster, tls)
        measure_latency(client)
    except TOOL_ERRORS as error:
        if is_denied(error):
            raise CliError(f"Redis at {redact_url(url)} refused PING: {error}") from None
        raise CliError(f"cannot reach {what} at {redact_url(url)}: {error}") from None
    return client


def _existing(client: Any, prefix: str, name: str, url: str) -> Breaker:
    if not breaker_exists(client, prefix, name):
        raise CliError(
            f"no breaker {name!r} under prefix {prefix!r} at {redact_url(url)} "
            "(no keys: it never failed, or its keys expired)"
        )
    return breaker_for(client, prefix, name)


def _hint(prefix: str) -> str:
    return "" if prefix == DEFAULT_PREFIX else f" --prefix {prefix}"


def operator() -> str:
    """``user@host`` for the audit trail, reduced to characters that read the same anywhere."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60] or "unknown"

    return f"{clean(user)}@{clean(socket.gethostname())}"


# -- the command ------------------------------------------------------------------------

app = typer.Typer(
    name="distbreaker",
    help="Inspect, watch and steer circuit breakers shared through Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    try:
        return importlib.metadata.version("distbreaker")
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        print(f"distbreaker {_version()}", flush=True)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Inspect, watch and steer circuit breakers shared through Redis."""


RedisUrl = Annotated[
    str,
    typer.Option(
        "--redis-url",
        metavar="URL",
        envvar=REDIS_URL_ENV,
        show_envvar=True,
        help="Redis holding the breakers.",
    ),
]
Prefix = Annotated[
    str, typer.Option("--prefix", metavar="PREFIX", help="Key prefix the breakers use.")
]
Cluster = Annotated[
    bool,
    typer.Option(
        "--cluster",
        envvar=REDIS_CLUSTER_ENV,
        show_envvar=True,
        help="Redis is a Redis Cluster: --redis-url names one node, the others are found.",
    ),
]
Reason = Annotated[
    str,
    typer.Option(
        "--reason", metavar="TEXT", help="Why: kept in the history with user@host, shown by watch."
    ),
]
TlsCaCert = Annotated[
    str | None,
    typer.Option(
        "--tls-ca-cert",
        metavar="PATH",
        envvar=TLS_CA_CERT_ENV,
        show_envvar=True,
        help="CA certificate (PEM) to verify Redis with, for a rediss:// URL.",
    ),
]
TlsCert = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        metavar="PATH",
        envvar=TLS_CERT_ENV,
        show_envvar=True,
        help="Client certificate (PEM), when Redis asks for one.",
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option(
        "--tls-key",
        metavar="PATH",
        envvar=TLS_KEY_ENV,
        show_envvar=True,
        help="The client certificate's private key (PEM).",
    ),
]


@app.command()
def status(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="One breaker; all found when omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of BreakerStatus.")] = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """State, failures in window, generation, time until reset and last failure."""
    url, prefix = _url(redis_url), _prefix(prefix)
    client = connect_checked(url, cluster, tls_files(url, tls_ca_cert, tls_cert, tls_key))
    if name is not None:
        statuses = [_existing(client, prefix, _name(name), url).status()]
        problems = [p for p in (problem_of(statuses[0], prefix),) if p is not None]
    else:
        listing = list_breakers(client, prefix)
        if listing.truncated:
            error_line("the key scan stopped at its budget: some breakers may be missing")
        statuses, problems = listing.statuses, listing.problems
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2), flush=True)
        for problem in problems:  # stdout stays a list of BreakerStatus
            print(f"distbreaker: {problem_line(problem)}", file=sys.stderr, flush=True)
        return
    out = Output()
    if not statuses:
        out.line(f"no breakers under prefix {prefix!r} at {redact_url(url)}")
    else:
        _status_table(out, client, prefix, statuses)
    for problem in problems:
        out.line(problem_line(problem), "yellow")


def _status_table(out: Output, client: Any, prefix: str, statuses: list[BreakerStatus]) -> None:
    now = time.time()
    configs = [
        stored_config(client, prefix, s.name) if settings_stored(client, prefix, s.name) else None
        for s in statuses
    ]
    columns = [*STATUS_COLUMNS, WHY_COLUMN]
    rows = [
        [*status_row(s, c, now), why_text(s, now)] for s, c in zip(statuses, configs, strict=True)
    ]
    styles = [[None, STATE_STYLES.get(s.state), *[None] * (len(columns) - 2)] for s in statuses]
    out.table("", columns, rows, styles)
    if None in configs:
        out.line(
            "?: settings not stored yet (the breaker has not changed state); "
            f"failures counted in the default {BreakerConfig().window:g}s window",
            "dim",
        )
    for status_ in statuses:
        if status_.config_conflict:
            out.line(f"{status_.name}: {conflict_text(status_.config_conflict)}", "yellow")


def problem_line(problem: BreakerProblem) -> str:
    """One key that could not be listed as it is, and why."""
    return f"problem: {problem.key}: {problem.problem}"


@app.command()
def watch(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Only this breaker's transitions.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, metavar="N", help="Stop after N transitions.")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.0, metavar="SECONDS", help="Stop after SECONDS."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event's raw JSON.")] = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Live transitions from the events channel, one line each, until Ctrl-C."""
    url, prefix = _url(redis_url), _prefix(prefix)
    only = _name(name) if name is not None else None
    client = connect_checked(url, cluster, tls_files(url, tls_ca_cert, tls_cert, tls_key))
    channel = events_channel(prefix)
    watcher = Watcher(client, channel, only, as_json)
    try:
        if not watcher.wait_connected():
            raise CliError(f"cannot subscribe to {channel} at {redact_url(url)}")
        print(
            f"watching {channel} at {redact_url(url)} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        seen = watcher.run(count, deadline)
    except KeyboardInterrupt:
        return
    finally:
        watcher.close()
    if count is not None and seen < count:
        raise CliError(f"timed out after {timeout:g}s with {seen} of {count} transitions")


@app.command("open")
def open_breaker(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The breaker to open.")],
    seconds: Annotated[
        float | None,
        typer.Option(
            "--for",
            min=0.001,
            metavar="SECONDS",
            help="Open for SECONDS, then one probe decides (default: until reset).",
        ),
    ] = None,
    reason: Reason = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Open a breaker for the whole fleet: until reset, or --for some seconds."""
    url, prefix, name = _url(redis_url), _prefix(prefix), _name(name)
    client = connect_checked(url, cluster, tls_files(url, tls_ca_cert, tls_cert, tls_key))
    breaker = breaker_for(client, prefix, name)
    if seconds is None:
        breaker.force_open(actor=operator(), reason=reason)
        after = breaker.status()
        Output().line(
            f"breaker {name!r} is {after.state} (generation {after.generation}): calls are refused "
            f"fleet-wide until `distbreaker reset {name}{_hint(prefix)}`",
            STATE_STYLES.get(after.state),
        )
        return
    breaker.hold_open(seconds, reason, actor=operator())
    after = breaker.status()
    if after.state != "open":
        raise CliError(
            f"breaker {name!r} is {after.state}: a timed open does not override a manual state; "
            f"run `distbreaker reset {name}{_hint(prefix)}` first"
        )
    until = clock_time(time.time() + after.time_until_reset)
    Output().line(
        f"breaker {name!r} is open for {after.time_until_reset:.1f}s, until {until} "
        f"(generation {after.generation}): calls are refused fleet-wide, then one probe decides",
        STATE_STYLES["open"],
    )


def _steer(
    command: str,
    name: str,
    reason: str,
    redis_url: str,
    prefix: str,
    cluster: bool,
    tls: tuple[str | None, str | None, str | None],
) -> tuple[str, str, BreakerStatus]:
    """Apply ``force_closed`` or ``reset`` to an existing breaker, as ``user@host``; its
    checked name and prefix and its status afterwards."""
    url, prefix, name = _url(redis_url), _prefix(prefix), _name(name)
    client = connect_checked(url, cluster, tls_files(url, *tls))
    breaker = _existing(client, prefix, name, url)
    control = breaker.force_closed if command == "force_closed" else breaker.reset
    control(actor=operator(), reason=reason)
    return name, prefix, breaker.status()


@app.command("close")
def close_breaker(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The breaker to force closed.")],
    reason: Reason = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Force a breaker closed for the whole fleet: calls always pass, failures still count."""
    tls = (tls_ca_cert, tls_cert, tls_key)
    name, prefix, after = _steer("force_closed", name, reason, redis_url, prefix, cluster, tls)
    Output().line(
        f"breaker {name!r} is {after.state} (generation {after.generation}): calls always pass "
        f"(failures still counted) until `distbreaker reset {name}{_hint(prefix)}`",
        STATE_STYLES.get(after.state),
    )


@app.command()
def reset(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The breaker to reset.")],
    reason: Reason = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Back to closed with an empty failure window, releasing any manual state."""
    tls = (tls_ca_cert, tls_cert, tls_key)
    name, prefix, after = _steer("reset", name, reason, redis_url, prefix, cluster, tls)
    Output().line(
        f"breaker {name!r} is {after.state} (generation {after.generation}): "
        "failure window cleared",
        STATE_STYLES.get(after.state),
    )


@app.command()
def history(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="One breaker; all found when omitted.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="30s, 15m, 1h, 2d back, or an ISO time (UTC unless given); default: all kept.",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", metavar="N", help=f"Newest entries shown per breaker (1-{HISTORY_LIMIT})."
        ),
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Entries and summaries as JSON.")] = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Transitions and commands, one line each, and per breaker a summary of the period:
    episodes, time open, mean time to recovery, failed probes (on a terminal, a strip)."""
    url, prefix = _url(redis_url), _prefix(prefix)
    only = _name(name) if name is not None else None
    try:
        wanted = None if since is None else parse_since(since, time.time())
    except ValueError as error:
        raise CliError(str(error), 2) from None
    if not 1 <= limit <= HISTORY_LIMIT:
        raise CliError(f"--limit {limit}: use 1 to {HISTORY_LIMIT}", 2)
    client = connect_checked(url, cluster, tls_files(url, tls_ca_cert, tls_cert, tls_key))
    if only is not None:
        breakers = [_existing(client, prefix, only, url)]
    else:
        names, truncated = breakers_with_history(client, prefix)
        if truncated:
            error_line("the key scan stopped at its budget: some breakers may be missing")
        breakers = [breaker_for(client, prefix, n) for n in names]
    now = server_now(client)
    since_s = None if wanted is None else wanted.start(now)
    histories = [read_history(b, since_s) for b in breakers]
    start = period_start(histories, since_s, now)
    if as_json:
        print(json.dumps(history_json(histories, start, now, limit), indent=2), flush=True)
        return
    out = Output()
    if not histories:
        out.line(f"no breakers under prefix {prefix!r} at {redact_url(url)}")
        return
    show_history(out, histories, start, now, limit)


@app.command()
def dashboard(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 8321,
    token_file: Annotated[
        str | None,
        typer.Option("--token-file", metavar="PATH", help="Token enabling the controls (0600)."),
    ] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """A live web page of every breaker; controls with --token-file (the dashboard extra)."""
    try:
        from distbreaker.dashboard import DashboardError, serve
    except ImportError as error:
        missing = error.name or "a dependency"
        raise CliError(
            f"the dashboard needs {missing}: pip install 'distbreaker[dashboard]'"
        ) from None
    url = _url(redis_url)
    tls = tls_files(url, tls_ca_cert, tls_cert, tls_key)
    try:
        serve(url, host, port, token_file, _prefix(prefix), cluster, tls)
    except DashboardError as error:
        raise CliError(error.message, error.code) from None


def _external_checks(github_url: str) -> list[ServiceCheck]:
    """GitHub and Docker checked side by side, each bounded: a hung DNS lookup must not
    hold the command (daemon threads are left behind, not waited for)."""
    jobs: dict[str, Callable[[], ServiceCheck]] = {
        "github": lambda: check_github(github_url),
        "docker": check_docker,
    }
    results: dict[str, ServiceCheck] = {}

    def run(name: str, job: Callable[[], ServiceCheck]) -> None:
        results[name] = job()

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + EXTERNAL_CHECK_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    silent = f"no answer within {EXTERNAL_CHECK_TIMEOUT:g}s"
    return [results.get(n) or ServiceCheck(name=n, ok=False, detail=silent) for n in jobs]


def _check_row(check: ServiceCheck) -> tuple[list[str], list[str | None]]:
    result = "skipped" if check.skipped else ("ok" if check.ok else "unreachable")
    style = "dim" if check.skipped else ("green" if check.ok else "yellow")
    return [check.name, result, check.detail], [None, style, None]


@app.command()
def diagnose(
    github_url: Annotated[
        str, typer.Option("--github-url", metavar="URL", help="GitHub API base URL to check.")
    ] = GITHUB_API_URL,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    prefix: Prefix = DEFAULT_PREFIX,
    cluster: Cluster = False,
    tls_ca_cert: TlsCaCert = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Redis reachability and version, script load, every breaker's health, GitHub, Docker."""
    url, prefix = _url(redis_url), _prefix(prefix)
    client, health = _diagnose_client(url, cluster, tls_files(url, tls_ca_cert, tls_cert, tls_key))
    report: dict[str, Any] = {}
    rows: list[list[str]] = []
    styles: list[list[str | None]] = []

    def add(row: list[str], style: list[str | None]) -> None:
        rows.append(row)
        styles.append(style)

    report["redis"] = health.model_dump()
    redis_ok = health.reachable
    if redis_ok:
        cluster_of = f", cluster of {health.primaries} primaries" if health.primaries else ""
        add(
            [
                "redis",
                "ok",
                f"{health.url}: Redis {health.version}, ping {health.latency_ms:.2f} ms"
                + cluster_of,
            ],
            [None, "green", None],
        )
        redis_ok = _diagnose_store(client, prefix, report, add)
    else:
        add(["redis", "unreachable", f"{health.url}: {health.error}"], [None, "bold red", None])
    checks = _external_checks(github_url)
    report["services"] = [c.model_dump() for c in checks]
    for check in checks:
        add(*_check_row(check))
    if as_json:
        print(json.dumps(report, indent=2), flush=True)
    else:
        Output().table("", ["CHECK", "RESULT", "DETAIL"], rows, styles)
    if not redis_ok:
        raise CliError(f"Redis at {health.url} is not usable for breakers")


def _diagnose_client(url: str, cluster: bool, tls: TlsFiles) -> tuple[Any, RedisHealth]:
    """The client and its health; a cluster that cannot be joined is reported, not raised."""
    try:
        client = open_tool_client(url, cluster, tls)
    except TOOL_ERRORS as error:
        error_text = f"{type(error).__name__}: {error}"
        return None, RedisHealth(url=redact_url(url), reachable=False, error=error_text)
    return client, redis_health(client, url)


def _diagnose_store(
    client: Any,
    prefix: str,
    report: dict[str, Any],
    add: Callable[[list[str], list[str | None]], None],
) -> bool:
    """Script load and every breaker's health; False when Redis fails on the way."""
    try:
        shas = load_scripts(client)
    except TOOL_ERRORS as error:
        if not is_denied(error):
            add(["scripts", "failed", f"SCRIPT LOAD: {error}"], [None, "bold red", None])
            report["scripts"] = {"error": str(error)}
            return False
        # a read-only (observer) user: status and watch need no SCRIPT LOAD
        detail = f"SCRIPT LOAD not permitted for this Redis user ({error}); workers need it"
        add(["scripts", "skipped", detail], [None, "dim", None])
        report["scripts"] = {"denied": str(error)}
    else:
        report["scripts"] = shas
        loaded = f"{', '.join(shas)} loaded with SCRIPT LOAD"
        add(["scripts", "ok", loaded], [None, "green", None])
    try:
        listing = list_breakers(client, prefix)
    except _READ_ERRORS as error:
        add(["breakers", "failed", str(error)], [None, "bold red", None])
        return False
    statuses, problems = listing.statuses, listing.problems
    report["breakers"] = [s.model_dump(mode="json") for s in statuses]
    report["problems"] = [p.model_dump(mode="json") for p in problems]
    healthy = sum(s.healthy for s in statuses)
    more = " (scan budget reached: maybe more)" if listing.truncated else ""
    odd = f", {len(problems)} with problems" if problems else ""
    summary = f"{len(statuses)} under prefix {prefix!r}, {healthy} healthy{odd}{more}"
    fine = healthy == len(statuses) and not problems
    add(
        ["breakers", "ok" if fine else "degraded", summary],
        [None, "green" if fine else "yellow", None],
    )
    for s in statuses:
        plural = "" if s.failure_count == 1 else "s"
        detail = f"{s.failure_count} failure{plural} in window, generation {s.generation}"
        if s.reason:
            detail += f"; why: {why_text(s, time.time())}"
        add([f"  {s.name}", s.state, detail], [None, STATE_STYLES.get(s.state), None])
        if s.config_conflict:
            add(
                [f"  {s.name}", "conflict", conflict_text(s.config_conflict)],
                [None, "yellow", None],
            )
    for problem in problems:
        add([f"  {problem.key}", "problem", problem.problem], [None, "yellow", None])
    return True


@app.command()
def demo(
    workers: Annotated[
        int, typer.Option("--workers", min=1, metavar="N", max=32, help="Worker processes.")
    ] = 3,
    duration: Annotated[
        float,
        typer.Option(
            "--duration", min=6.0, metavar="SECONDS", max=3600.0, help="Seconds the demo runs."
        ),
    ] = 15.0,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            metavar="URL",
            envvar=REDIS_URL_ENV,
            show_envvar=True,
            help=f"Redis to use; without one, {DEFAULT_REDIS_URL} or else an embedded Redis.",
        ),
    ] = None,
    prefix: Prefix = DEFAULT_PREFIX,
) -> None:
    """Worker processes share one breaker against a flaky local upstream; ends by itself.

    Without --redis-url and nothing answering at the default URL, an embedded Redis
    (fakeredis) is started and stopped; a given URL that does not answer is an error.
    """
    from distbreaker.cli._demo import DemoError, run_demo

    url, prefix = redis_url or None, _prefix(prefix)
    try:
        run_demo(url, Output(), workers=workers, duration=duration, prefix=prefix)
    except DemoError as error:
        raise CliError(str(error)) from None
    except ValueError as error:
        raise CliError(f"bad Redis URL {redact_url(_url(url))!r}: {error}", 2) from None
    except ImportError as error:
        raise CliError(
            f"no Redis at {redact_url(_url(url))} and no embedded one ({error}): "
            "pip install 'distbreaker[cli]'"
        ) from None


# -- entry point --------------------------------------------------------------------------


def _usage_line(error: typer.TyperException) -> str:
    """Click's message and where the help is, on one line (never the usage block)."""
    message = " ".join(error.format_message().split())
    context = getattr(error, "ctx", None)
    path = getattr(context, "command_path", None) or "distbreaker"
    return f"{message} (see '{path} --help')"


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv``; the exit status (errors already printed)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # The command reports Redis trouble itself, in one line; the library's warnings
    # (meant for long-running workers) would only repeat it.
    logging.getLogger("distbreaker").addHandler(logging.NullHandler())
    try:
        result = app(args=args, prog_name="distbreaker", standalone_mode=False)
    except typer.TyperException as error:  # usage errors: click's message, in one line
        if error.format_message().strip():  # none when the help was shown for no arguments
            error_line(_usage_line(error))
        return error.exit_code
    except typer.Abort:
        error_line("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except CliError as error:
        error_line(error.message)
        return error.code
    except PermissionDeniedError as error:
        error_line(str(error))
        return 1
    except StoreUnavailableError as error:
        error_line(f"Redis failed during the command: {error}")
        return 1
    except TOOL_ERRORS as error:
        if is_denied(error):
            error_line(f"Redis refused a command: this Redis user lacks a permission ({error})")
            return 1
        error_line(f"Redis failed during the command: {type(error).__name__}: {error}")
        return 1
    except Exception as error:  # the promise: one line, never a traceback
        error_line(f"unexpected {type(error).__name__}: {error}")
        return 1
    return int(result) if isinstance(result, int) else 0
