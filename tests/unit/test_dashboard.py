"""The dashboard without a server: fleet cache, timelines, rendering, controls, HTTP routes
(Starlette's TestClient over fakeredis), settings checks and the CLI's refusals."""

from __future__ import annotations

import json
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest

with warnings.catch_warnings():  # Starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient

from distbreaker import Breaker, BreakerConfig, BreakerStatus
from distbreaker.cli import run
from distbreaker.cli._render import event_json
from distbreaker.core import Event
from distbreaker.dashboard import render
from distbreaker.dashboard.app import TOKEN_HEADER, ControlError, create_app, parse_control
from distbreaker.dashboard.feed import EventFeed
from distbreaker.dashboard.server import (
    DashboardError,
    check_settings,
    is_loopback,
    listen,
    read_token,
)
from distbreaker.dashboard.timeline import Change, Span, Timelines, changes_from_history
from distbreaker.fleet import BreakerRow, Fleet, FleetListing
from tests.conftest import FakeClock

TOKEN = "s3cret-token-for-tests-0123456789"
HOSTILE = '<img src=x onerror="alert(1)">&'
ALLOWED = sorted(BreakerStatus.model_fields)


def boom() -> None:
    raise ConnectionError("upstream down")


def trip(client: Any, prefix: str, name: str = "payments", threshold: int = 2) -> Breaker:
    config = BreakerConfig(key_prefix=prefix, failure_threshold=threshold, consistency="strict")
    breaker = Breaker(name, client, config)
    for _ in range(threshold):
        with pytest.raises(ConnectionError):
            breaker.execute(boom)
    return breaker


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def http(redis: Any, token: str | None = TOKEN) -> TestClient:
    app = create_app(redis, "dash", token, feed=False)
    return TestClient(app, base_url="http://127.0.0.1:8321")


@pytest.fixture
def web(redis: Any) -> Iterator[TestClient]:
    with http(redis) as client:
        yield client


def post(web: TestClient, path: str, body: object, token: str | None = TOKEN) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    return web.post(path, content=json.dumps(body), headers=headers)


# -- the fleet listing -------------------------------------------------------------------


def test_fleet_reads_redis_at_most_once_per_max_age(redis: Any) -> None:
    clock = FakeClock()
    trip(redis, "dash")
    fleet = Fleet(redis, "dash", max_age=1.0, min_age=0.25, clock=clock)
    first = fleet.read()
    assert [s.name for s in first.statuses] == ["payments"]
    assert fleet.read() is first
    assert fleet.reads == 1
    clock.advance(1.0)
    assert fleet.read() is not first
    assert fleet.reads == 2


def test_an_invalidated_fleet_reads_again_after_min_age_only(redis: Any) -> None:
    clock = FakeClock()
    fleet = Fleet(redis, "dash", max_age=5.0, min_age=0.25, clock=clock)
    fleet.read()
    fleet.invalidate()
    clock.advance(0.1)
    fleet.read()
    assert fleet.reads == 1  # a burst of events costs one read per min_age
    clock.advance(0.2)
    fleet.read()
    assert fleet.reads == 2


def test_fleet_keeps_the_last_rows_and_says_why_when_redis_fails() -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    trip(redis, "dash")
    clock = FakeClock()
    fleet = Fleet(redis, "dash", clock=clock)
    assert fleet.read().store_ok
    server.connected = False
    clock.advance(2)
    failed = fleet.read()
    assert not failed.store_ok
    assert failed.error
    assert "ConnectionError" in failed.error
    assert [s.name for s in failed.statuses] == ["payments"]


def test_fleet_shows_unstored_settings_as_none_then_picks_them_up(redis: Any) -> None:
    clock = FakeClock()
    fleet = Fleet(redis, "dash", clock=clock)
    breaker = trip(redis, "dash", threshold=3)  # two failures of three: no transition yet
    redis.hdel("dash:{payments}:state", "config")
    assert fleet.read().rows[0].config is None
    breaker.force_open()  # a transition stores the settings
    clock.advance(2)
    config = fleet.read().rows[0].config
    assert config is not None
    assert config.failure_threshold == 3


