"""``distbreaker history`` and the "why" texts without a server: ``--since`` parsing, the
period summary, the timeline strip, the operator name; then the command in-process on an
embedded Redis. The subprocess runs on a real Redis are in tests/integration/test_cli_history.py.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.cli import event_line, run
from distbreaker.cli._app import operator
from distbreaker.cli._demo import EmbeddedRedis
from distbreaker.cli._history import (
    Span,
    episodes,
    parse_since,
    spans,
    strip_cells,
    summarize,
)
from distbreaker.cli._render import duration_text, why_text
from distbreaker.core import Event, HistoryEntry
from distbreaker.status import BreakerStatus

NOW = 1_790_000_000.0


def entry(at_ms: int, frm: str, to: str, reason: str = "", **fields: object) -> HistoryEntry:
    settings: dict[str, object] = {
        "at_ms": at_ms,
        "event": "transition",
        "from_state": frm,
        "to_state": to,
        "generation": 1,
        "reason": reason,
        "open_until_ms": 0,
        "failures": 0,
        "reporters": 0,
        **fields,
    }
    return HistoryEntry(**settings)  # type: ignore[arg-type]


def status(**fields: object) -> BreakerStatus:
    base: dict[str, object] = {
        "name": "github",
        "state": "closed",
        "failure_count": 0,
        "generation": 1,
        "opened_at": None,
        "time_until_reset": 0.0,
        "last_failure_at": None,
        "store_ok": True,
        "healthy": True,
    }
    return BreakerStatus(**{**base, **fields})  # type: ignore[arg-type]


# -- --since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "back"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172_800), ("1h30m", 5400), (" 5m ", 300)],
)
def test_since_durations_count_back_from_now(text: str, back: float) -> None:
    since = parse_since(text, NOW)
    assert since.back == back
    assert since.start(NOW) == NOW - back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-09-21T14:00:00Z", datetime(2026, 9, 21, 14, tzinfo=UTC)),
        ("2026-09-21T14:00:00", datetime(2026, 9, 21, 14, tzinfo=UTC)),  # UTC unless said
        ("2026-09-21 16:00:00+02:00", datetime(2026, 9, 21, 14, tzinfo=UTC)),
        ("2026-09-21", datetime(2026, 9, 21, tzinfo=UTC)),
    ],
)
def test_since_iso_times_are_moments(text: str, expected: datetime) -> None:
    since = parse_since(text, NOW)
    assert since.at == expected.timestamp()
    assert since.start(NOW + 1000) == expected.timestamp()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad --since"),
        ("5x", "bad --since"),
        ("h", "bad --since"),
        ("-5m", "bad --since"),
        ("1.5h", "bad --since"),
        ("yesterday", "bad --since"),
        ("0s", "between 1s and 3650d"),
        ("9999d", "between 1s and 3650d"),
        ("2030-01-01T00:00:00Z", "lies in the future"),
        ("1969-12-31T00:00:00Z", "lies before 1970"),
    ],
)
def test_bad_since_values_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_since(text, NOW)


def test_a_duration_back_never_starts_before_1970() -> None:
    assert parse_since("3650d", NOW).start(1000.0) == 0.0


# -- the summary ----------------------------------------------------------------------------


def test_summary_counts_episodes_time_open_recovery_and_failed_probes() -> None:
    entries = [
        entry(0, "closed", "open", "failure_threshold"),
        entry(1_000, "open", "half_open", "reset_timeout"),
        entry(1_000, "half_open", "open", "probe_failed"),
        entry(3_000, "open", "half_open", "reset_timeout"),
        entry(3_000, "half_open", "closed", "probe_succeeded"),
        entry(10_000, "closed", "open", "hold_open: rate limited"),
        entry(12_000, "open", "open", "force_open", event="command", actor="ops@desk"),
    ]
    summary = summarize(entries, 0, 20_000, "open")
    assert summary.episodes == 2
    assert summary.open_ms == 3_000 + 10_000  # the second one still going at the end
    assert summary.longest_open_ms == 10_000
    assert (summary.recoveries, summary.mean_time_to_recovery_ms) == (1, 3_000)
    assert (summary.opens, summary.probes_failed) == (3, 1)
    assert (summary.holds, summary.commands, summary.entries) == (1, 1, 7)


def test_an_episode_begun_before_the_period_is_not_a_recovery_time() -> None:
    entries = [
        entry(5_000, "open", "half_open", "reset_timeout"),
        entry(6_000, "half_open", "closed", "probe_succeeded"),
    ]
    [stretch] = episodes(entries, 0, 10_000, "closed")
    assert (stretch.start_ms, stretch.end_ms, stretch.seen_start) == (0, 6_000, False)
    summary = summarize(entries, 0, 10_000, "closed")
    assert (summary.recoveries, summary.mean_time_to_recovery_ms) == (1, None)
    assert summary.open_ms == 6_000


def test_with_no_entries_the_current_state_fills_the_period() -> None:
    assert summarize([], 0, 10_000, "closed").episodes == 0
    opened = summarize([], 0, 10_000, "forced_open")
    assert (opened.episodes, opened.open_ms, opened.recoveries) == (1, 10_000, 0)


def test_forced_closed_counts_as_admitting() -> None:
    entries = [
        entry(1_000, "closed", "forced_open", "force_open"),
        entry(2_000, "forced_open", "forced_closed", "force_closed"),
    ]
    summary = summarize(entries, 0, 5_000, "forced_closed")
    assert (summary.episodes, summary.open_ms, summary.mean_time_to_recovery_ms) == (
        1,
        1_000,
        1_000,
    )
    assert summary.commands == 2


def test_times_that_step_back_are_held_at_the_previous_one() -> None:
    entries = [
        entry(5_000, "closed", "open", "failure_threshold"),
        entry(4_000, "open", "half_open", "reset_timeout"),  # a clock stepped back
        entry(6_000, "half_open", "closed", "probe_succeeded"),
    ]
    assert spans(entries, 0, 8_000, "closed") == [
        Span("closed", 0, 5_000),
        Span("half_open", 5_000, 6_000),  # the zero-length open is left out
        Span("closed", 6_000, 8_000),
    ]
    assert summarize(entries, 0, 8_000, "closed").open_ms == 1_000


def test_the_strip_keeps_a_short_open_visible() -> None:
    period = [Span("closed", 0, 9_000), Span("open", 9_000, 9_100), Span("closed", 9_100, 10_000)]
    cells = strip_cells(period, 0, 10_000, 10)
    assert cells == ["closed"] * 9 + ["open"]
    assert strip_cells([], 0, 10_000, 4) == ["", "", "", ""]


# -- why, watch and the operator --------------------------------------------------------------


def test_duration_text_reads_at_a_glance() -> None:
    assert [duration_text(s) for s in (0, 2.5, 3, 45, 252, 11_100, 183_600)] == [
        "0s",
        "2.5s",
        "3s",
        "45s",
        "4m12s",
        "3h05m",
        "2d03h",
    ]


def test_why_says_reason_streak_and_time_in_state() -> None:
    shown = status(state="open", reason="probe_failed", open_streak=3, since=12.0)
    assert why_text(shown, NOW) == "probe_failed (streak 3), for 12s"
    assert why_text(status(), NOW) == "-"


def test_why_names_the_operator_and_their_note() -> None:
    shown = status(
        state="forced_open",
        reason="force_open",
        actor="alice@ops-1",
        note="db migration",
        since=300,
    )
    assert why_text(shown, NOW) == "force_open by alice@ops-1: db migration, for 5m00s"


def test_why_says_a_rate_limit_hold_and_until_when() -> None:
    shown = status(state="open", reason="hold_open: rate limited", time_until_reset=30.0, since=3)
    assert why_text(shown, NOW) == "held (rate limited) until 14:13:50 UTC, for 3s"
    manual = status(
        state="open",
        reason="hold_open: deploy",
        actor="bob@ci",
        note="deploy",
        time_until_reset=60.0,
    )
    assert why_text(manual, NOW) == "held (deploy) by bob@ci until 14:14:20 UTC"


def test_watch_lines_show_the_operator_and_note() -> None:
    event = Event("github", "open", "forced_open", 4, 1_790_000_000_000, "force_open", 0,
                  "alice@ops-1", "db migration")  # fmt: skip
    assert event_line(event).endswith("(force_open)  by alice@ops-1: db migration")


def test_the_operator_is_user_at_host_in_plain_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "al ice\n<x>")
    monkeypatch.setattr("socket.gethostname", lambda: "ops-1.example")
    assert operator() == "al_ice__x_@ops-1.example"

    def nobody() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert operator() == "unknown@ops-1.example"


# -- the command in-process on an embedded Redis ---------------------------------------------


@pytest.fixture(scope="module")
def embedded_url() -> Iterator[str]:
    server = EmbeddedRedis().start()
    yield server.url
    server.stop()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_history_lists_entries_and_summarizes_the_period(
    capsys: pytest.CaptureFixture[str], embedded_url: str
) -> None:
    prefix = f"h-{uuid.uuid4().hex[:8]}"
    client = distbreaker.connect(embedded_url, timeout=2.0)
    config = BreakerConfig(key_prefix=prefix, failure_threshold=1, consistency="strict")
    breaker = Breaker("github", client, config)
    breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")), fallback=lambda: 0)
    breaker.force_open(actor="alice@ops-1", reason="db migration")
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    code, out, err = cli(capsys, "history", *where)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "BREAKER", "CHANGE", "REASON", "EVIDENCE", "OPEN",
                                "UNTIL", "BY"]  # fmt: skip
    assert "github   closed -> open" in lines[1]
    assert "(1m00s)" in lines[1]  # the open's length
    assert lines[2].endswith("alice@ops-1 (db migration)")
    summary = lines[lines.index("") + 2 :]
    assert summary[0].split()[:3] == ["BREAKER", "EPISODES", "TIME"]
    assert summary[1].split()[:2] == ["github", "1"]
    assert "forced_open: force_open by alice@ops-1: db migration" in summary[1]
    code, out, _ = cli(capsys, "history", "github", "--json", "--limit", "1", *where)
    document = json.loads(out)
    [shown] = document["breakers"]
    assert [e["to"] for e in shown["entries"]] == ["forced_open"]
    assert shown["summary"]["entries"] == 2


def test_history_of_nothing_says_so(capsys: pytest.CaptureFixture[str], embedded_url: str) -> None:
    prefix = f"h-{uuid.uuid4().hex[:8]}"
    code, out, _ = cli(capsys, "history", "--redis-url", embedded_url, "--prefix", prefix)
    assert (code, out) == (0, f"no breakers under prefix {prefix!r} at {embedded_url}\n")
    code, out, _ = cli(capsys, "history", "--json", "--redis-url", embedded_url, "--prefix", prefix)
    assert json.loads(out)["breakers"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "5x"], "bad --since '5x'"),
        (["--limit", "0"], "--limit 0: use 1 to 1000"),
        (["bad name"], "breaker name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_io(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = cli(capsys, "history", *args, "--redis-url", "redis://127.0.0.1:1/0")
    assert (code, out) == (2, "")
    assert message in err
    assert err.count("\n") == 1
