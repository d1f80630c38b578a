"""The ``distbreaker`` command in-process: formatting, errors, and every subcommand against an
embedded (fakeredis TCP) Redis. The real-Redis, real-subprocess runs are in
``tests/integration/test_cli.py``."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.cli import ago, event_line, plain_table, resets_in, run, status_row
from distbreaker.cli._app import operator
from distbreaker.cli._demo import EmbeddedRedis, schedule
from distbreaker.events import parse_event
from distbreaker.status import BreakerStatus


@pytest.fixture(scope="module")
def embedded_url() -> Iterator[str]:
    server = EmbeddedRedis().start()
    yield server.url
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


NOWHERE = "http://127.0.0.1:1/"
NOWHERE_REDIS = "redis://127.0.0.1:1/0"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tripped(url: str, prefix: str, name: str = "github") -> Breaker:
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, window=30, consistency="strict")
    breaker = Breaker(name, distbreaker.connect(url, timeout=2.0), config)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    return breaker


# -- formatting --------------------------------------------------------------------------


def test_plain_table_pads_columns_without_trailing_blanks() -> None:
    lines = plain_table("", ["A", "LONGER"], [["xyz", "1"], ["q", ""]])
    assert lines == ["A    LONGER", "xyz  1", "q"]


def test_ago_reads_like_a_person() -> None:
    assert ago(None, 100.0) == "never"
    assert ago(88.0, 100.0) == "12s ago"
    assert ago(100.0 - 600, 100.0) == "10m ago"
    assert ago(100.0 - 7200, 100.0) == "2.0h ago"


def _status(state: str, time_until_reset: float) -> BreakerStatus:
    return BreakerStatus(
        name="x",
        state=state,
        failure_count=0,
        generation=1,
        opened_at=None,
        time_until_reset=time_until_reset,
        last_failure_at=None,
        store_ok=True,
        healthy=state == "closed",
    )


def test_resets_in_says_due_once_the_wait_is_over() -> None:
    assert resets_in(_status("open", 12.34)) == "12.3s"
    assert resets_in(_status("open", 0.0)) == "due"
    assert resets_in(_status("forced_open", 0.0)) == "manual"
    assert resets_in(_status("closed", 0.0)) == "-"


def test_status_row_marks_unknown_settings() -> None:
    row = status_row(_status("closed", 0.0), None, 0.0)
    assert row[2] == "0/? in 120s"
    config = BreakerConfig(failure_threshold=3, window=30)
    assert status_row(_status("closed", 0.0), config, 0.0)[2] == "0/3 in 30s"


def test_event_line_shows_names_states_and_reason() -> None:
    data = json.dumps(
        {
            "name": "github",
            "from": "closed",
            "to": "open",
            "generation": 3,
            "at": 1_795_000_000_000,
            "reason": "failure_threshold",
            "open_until": 1_795_000_060_000,
        }
    )
    event = parse_event(data)
    assert event is not None
    line = event_line(event)
    assert "github  closed -> open  generation 3  (failure_threshold)" in line
    assert line.startswith("2026-")
    assert "until " in line


def test_demo_schedule_leaves_time_to_recover() -> None:
    for duration in (6.0, 8.0, 15.0, 60.0):
        phases = schedule(duration)
        assert [p.mode for p in phases] == ["ok", "error", "ok"]
        # recovery must leave one reset_timeout (2 s) plus a margin before the end
        assert phases[2].at + 2.0 < duration


# -- errors: one line, non-zero exit --------------------------------------------------------


def test_unreachable_redis_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in err


def test_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "reset", "github", "--redis-url", "notaurl://x")
    assert code == 2
    assert err.startswith("distbreaker: error: bad Redis URL 'notaurl://x'")
    assert "Traceback" not in err


def test_password_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", "--redis-url", "redis://user:s3cret@127.0.0.1:1/0")
    assert code == 1
    assert "s3cret" not in err
    assert "user:***@127.0.0.1:1" in err


def test_bad_name_and_bad_prefix_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "open", "bad name")[0] == 2
    assert cli(capsys, "status", "--prefix", "no spaces")[0] == 2


def test_a_forced_open_keeps_its_reason_and_operator(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    code, _, err = cli(capsys, "open", "github", "--reason", "db migration", *where)
    assert code == 0, err
    config = BreakerConfig(key_prefix=prefix)
    status = Breaker("github", distbreaker.connect(embedded_url, timeout=2.0), config).status()
    assert (status.state, status.reason, status.note) == (
        "forced_open",
        "force_open",
        "db migration",
    )
    assert status.actor == operator()


def test_unknown_option_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", "--nope")
    assert code == 2
    assert "No such option" in err


def test_redis_url_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTBREAKER_REDIS_URL", "redis://127.0.0.1:1/5")
    code, _, err = cli(capsys, "status")
    assert code == 1
    assert "redis://127.0.0.1:1/5" in err


def test_unreachable_cluster_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status", "--cluster", "--redis-url", NOWHERE_REDIS)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert f"cannot reach a Redis Cluster at {NOWHERE_REDIS}" in err


def test_a_cluster_database_other_than_0_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(capsys, "reset", "github", "--cluster", "--redis-url", "redis://h:1/3")
    assert code == 2
    assert "a Redis Cluster has only database 0" in err


def test_cluster_mode_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, embedded_url: str
) -> None:
    monkeypatch.setenv("DISTBREAKER_REDIS_CLUSTER", "1")
    code, _, err = cli(capsys, "watch", "--timeout", "0.1", "--redis-url", embedded_url)
    assert code == 1
    assert "cannot reach a Redis Cluster" in err


def test_diagnose_of_an_unreachable_cluster_still_reports_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(
        capsys,
        "diagnose",
        "--json",
        "--cluster",
        "--redis-url",
        NOWHERE_REDIS,
        "--github-url",
        NOWHERE,
    )
    assert code == 1
    report = json.loads(out)
    assert report["redis"]["reachable"] is False
    assert "RedisClusterException" in report["redis"]["error"]
    assert "is not usable for breakers" in err


# -- every subcommand on an embedded Redis ----------------------------------------------------


def test_status_lists_breakers_with_their_own_window(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    tripped(embedded_url, prefix)
    code, out, _ = cli(capsys, "status", "--redis-url", embedded_url, "--prefix", prefix)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["BREAKER", "STATE", "FAILURES"]
    assert row.split()[:3] == ["github", "open", "2/2"]
    assert "in 30s" in row  # the stored window, not the default 120 s


def test_status_json_matches_the_breakers_own_status(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    breaker = tripped(embedded_url, prefix)
    code, out, _ = cli(
        capsys, "status", "github", "--json", "--redis-url", embedded_url, "--prefix", prefix
    )
    assert code == 0
    [shown] = json.loads(out)
    own = breaker.status().model_dump(mode="json")
    for field in ("time_until_reset", "since"):
        assert abs(shown.pop(field) - own.pop(field)) < 1.0
    assert shown == own


def test_status_of_an_unknown_breaker_fails(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    code, out, err = cli(
        capsys, "status", "nosuch", "--redis-url", embedded_url, "--prefix", prefix
    )
    assert code == 1
    assert out == ""
    assert f"no breaker 'nosuch' under prefix '{prefix}'" in err


def test_status_with_no_breakers_says_so(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    code, out, _ = cli(capsys, "status", "--redis-url", embedded_url, "--prefix", prefix)
    assert code == 0
    assert out.startswith(f"no breakers under prefix '{prefix}'")
    code, out, _ = cli(capsys, "status", "--json", "--redis-url", embedded_url, "--prefix", prefix)
    assert json.loads(out) == []


def test_open_close_reset_steer_the_fleet(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    client = distbreaker.connect(embedded_url, timeout=2.0)
    breaker = Breaker("github", client, BreakerConfig(key_prefix=prefix))

    code, out, _ = cli(capsys, "open", "github", *where)
    assert (code, breaker.status().state) == (0, "forced_open")
    assert "forced_open" in out
    code, out, _ = cli(capsys, "close", "github", *where)
    assert (code, breaker.status().state) == (0, "forced_closed")
    code, out, _ = cli(capsys, "open", "github", "--for", "60", *where)
    assert code == 1  # a timed open never overrides a manual state
    code, out, _ = cli(capsys, "reset", "github", *where)
    assert (code, breaker.status().state) == (0, "closed")
    code, out, _ = cli(capsys, "open", "github", "--for", "60", "--reason", "deploy", *where)
    assert code == 0
    assert breaker.status().state == "open"
    assert 59 < breaker.status().time_until_reset <= 60


def test_close_and_reset_of_an_unknown_breaker_fail(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    assert cli(capsys, "close", "ghost", *where)[0] == 1
    assert cli(capsys, "reset", "ghost", *where)[0] == 1
    client = distbreaker.connect(embedded_url, timeout=2.0)
    assert list(client.scan_iter(match=f"{prefix}:*")) == []  # nothing was created


def test_watch_times_out_with_exit_1_when_nothing_happens(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    code, _, err = cli(capsys, "watch", "--count", "1", "--timeout", "0.3", *where)
    assert code == 1
    assert "timed out after 0.3s with 0 of 1 transitions" in err


def test_diagnose_reports_redis_scripts_and_breakers(
    capsys: pytest.CaptureFixture[str], embedded_url: str, prefix: str
) -> None:
    tripped(embedded_url, prefix)
    where = ["--redis-url", embedded_url, "--prefix", prefix]
    code, out, _ = cli(capsys, "diagnose", "--json", "--github-url", NOWHERE, *where)
    assert code == 0
    report = json.loads(out)
    assert report["redis"]["reachable"] is True
    assert set(report["scripts"]) == {"admit", "record", "report", "control", "status"}
    assert [b["state"] for b in report["breakers"]] == ["open"]
    github = next(s for s in report["services"] if s["name"] == "github")
    assert github["ok"] is False


def test_diagnose_with_unreachable_redis_still_reports_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "diagnose", "--github-url", NOWHERE, "--redis-url", NOWHERE_REDIS)
    assert code == 1
    assert out.splitlines()[1].split()[:2] == ["redis", "unreachable"]
    assert err.count("\n") == 1


def test_embedded_redis_runs_the_lua_and_stops_cleanly() -> None:
    threads_before = threading.active_count()
    server = EmbeddedRedis().start()
    url = server.url
    breaker = tripped(url, "embedded")
    assert breaker.status().state == "open"
    breaker.redis.close()
    server.stop()
    assert threading.active_count() == threads_before
    with pytest.raises(redis.ConnectionError):
        distbreaker.connect(url).ping()