# -- timelines -----------------------------------------------------------------------------


def event(to: str, at_ms: int, generation: int, reason: str = "", frm: str = "closed") -> Event:
    return Event("payments", frm, to, generation, at_ms, reason, 0)  # type: ignore[arg-type]


def test_timeline_spans_follow_events_and_start_unknown() -> None:
    timelines = Timelines(horizon_ms=100_000)
    timelines.record(event("open", 950_000, 1, "failure_threshold"))
    timelines.record(event("half_open", 980_000, 2, frm="open"))
    spans = timelines.spans("payments", 1_000_000)
    assert spans == [
        Span("unknown", 900_000, 950_000, ""),
        Span("open", 950_000, 980_000, "failure_threshold"),
        Span("half_open", 980_000, 1_000_000, ""),
    ]


def test_timeline_keeps_the_change_that_set_the_state_at_the_window_start() -> None:
    timelines = Timelines(horizon_ms=100_000)
    timelines.record(event("open", 100_000, 1))
    timelines.record(event("closed", 1_000_000, 2, frm="open"))
    spans = timelines.spans("payments", 1_010_000)
    assert spans[0] == Span("open", 910_000, 1_000_000, "")


def test_the_listing_fills_in_a_missed_event_and_the_event_corrects_its_time() -> None:
    timelines = Timelines()
    timelines.observe("payments", "closed", 0, 1_000_000)
    timelines.observe("payments", "open", 1, 1_005_000)  # its event has not arrived
    assert timelines.spans("payments", 1_006_000)[-1].state == "open"
    timelines.record(event("open", 1_004_000, 1, "failure_threshold"))
    last = timelines.spans("payments", 1_006_000)[-1]
    assert (last.state, last.start_ms, last.reason) == ("open", 1_004_000, "failure_threshold")


def test_timelines_are_bounded_in_breakers_and_changes() -> None:
    timelines = Timelines(max_breakers=2, max_changes=3)
    for name in ("a", "b", "c"):
        timelines.observe(name, "closed", 0, 1000)
    assert not timelines.known("a")
    assert timelines.known("c")
    for generation in range(1, 10):
        timelines.record(
            event("open" if generation % 2 else "closed", 1000 + generation, generation)
        )
    assert len(timelines.spans("payments", 2000)) <= 4  # unknown + 3 kept changes


@dataclass
class Entry:
    at: float
    to_state: str
    generation: int
    reason: str


def test_history_entries_of_several_shapes_become_changes() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    entries = [
        Entry(1_790_000_000.5, "open", 1, "failure_threshold"),  # seconds
        {"at": 1_790_000_001_000, "to": "closed", "generation": 2},  # milliseconds
        {"at": moment, "to_state": "forced_open", "reason": None},
        {"at": "yesterday", "to": "open"},  # skipped: no usable time
        {"at": 1.0, "to": "exploded"},  # skipped: not a state
    ]
    assert changes_from_history(entries) == [
        Change(1_790_000_000_500, "open", 1, "failure_threshold"),
        Change(1_790_000_001_000, "closed", 2, ""),
        Change(int(moment.timestamp() * 1000), "forced_open", -1, ""),
    ]


# -- rendering -------------------------------------------------------------------------------


def hostile_status(**fields: object) -> BreakerStatus:
    values: dict[str, object] = {
        "name": HOSTILE,
        "state": "open",
        "failure_count": 5,
        "generation": 1,
        "opened_at": 1.0,
        "time_until_reset": 42.0,
        "last_failure_at": None,
        "store_ok": True,
        "healthy": False,
    }
    values.update(fields)
    return BreakerStatus.model_validate(values)


