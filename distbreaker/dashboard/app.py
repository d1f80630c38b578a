"""The dashboard's Starlette app: one page, live over server-sent events, plus JSON,
controls and ``/metrics``.

One ``Dashboard`` per server holds the cached fleet listing, the timelines and the recent
transitions. A single publisher task reads Redis (at most once per ``min_interval``, and
only while a page is open: every ``refresh_interval`` and at once after a transition),
renders the fragments once and hands the same snapshot to every open page. The events
channel is read by one ``EventFeed`` thread per server. So the Redis load does not grow
with the number of pages.

Routes: ``GET /`` (the page), ``GET /events`` (the stream), ``GET /api/breakers`` (the
``status --json`` list), ``POST /api/breakers/{name}/{action}`` (controls, with the token
header), ``GET /metrics`` (fleet gauges for Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distbreaker.breaker import Breaker
from distbreaker.config import validate_name
from distbreaker.core import Event
from distbreaker.dashboard import render
from distbreaker.dashboard.feed import EventFeed
from distbreaker.dashboard.timeline import HOUR_MS, Timelines, history_of
from distbreaker.diagnostics import breaker_exists
from distbreaker.errors import PermissionDeniedError
from distbreaker.fleet import READ_ERRORS, Fleet, FleetListing
from distbreaker.metrics import FleetCollector
from distbreaker.store import events_channel

logger = logging.getLogger("distbreaker.dashboard")

TOKEN_HEADER = "X-Distbreaker-Token"  # noqa: S105 - a header name, not a secret
ACTIONS = ("hold_open", "force_open", "force_closed", "reset")
MAX_HOLD_SECONDS = 7 * 86_400
MAX_REASON = 200
MAX_BODY = 4096
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _static(name: str) -> str:
    return resources.files("distbreaker.dashboard").joinpath("static", name).read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One rendered update, shared by every page; ``made_at`` is the monotonic read time."""

    body: str
    made_at: float
    listing: FleetListing


class Dashboard:
    """The server's state and its publisher; also the ``EventFeed`` listener."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        timelines: Timelines | None = None,
        refresh_interval: float = 2.0,
        min_interval: float = 0.25,
        recent: int = 20,
        max_clients: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.timelines = timelines or Timelines()
        self.refresh_interval = refresh_interval
        self.min_interval = min_interval
        self.max_clients = max_clients
        self.recent: deque[Event] = deque(maxlen=recent)
        self.clients = 0
        self.snapshot: Snapshot | None = None
        self._clock = clock
        self._wall = wall
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    # -- the feed's listener contract (called from the feed thread) ---------------------

    def on_event(self, event: Event) -> None:
        self._call_soon(self.record, event)

    def on_reconnect(self) -> None:
        self._call_soon(self._reconnected)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def record(self, event: Event) -> None:
        """A transition (on the event loop): into the timeline and the recent list."""
        self.timelines.record(event)
        self.recent.append(event)
        self.changed()

    def _reconnected(self) -> None:
        self.changed()  # transitions sent while the feed was away are lost: read again

    def changed(self) -> None:
        """Something changed: read Redis again soon (at once if a page is open)."""
        self.fleet.invalidate()
        self._wake.set()

    # -- the publisher ------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._limiter = anyio.CapacityLimiter(4)

    async def run(self) -> None:
        """Publish a fresh snapshot while pages are open, never more than once per
        ``min_interval``; sleep while none is."""
        while True:
            timeout = self.refresh_interval if self.clients else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not self.clients:
                continue
            try:
                await self.refresh()
            except Exception:  # a bug must not stop the updates of every page
                logger.exception("rendering an update failed")
            await asyncio.sleep(self.min_interval)
            if self.fleet.stale:  # a change came while the cache was too young to re-read
                self._wake.set()

    async def refresh(self) -> Snapshot:
        """Read the fleet, render it once, and hand it to every open page."""
        listing = await self.read()
        snapshot = self._render(listing)
        self.snapshot = snapshot
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return snapshot

    async def read(self) -> FleetListing:
        """The cached listing (read off the event loop, a bounded number at a time)."""
        return await anyio.to_thread.run_sync(self._read_and_observe, limiter=self._limiter)

    async def current(self) -> Snapshot:
        """A snapshot no older than ``refresh_interval``."""
        snapshot = self.snapshot
        fresh = snapshot is not None and self._age(snapshot) < self.refresh_interval
        if snapshot is not None and fresh and not self.fleet.stale:
            return snapshot
        return await self.refresh()

    async def updates(self) -> AsyncIterator[Snapshot]:
        """Every snapshot published while the caller listens (the latest one first)."""
        self.clients += 1
        try:
            self._wake.set()  # start (or keep) the publisher going; reads stay bounded
            seen: Snapshot | None = None
            while True:
                changed, snapshot = self._changed, self.snapshot
                if snapshot is not None and snapshot is not seen:
                    seen = snapshot
                    yield snapshot
                    continue
                await changed.wait()
        finally:
            self.clients -= 1

    def message(self, snapshot: Snapshot) -> str:
        """The stream message for ``snapshot``: its age now lets the page count down."""
        return f'{{"age":{self._age(snapshot):.3f},"fleet":{snapshot.body}}}'

    def _age(self, snapshot: Snapshot) -> float:
        return max(0.0, self._clock() - snapshot.made_at)

    def _read_and_observe(self) -> FleetListing:
        listing = self.fleet.read()
        if not listing.store_ok:
            return listing
        now_ms = round(self._wall() * 1000)
        for row in listing.rows:
            name = row.status.name
            if not self.timelines.known(name):
                self._seed(name)
            self.timelines.observe(name, row.status.state, row.status.generation, now_ms)
        return listing

    def _seed(self, name: str) -> None:
        since = self._wall() - HOUR_MS / 1000
        try:
            changes = history_of(self.fleet.breaker(name), since)
        except READ_ERRORS as error:
            logger.info("no history for %r (%s)", name, error)
            return
        if changes:
            self.timelines.seed(name, changes)

    def _render(self, listing: FleetListing) -> Snapshot:
        now_s = self._wall()
        now_ms = round(now_s * 1000)
        start_ms = self.timelines.start(now_ms)
        spans = {
            row.status.name: self.timelines.spans(row.status.name, now_ms, start_ms)
            for row in listing.rows
        }
        fragments = {
            "rows": render.rows_html(listing, spans, start_ms, now_s),
            "health": render.health_html(listing, self.clients, (now_ms - start_ms) / 1000),
            "events": render.events_html(list(self.recent)),
            "names": [row.status.name for row in listing.rows],
        }
        return Snapshot(json.dumps(fragments), self._clock(), listing)


# -- controls ----------------------------------------------------------------------------


class ControlError(Exception):
    """A refused control request: ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Control:
    """A checked control request."""

    name: str
    action: str
    seconds: float | None
    reason: str
    actor: str


