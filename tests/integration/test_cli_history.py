"""``distbreaker history``, the WHY column and the audit of manual control, as a user runs
them: real subprocesses against the real test Redis."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from distbreaker import Breaker, BreakerConfig
from distbreaker.cli._app import operator
from distbreaker.cli._render import clock_time
from distbreaker.store import breaker_keys
from tests.conftest import FakeClock, raise_connection_error
from tests.integration.test_cli import NOWHERE_REDIS, command, distbreaker, quiet_env

pytestmark = pytest.mark.integration

ENTRY_KEYS = {
    "id",
    "at",
    "event",
    "from",
    "to",
    "generation",
    "reason",
    "open_until",
    "failures",
    "reporters",
    "calls",
    "rate_failures",
    "actor",
    "note",
}
SUMMARY_KEYS = {
    "start",
    "end",
    "entries",
    "episodes",
    "open_seconds",
    "longest_open_seconds",
    "recoveries",
    "mean_time_to_recovery_seconds",
    "opens",
    "probes_failed",
    "holds",
    "commands",
}


def fail(breaker: Breaker) -> None:
    breaker.execute(raise_connection_error, fallback=lambda: None)


def flapping(breaker_factory: Callable[..., Breaker], clock: FakeClock) -> Breaker:
    """A trip and three failed probes (opens of 1, 2, 3, 3 s), then an operator's force
    open and reset, all about two minutes ago."""
    config = BreakerConfig(
        failure_threshold=1,
        reset_timeout=1.0,
        reset_timeout_multiplier=2.0,
        max_reset_timeout=3.0,
        consistency="strict",
    )
    breaker = breaker_factory("github", config, clock=clock)
    fail(breaker)
    for _ in range(3):
        clock.advance(breaker.status().time_until_reset)
        fail(breaker)
    clock.advance(1)
    breaker.force_open(actor="alice@ops-1", reason="db migration")
    clock.advance(2)
    breaker.reset(actor="alice@ops-1")
    return breaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time() - 120)


def test_history_shows_each_entry_the_backoff_and_a_summary(
    breaker_factory: Callable[..., Breaker], redis_url: str, clock: FakeClock
) -> None:
    breaker = flapping(breaker_factory, clock)
    result = distbreaker("history", "github", url=redis_url, prefix=breaker.config.key_prefix)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "BREAKER", "CHANGE", "REASON", "EVIDENCE", "OPEN",
                                "UNTIL", "BY"]  # fmt: skip
    entries = lines[1 : lines.index("")]
    changes = [re.split(r"\s{2,}", line)[2:4] for line in entries]
    assert changes == [
        ["closed -> open", "failure_threshold"],
        *[["open -> half_open", "reset_timeout"], ["half_open -> open", "probe_failed"]] * 3,
        ["open -> forced_open", "force_open"],
        ["forced_open -> closed", "reset"],
    ]
    lengths = [re.search(r"UTC \((\S+)\)", line) for line in entries]
    assert [m.group(1) for m in lengths if m] == ["1s", "2s", "3s", "3s"]  # r, r·m, capped
    assert entries[-2].endswith("alice@ops-1 (db migration)")
    assert entries[-1].endswith("alice@ops-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entries[0].split()[0])
    title, header, row = lines[lines.index("") + 1 :]
    assert title.startswith("from ")
    assert title.endswith(":")
    assert header.split()[:2] == ["BREAKER", "EPISODES"]
    cells = re.split(r"\s{2,}", row)
    # one episode of 1+2+3 s, 1 s of the fourth open, 2 s forced open: 9 s, recovered by the
    # reset; three failed probes; two commands
    assert cells[:7] == ["github", "1", "9s", "9s", "9s (1 recovered)", "3", "2"]
    assert cells[7].startswith("closed: reset by alice@ops-1, for ")


def test_history_json_has_the_documented_schema(
    breaker_factory: Callable[..., Breaker], redis_url: str, clock: FakeClock
) -> None:
    breaker = flapping(breaker_factory, clock)
    result = distbreaker(
        "history", "github", "--json", url=redis_url, prefix=breaker.config.key_prefix
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"start", "end", "breakers"}
    [shown] = document["breakers"]
    assert set(shown) == {"name", "status", "summary", "truncated", "entries"}
    assert shown["name"] == "github"
    assert shown["truncated"] is False
    assert shown["status"]["state"] == "closed"
    assert shown["status"]["actor"] == "alice@ops-1"
    assert set(shown["summary"]) == SUMMARY_KEYS
    assert all(set(e) == ENTRY_KEYS for e in shown["entries"])
    own = breaker.history()
    assert [e["id"] for e in shown["entries"]] == [e.id for e in own]
    assert [e["at"] for e in shown["entries"]] == [e.at_ms for e in own]
    assert document["start"] == own[0].at_ms / 1000  # no --since: from the oldest entry
    assert abs(document["end"] - time.time()) < 30
    summary = shown["summary"]
    assert (summary["episodes"], summary["probes_failed"], summary["opens"]) == (1, 3, 4)
    assert summary["open_seconds"] == summary["mean_time_to_recovery_seconds"] == 9.0


def test_since_takes_durations_and_iso_times(
    breaker_factory: Callable[..., Breaker], redis_url: str, clock: FakeClock
) -> None:
    breaker = flapping(breaker_factory, clock)
    prefix = breaker.config.key_prefix

    def shown(since: str) -> list[str]:
        result = distbreaker("history", "github", "--since", since, "--json", url=redis_url,
                             prefix=prefix)  # fmt: skip
        assert result.returncode == 0, result.stderr
        [history] = json.loads(result.stdout)["breakers"]
        return [e["reason"] for e in history["entries"]]

    assert len(shown("10m")) == 9
    assert shown("30s") == []  # everything happened about two minutes ago
    moment = datetime.fromtimestamp(clock.now - 1, UTC).isoformat()  # between force and reset
    assert shown(moment) == ["reset"]
    result = distbreaker("history", "github", "--since", "30s", url=redis_url, prefix=prefix)
    assert result.stdout.startswith("no history entries in the period\n")
    assert "closed: reset by alice@ops-1" in result.stdout  # the summary still says why


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ghost"], 1, "no breaker 'ghost' under prefix"),
        (["--since", "5x"], 2, "bad --since '5x': use 30s, 15m, 1h, 2d or an ISO time"),
        (["--since", "0m"], 2, "--since '0m': use a duration between 1s and 3650d"),
        (["--since", "2999-01-01"], 2, "--since '2999-01-01' lies in the future"),
        (["--limit", "5000"], 2, "--limit 5000: use 1 to 1000"),
        (["no/slash"], 2, "breaker name"),
    ],
)
def test_bad_input_is_one_line_with_exit_1_or_2(
    breaker_factory: Callable[..., Breaker],
    redis_url: str,
    args: list[str],
    code: int,
    message: str,
) -> None:
    prefix = breaker_factory("x").config.key_prefix
    result = distbreaker("history", *args, url=redis_url, prefix=prefix)
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith("distbreaker: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_history_without_redis_is_one_line_and_exit_1() -> None:
    result = distbreaker("history", url=NOWHERE_REDIS)
    assert result.returncode == 1
    assert result.stderr.startswith("distbreaker: error: cannot reach Redis")
    assert result.stderr.count("\n") == 1


def test_without_a_name_every_breaker_with_a_state_or_a_history_is_shown(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    github = breaker_factory("github", BreakerConfig(failure_threshold=1))
    prefix = github.config.key_prefix
    quiet = Breaker("docker-registry", github.redis, github.config)
    fail(github)
    quiet.force_open(actor="bob@ci")
    quiet.reset(actor="bob@ci")
    keys = breaker_keys(prefix, "docker-registry")
    github.redis.delete(keys.state, keys.control)  # its state expired; its history lives on
    result = distbreaker("history", "--json", url=redis_url, prefix=prefix)
    assert result.returncode == 0, result.stderr
    shown = {b["name"]: b for b in json.loads(result.stdout)["breakers"]}
    assert sorted(shown) == ["docker-registry", "github"]
    assert [e["actor"] for e in shown["docker-registry"]["entries"]] == ["bob@ci", "bob@ci"]


def test_on_a_terminal_a_strip_draws_the_period_in_colour(
    breaker_factory: Callable[..., Breaker], redis_url: str, clock: FakeClock
) -> None:
    breaker = flapping(breaker_factory, clock)
    env = quiet_env()
    env.pop("NO_COLOR")
    env.update(FORCE_COLOR="1", COLUMNS="200")
    result = subprocess.run(
        command("history", "github", url=redis_url, prefix=breaker.config.key_prefix),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    [strip] = [line for line in plain.splitlines() if line.startswith("github  ")]
    cells = strip.split(" UTC ")[1].split(" ")[0]
    assert len(cells) == 60
    assert set(cells) == {"█"}  # every cell known: the state before the first entry is too
    assert "\x1b[1;31m█" in result.stdout  # open, in bold red
    assert "\x1b[32m█" in result.stdout  # closed, in green


# -- the audit of manual control and "why" ---------------------------------------------------


def test_controls_from_the_command_line_record_user_at_host_and_reason(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", BreakerConfig(consistency="strict"))
    prefix = breaker.config.key_prefix
    for args in (
        ["open", "github", "--reason", "db migration"],
        ["close", "github", "--reason", "migration done"],
        ["reset", "github", "--reason", "back to normal"],
        ["open", "github", "--for", "30", "--reason", "deploy"],
    ):
        result = distbreaker(*args, url=redis_url, prefix=prefix)
        assert result.returncode == 0, result.stderr
    me = operator()
    assert re.fullmatch(r"[A-Za-z0-9._-]+@[A-Za-z0-9._-]+", me)
    assert [(e.to_state, e.reason, e.actor, e.note) for e in breaker.history()] == [
        ("forced_open", "force_open", me, "db migration"),
        ("forced_closed", "force_closed", me, "migration done"),
        ("closed", "reset", me, "back to normal"),
        ("open", "hold_open: deploy", me, "deploy"),
    ]
    shown = distbreaker("status", "github", url=redis_url, prefix=prefix)
    header, row = shown.stdout.splitlines()
    assert header.endswith("  WHY")
    assert re.search(rf"held \(deploy\) by {re.escape(me)} until \d\d:\d\d:\d\d UTC, for ", row)


def test_status_says_why_an_open_breaker_is_open(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    tripped = breaker_factory("github", BreakerConfig(failure_threshold=1, consistency="strict"))
    prefix = tripped.config.key_prefix
    held = Breaker("search", tripped.redis, tripped.config)
    fail(tripped)
    held.hold_open(120, "rate limited")  # what a worker does on a 429
    result = distbreaker("status", url=redis_url, prefix=prefix)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert re.search(r"  failure_threshold, for \d+(\.\d)?s$", rows["github"])
    until = re.search(r"  held \(rate limited\) until (\d\d:\d\d:\d\d UTC), for ", rows["search"])
    assert until is not None
    ends = time.time() + held.status().time_until_reset
    assert until.group(1) in {clock_time(ends + delta) for delta in range(-5, 6)}


def test_watch_prints_who_commanded_a_transition_and_why(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", BreakerConfig(consistency="strict"))
    args = ["watch", "--count", "2", "--timeout", "20"]
    watchers = [
        subprocess.Popen(
            command(*args, *extra, url=redis_url, prefix=breaker.config.key_prefix),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=quiet_env(),
        )
        for extra in ([], ["--json"])
    ]
    try:
        for watcher in watchers:
            assert watcher.stderr is not None
            assert watcher.stderr.readline().startswith("watching ")  # subscribed
        breaker.force_open(actor="alice@ops-1", reason="db migration")
        breaker.reset(actor="alice@ops-1")
        (text, _), (raw, _) = (w.communicate(timeout=20) for w in watchers)
    finally:
        for watcher in watchers:
            watcher.kill()
            watcher.wait()
    first, second = text.splitlines()
    assert first.endswith(
        "closed -> forced_open  generation 1  (force_open)  by alice@ops-1: db migration"
    )
    assert second.endswith("(reset)  by alice@ops-1")
    events = [json.loads(line) for line in raw.splitlines()]
    assert [(e["to"], e["actor"], e["note"]) for e in events] == [
        ("forced_open", "alice@ops-1", "db migration"),
        ("closed", "alice@ops-1", ""),
    ]