def test_rows_escape_names_and_count_down_from_time_until_reset() -> None:
    listing = FleetListing("p", (BreakerRow(hostile_status(), BreakerConfig()),), True, 0.0)
    spans = {HOSTILE: [Span("open", 0, 1000, HOSTILE)]}
    html = render.rows_html(listing, spans, 0, 1.0)
    assert "<img" not in html
    assert 'onerror="' not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html
    assert 'data-reset-in="42.000"' in html
    assert "5/5 in 120s" in html


def test_an_unknown_state_gets_no_class_of_its_own() -> None:
    status = hostile_status(state='open" onclick="x')
    cell = render.state_cell(status)
    assert 'class="state s-unknown"' in cell
    assert 'onclick="' not in cell


def test_the_rate_rule_shows_the_rate_instead_of_the_count() -> None:
    @dataclass
    class RateStatus:
        failure_count: int = 3
        rule: str = "rate"
        failure_rate: float = 0.4
        calls_in_window: int = 25

    @dataclass
    class RateConfig:
        failure_rate_threshold: float = 0.5

    text = render.failures_text(RateStatus(), RateConfig())  # type: ignore[arg-type]
    assert text == "40% of 25 calls (opens at 50%)"
    assert render.failures_text(hostile_status(), None) == "5/? in 120s"


def test_events_and_health_escape_what_they_show() -> None:
    html = render.events_html([event("open", 1_000, 1, HOSTILE)])
    assert "<img" not in html
    assert "&lt;img" in html
    listing = FleetListing("p", (), False, 0.0, error=HOSTILE)
    assert "<img" not in render.health_html(listing, 1)


# -- controls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "action", "body", "status"),
    [
        ("payments", "explode", b"{}", 404),
        ("bad name!", "reset", b"{}", 400),
        ("payments", "reset", b"[1]", 400),
        ("payments", "reset", b"not json", 400),
        ("payments", "hold_open", b'{"seconds": 0}', 400),
        ("payments", "hold_open", b'{"seconds": true}', 400),
        ("payments", "hold_open", b'{"seconds": 1e9}', 400),
        ("payments", "hold_open", b'{"seconds": 5, "reason": "' + b"x" * 201 + b'"}', 400),
        ("payments", "hold_open", b'{"seconds": 5, "reason": "a\\nb"}', 400),
    ],
)
def test_bad_control_requests_are_refused_before_any_io(
    name: str, action: str, body: bytes, status: int
) -> None:
    with pytest.raises(ControlError) as refused:
        parse_control(name, action, body, "tester")
    assert refused.value.status == status


def test_a_good_control_request_is_parsed() -> None:
    control = parse_control("payments", "hold_open", b'{"seconds": 30, "reason": " deploy "}', "me")
    assert (control.seconds, control.reason, control.actor) == (30.0, "deploy", "me")


# -- HTTP ----------------------------------------------------------------------------------------