def parse_control(name: str, action: str, body: bytes, actor: str) -> Control:
    """The request as a ``Control``, or ``ControlError`` (400/404) before any I/O."""
    if action not in ACTIONS:
        raise ControlError(404, f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    try:
        name = validate_name(name)
    except ValueError as error:
        raise ControlError(400, str(error)) from None
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ControlError(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ControlError(400, "the body must be a JSON object")
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ControlError(400, f"reason must be text of at most {MAX_REASON} characters")
    if _CONTROL_CHARACTERS.search(reason):
        raise ControlError(400, "reason must not contain control characters")
    seconds = data.get("seconds")
    if action == "hold_open":
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_HOLD_SECONDS
        ):
            raise ControlError(400, f"seconds must be a number in (0, {MAX_HOLD_SECONDS}]")
        seconds = float(seconds)
    else:
        seconds = None
    return Control(name, action, seconds, reason.strip(), actor)


def run_control(breaker: Breaker, control: Control) -> None:
    """Apply ``control`` as an operator command: its actor and reason go into the
    breaker's history (a timed open, too, is the operator's, not a worker's hold)."""
    actor, reason = control.actor, control.reason
    if control.action == "hold_open":
        breaker.hold_open(control.seconds or 0.0, reason, actor=actor)
    elif control.action == "force_open":
        breaker.force_open(actor=actor, reason=reason)
    elif control.action == "force_closed":
        breaker.force_closed(actor=actor, reason=reason)
    else:
        breaker.reset(actor=actor, reason=reason)


def refusal(request: Request, token: str | None) -> ControlError | None:
    """Why a control request may not proceed (401/403/415), or None.

    The token must come in ``X-Distbreaker-Token``: a custom header cannot be sent
    cross-site without a CORS preflight, which this server never grants. A request a
    browser marks as cross-site (``Sec-Fetch-Site``, ``Origin``) is refused besides.
    """
    if token is None:
        return ControlError(
            403, "read-only dashboard: start it with --token-file to enable the controls"
        )
    supplied = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(supplied.encode("utf-8", "replace"), token.encode("utf-8")):
        return ControlError(401, f"missing or wrong {TOKEN_HEADER} header")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return ControlError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != expected:
        return ControlError(403, "cross-origin request refused")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return ControlError(415, "send the body as application/json")
    return None


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ControlError(413, f"the body must be at most {MAX_BODY} bytes")
    return body


# -- the app -------------------------------------------------------------------------------


class Guard:
    """ASGI middleware: ``Host`` must be one of ``allowed_hosts`` (when given: a loopback
    bind, against DNS rebinding), and every response gets the no-sniff/no-frame headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None and _hostname(scope) not in self.allowed_hosts:
            await PlainTextResponse("unexpected Host header", 400)(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_secured)


def _hostname(scope: Scope) -> str | None:
    host = Headers(scope=scope).get("host", "")
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


class _DashboardCollector(Collector):
    """The dashboard's own numbers: open pages and Redis reads."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def collect(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily(
            "distbreaker_dashboard_clients", "Pages receiving live updates from this dashboard."
        )
        clients.add_metric([], self.dashboard.clients)
        reads = CounterMetricFamily(
            "distbreaker_dashboard_fleet_reads", "Listings of the fleet this dashboard read."
        )
        reads.add_metric([], self.dashboard.fleet.reads)
        return iter([clients, reads])