def test_the_page_lists_breakers_with_a_nonce_policy_and_no_outside_assets(
    redis: Any, web: TestClient
) -> None:
    trip(redis, "dash")
    page = web.get("/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page.text
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert 'data-name="payments"' in page.text
    assert 's-open" data-state="open"' in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert 'id="controls"' in page.text
    assert TOKEN not in page.text


def test_the_json_endpoint_has_the_status_json_schema(redis: Any, web: TestClient) -> None:
    breaker = trip(redis, "dash")
    answer = web.get("/api/breakers")
    assert answer.status_code == 200
    [entry] = answer.json()
    assert sorted(entry) == ALLOWED
    assert entry == json.loads(json.dumps(breaker.status().model_dump(mode="json"))) | {
        "time_until_reset": entry["time_until_reset"],
        "since": entry["since"],
    }


def test_controls_are_post_only(redis: Any, web: TestClient) -> None:
    trip(redis, "dash")
    assert web.get("/api/breakers/payments/reset").status_code == 405
    assert web.put("/api/breakers/payments/reset").status_code == 405


def test_reset_with_the_token_closes_the_breaker(redis: Any, web: TestClient) -> None:
    breaker = trip(redis, "dash")
    answer = post(web, "/api/breakers/payments/reset", {"reason": "fixed"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"]["state"] == "closed"
    assert breaker.status().state == "closed"


def test_hold_open_with_the_token_opens_for_the_given_time(redis: Any, web: TestClient) -> None:
    breaker = trip(redis, "dash", name="github", threshold=5)
    breaker.reset()
    answer = post(web, "/api/breakers/github/hold_open", {"seconds": 90, "reason": "maintenance"})
    assert answer.status_code == 200, answer.text
    status = breaker.status()
    assert status.state == "open"
    assert 80 < status.time_until_reset <= 90


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({TOKEN_HEADER: "wrong-token-wrong-token-wrong"}, 401),
        ({TOKEN_HEADER: TOKEN, "Origin": "http://evil.example"}, 403),
        ({TOKEN_HEADER: TOKEN, "Sec-Fetch-Site": "cross-site"}, 403),
        ({TOKEN_HEADER: TOKEN, "Content-Type": "text/plain"}, 415),
    ],
)
def test_controls_without_the_token_or_from_another_site_change_nothing(
    redis: Any, web: TestClient, headers: dict[str, str], status: int
) -> None:
    breaker = trip(redis, "dash")
    before = breaker.status()
    sent = {"Content-Type": "application/json", **headers}
    answer = web.post("/api/breakers/payments/reset", content=b"{}", headers=sent)
    assert answer.status_code == status
    assert "error" in answer.json()
    after = breaker.status()
    assert (after.state, after.generation) == (before.state, before.generation)


def test_a_same_origin_request_from_the_page_passes(redis: Any, web: TestClient) -> None:
    trip(redis, "dash")
    headers = {
        TOKEN_HEADER: TOKEN,
        "Content-Type": "application/json",
        "Origin": "http://127.0.0.1:8321",
        "Sec-Fetch-Site": "same-origin",
    }
    answer = web.post("/api/breakers/payments/force_open", content=b"{}", headers=headers)
    assert answer.status_code == 200
    assert answer.json()["status"]["state"] == "forced_open"


def test_a_read_only_dashboard_refuses_controls_and_shows_none(redis: Any) -> None:
    breaker = trip(redis, "dash")
    with http(redis, token=None) as web:
        assert 'id="controls"' not in web.get("/").text
        answer = post(web, "/api/breakers/payments/reset", {}, token="anything-at-all-here")
    assert answer.status_code == 403
    assert "read-only" in answer.json()["error"]
    assert breaker.status().state == "open"


def test_controls_on_an_unknown_breaker_are_404(web: TestClient) -> None:
    assert post(web, "/api/breakers/nobody/reset", {}).status_code == 404


def test_a_foreign_host_header_is_refused_on_a_loopback_dashboard(web: TestClient) -> None:
    answer = web.get("/", headers={"Host": "rebound.example:8321"})
    assert answer.status_code == 400
    assert web.get("/", headers={"Host": "[::1]:8321"}).status_code == 200
    assert web.get("/").headers["x-frame-options"] == "DENY"


def test_a_hostile_reason_from_the_events_channel_is_escaped_on_the_page(
    redis: Any, web: TestClient
) -> None:
    trip(redis, "dash")
    dashboard = web.app.state.dashboard  # type: ignore[attr-defined]
    dashboard.record(event("open", 1_790_000_000_000, 1, HOSTILE))
    page = web.get("/").text
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_a_hostile_key_in_redis_is_not_listed(redis: Any, web: TestClient) -> None:
    redis.hset("dash:{<script>alert(1)</script>}:state", "state", "open")
    trip(redis, "dash")
    assert [entry["name"] for entry in web.get("/api/breakers").json()] == ["payments"]
    assert "<script>alert" not in web.get("/").text


def test_metrics_route_serves_fleet_gauges(redis: Any, web: TestClient) -> None:
    trip(redis, "dash")
    text = web.get("/metrics").text
    assert 'distbreaker_fleet_state{breaker="payments",state="open"} 1.0' in text
    assert "distbreaker_dashboard_clients 0.0" in text


# -- the events feed ------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reconnects = 0

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_reconnect(self) -> None:
        self.reconnects += 1


def test_the_feed_passes_transitions_and_ignores_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    feed = EventFeed(fakeredis.FakeRedis(), "dash:events", recorder)
    good = event_json(event("open", 1, 1))
    hostile = json.loads(good) | {"name": "<script>"}
    for data in (b"not json", json.dumps(hostile).encode(), b"[]", good.encode()):
        feed._deliver(data)
    assert [e.to_state for e in recorder.events] == ["open"]
    assert feed.ignored == 3
    assert len([r for r in caplog.records if "ignoring" in r.getMessage()]) == 1


# -- settings and the command ---------------------------------------------------------------------


def token_file(tmp_path: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(
        DashboardError, match=r"refusing to listen on 0\.0\.0\.0 without --token-file"
    ):
        check_settings("0.0.0.0", 8321, None, "distbreaker")
    settings = check_settings("0.0.0.0", 8321, token_file(tmp_path), "distbreaker")
    assert settings.token == TOKEN  # whitespace stripped
    assert TOKEN not in repr(settings)


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "::"))


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (TOKEN, 0o644, "readable or writable by group or others"),
        (TOKEN, 0o620, "readable or writable by group or others"),
        ("short", 0o600, "16 to 4096 characters"),
        ("has a space in the middle of it", 0o600, "printable ASCII without spaces"),
    ],
)
def test_bad_token_files_are_refused(tmp_path: Path, text: str, mode: int, message: str) -> None:
    with pytest.raises(DashboardError, match=message) as refused:
        read_token(token_file(tmp_path, text, mode))
    assert text not in refused.value.message


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match=r"cannot read token file .*missing"):
        read_token(tmp_path / "missing")


def test_a_bad_prefix_is_refused_before_connecting() -> None:
    with pytest.raises(DashboardError, match="bad prefix"):
        check_settings("127.0.0.1", 8321, None, "no spaces allowed")


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(DashboardError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)


def test_the_command_refuses_a_public_bind_without_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(["dashboard", "--host", "0.0.0.0", "--redis-url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("distbreaker: error: refusing to listen on 0.0.0.0 without --token-file")
    assert len(err.strip().splitlines()) == 1


def test_the_command_reports_an_unreachable_redis_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(["dashboard", "--redis-url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in err


def test_a_young_dashboard_draws_what_it_has_seen_across_the_width() -> None:
    timelines = Timelines(horizon_ms=3_600_000)
    assert timelines.start(10_000_000) == 10_000_000 - 3_600_000  # nothing seen: an hour
    timelines.record(event("open", 9_700_000, 1))
    assert timelines.start(10_000_000) == 9_700_000  # five minutes seen: five minutes drawn
    assert timelines.start(9_705_000) == 9_705_000 - 10_000  # never less than ten seconds


def test_fields_a_newer_status_carries_are_shown_when_present() -> None:
    class NewerStatus(BreakerStatus):
        actor: str | None = None
        reason: str = ""
        since: float | None = None
        locally_open: bool = False

    base = hostile_status(name="payments", state="forced_open").model_dump()
    newer = NewerStatus.model_validate(
        {**base, "actor": "alice", "reason": HOSTILE, "since": 125.0, "locally_open": True}
    )
    cell = render.state_cell(newer)
    assert "locally open · by alice · " in cell
    assert "&lt;img" in cell
    assert "<img" not in cell
    assert "for 2m" in cell
    assert render.state_cell(hostile_status(state="closed")).endswith("closed</td>")