def create_app(
    client: Any,
    prefix: str,
    token: str | None,
    *,
    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
    refresh_interval: float = 2.0,
    min_interval: float = 0.25,
    feed: bool = True,
) -> Starlette:
    """The dashboard for the breakers under ``prefix`` on ``client`` (sync redis-py).

    ``token`` enables the controls (None: read-only). ``allowed_hosts`` are the host
    names the ``Host`` header may carry (None: any, for a non-loopback bind). With
    ``feed`` a thread follows the events channel while the app runs.
    """
    fleet = Fleet(client, prefix, max_age=min(1.0, refresh_interval), min_age=min_interval)
    dashboard = Dashboard(fleet, refresh_interval=refresh_interval, min_interval=min_interval)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet.read))
    registry.register(_DashboardCollector(dashboard))
    page = _static("page.html")
    assets = {"style": _static("dashboard.css"), "script": _static("dashboard.js")}
    controls_panel = _static("controls.html") if token is not None else ""

    async def index(request: Request) -> Response:
        snapshot = await dashboard.current()
        fragments = json.loads(snapshot.body)
        nonce = secrets.token_urlsafe(16)
        values = {
            **assets,
            "nonce": nonce,
            "prefix": render.esc(fleet.prefix),
            "columns": "".join(f"<th>{render.esc(c)}</th>" for c in render.COLUMNS),
            "rows": fragments["rows"],
            "health": fragments["health"],
            "events": fragments["events"],
            "controls_panel": controls_panel,
        }
        # one pass: text substituted in is never scanned for markers again
        body = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], page)
        policy = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        return HTMLResponse(body, headers={"Content-Security-Policy": policy})

    async def events(request: Request) -> Response:
        if dashboard.clients >= dashboard.max_clients:
            return JSONResponse({"error": "too many open pages"}, status_code=503)

        async def stream() -> AsyncIterator[dict[str, str]]:
            async for snapshot in dashboard.updates():
                yield {"event": "fleet", "data": dashboard.message(snapshot)}

        return EventSourceResponse(stream(), ping=15, send_timeout=30)

    async def breakers(request: Request) -> Response:
        listing = await dashboard.read()
        if not listing.store_ok:
            return JSONResponse({"error": f"Redis unreachable: {listing.error}"}, status_code=503)
        return JSONResponse([status.model_dump(mode="json") for status in listing.statuses])

    async def control(request: Request) -> Response:
        try:
            problem = refusal(request, token)
            if problem is not None:
                raise problem
            actor = f"dashboard@{request.client.host}" if request.client else "dashboard"
            wanted = parse_control(
                request.path_params["name"],
                request.path_params["action"],
                await _body(request),
                actor,
            )
            status = await anyio.to_thread.run_sync(_apply, fleet, wanted)
        except ControlError as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        dashboard.changed()
        return JSONResponse({"status": status})

    async def metrics(request: Request) -> Response:
        text = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dashboard.attach(asyncio.get_running_loop())
        follower = EventFeed(client, events_channel(fleet.prefix), dashboard) if feed else None
        if follower is not None:
            follower.start()
        publisher = asyncio.create_task(dashboard.run())
        try:
            yield
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            if follower is not None:
                await anyio.to_thread.run_sync(follower.close)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Route("/api/breakers", breakers, methods=["GET"]),
            Route("/api/breakers/{name}/{action}", control, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    return app


def _apply(fleet: Fleet, control: Control) -> dict[str, Any]:
    """Run ``control`` on an existing breaker; its new status (``ControlError`` 404/409/503)."""
    try:
        if not breaker_exists(fleet.client, fleet.prefix, control.name):
            raise ControlError(404, f"no breaker {control.name!r} under prefix {fleet.prefix!r}")
        breaker = fleet.breaker(control.name)
        run_control(breaker, control)
        after = breaker.status()
    except PermissionDeniedError as error:  # an observer's Redis user: no controls
        raise ControlError(403, str(error)) from None
    except READ_ERRORS as error:
        raise ControlError(503, f"Redis failed: {type(error).__name__}: {error}") from None
    why = f" ({control.reason})" if control.reason else ""
    logger.info("%s %r by %s%s", control.action, control.name, control.actor, why)
    if control.action == "hold_open" and after.state != "open":
        raise ControlError(
            409,
            f"breaker {control.name!r} is {after.state}: a timed open does not override "
            "a manual state; reset it first",
        )
    return after.model_dump(mode="json")
