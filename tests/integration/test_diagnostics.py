"""get_network_status and the diagnose checks against the real test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.diagnostics import (
    UNDECODABLE,
    BreakerProblem,
    check_github,
    get_network_status,
    load_scripts,
)
from distbreaker.errors import StoreUnavailableError
from distbreaker.fleet import Fleet
from distbreaker.status import BreakerStatus
from distbreaker.store import SCRIPT_NAMES, MalformedReply
from distbreaker.testing import FlakyUpstream

pytestmark = pytest.mark.integration


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))


def test_network_status_by_url_lists_every_breaker_with_its_own_window(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    short = breaker_factory("short", BreakerConfig(failure_threshold=2, window=5))
    prefix = short.config.key_prefix
    long = Breaker("long", short.redis, BreakerConfig(key_prefix=prefix, failure_threshold=10))
    fail(short, 2)
    fail(long, 3)
    status = get_network_status(redis_url, prefix=prefix)
    assert status.redis.reachable
    assert status.redis.version is not None
    assert status.redis.version.split(".")[0].isdigit()
    assert status.redis.latency_ms is not None
    assert status.redis.latency_ms < 100
    assert status.summary() == {
        "long": {"state": "closed", "failure_count": 3, "healthy": True},
        "short": {"state": "open", "failure_count": 2, "healthy": False},
    }
    shown = status.breakers["short"]
    assert shown == short.status().model_copy(
        update={"time_until_reset": shown.time_until_reset, "since": shown.since}
    )


def test_network_status_from_a_client(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github")
    breaker.force_open()
    client = distbreaker.connect(redis_url)
    status = get_network_status(client, prefix=breaker.config.key_prefix)
    assert status.redis.url == redis_url
    assert status.summary() == {
        "github": {"state": "forced_open", "failure_count": 0, "healthy": False}
    }


def test_every_script_loads(redis_url: str) -> None:
    shas = load_scripts(distbreaker.connect(redis_url, timeout=2.0))
    assert set(shas) == set(SCRIPT_NAMES)
    assert all(len(sha) == 40 for sha in shas.values())


def test_github_check_reports_an_answer_and_an_outage() -> None:
    with FlakyUpstream("ok") as upstream:
        answered = check_github(upstream.url)
        upstream.mode = "error"
        failing = check_github(upstream.url)
        upstream.mode = "reset"
        reset = check_github(upstream.url)
    assert answered.ok
    assert "answered HTTP 200" in answered.detail
    assert not failing.ok
    assert "HTTP 503" in failing.detail
    assert not reset.ok
    assert "ReadError" in reset.detail


# -- one bad key never hides the fleet (issue 12, defect 5) ---------------------------


@pytest.fixture
def bad_keys(breaker_factory: Callable[..., Breaker]) -> Iterator[tuple[Breaker, list[bytes]]]:
    """A healthy breaker ``good`` and, under its prefix, a key name that is not UTF-8, a
    state key holding a string, a name no breaker may have, and an unreadable hash."""
    good = breaker_factory("good", BreakerConfig(failure_threshold=2))
    prefix = good.config.key_prefix
    fail(good, 1)
    client = good.redis
    raw = [
        f"{prefix}:{{".encode() + b"\xff\xfe" + b"}:state",
        f"{prefix}:{{stringy}}:state".encode(),
        f"{prefix}:{{has space}}:state".encode(),
        f"{prefix}:{{broken}}:state".encode(),
    ]
    client.hset(raw[0], "state", "closed")
    client.set(raw[1], "not a hash")
    client.hset(raw[2], "state", "closed")
    client.hset(raw[3], mapping={"state": "closed", "generation": "xyz"})
    yield good, raw
    client.delete(*raw)


def problems_by_key(problems: list[BreakerProblem]) -> dict[str, str]:
    return {p.key: p.problem for p in problems}


def test_network_status_reports_each_bad_key_and_lists_every_breaker(
    bad_keys: tuple[Breaker, list[bytes]], redis_url: str
) -> None:
    """Before: the key that is not UTF-8 made get_network_status raise, the string raised
    WRONGTYPE, and the unreadable breakers were silently left out."""
    good, _ = bad_keys
    prefix = good.config.key_prefix
    status = get_network_status(redis_url, prefix=prefix)
    assert status.redis.reachable
    assert sorted(status.breakers) == ["broken", "good", "stringy"]
    assert status.breakers["good"].failure_count == 1
    assert status.breakers["stringy"].malformed == "state key"
    assert status.breakers["broken"].malformed == "generation"
    found = problems_by_key(status.problems)
    assert found[f"{prefix}:{{\\xff\\xfe}}:state"] == "key name is not valid UTF-8"
    assert found[f"{prefix}:{{has space}}:state"].startswith("not a breaker name")
    assert found[f"{prefix}:{{stringy}}:state"].startswith("unreadable: state key")
    assert f"distbreaker reset broken --prefix {prefix}" in found[f"{prefix}:{{broken}}:state"]
    assert len(found) == 4


def test_network_status_with_a_decoding_client_says_why_it_cannot_list(
    bad_keys: tuple[Breaker, list[bytes]], redis_url: str
) -> None:
    good, _ = bad_keys
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    status = get_network_status(decoding, prefix=good.config.key_prefix)
    assert status.redis.reachable
    assert [p.problem for p in status.problems] == [UNDECODABLE.problem]
    decoding.close()


def cli(*args: str, url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DISTBREAKER_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "distbreaker", *args, "--redis-url", url, "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_status_and_diagnose_commands_show_bad_keys_as_rows(
    bad_keys: tuple[Breaker, list[bytes]], redis_url: str
) -> None:
    good, _ = bad_keys
    prefix = good.config.key_prefix
    table = cli("status", url=redis_url, prefix=prefix)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["broken", "good", "stringy"]
    problems = [line for line in lines if line.startswith("problem: ")]
    assert len(problems) == 4
    assert f"problem: {prefix}:{{\\xff\\xfe}}:state: key name is not valid UTF-8" in problems

    listed = cli("status", "--json", url=redis_url, prefix=prefix)
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["broken", "good", "stringy"]
    assert listed.stderr.count("distbreaker: problem: ") == 4

    one = cli("status", "stringy", url=redis_url, prefix=prefix)
    assert one.returncode == 0, one.stderr
    assert "problem: " in one.stdout
    assert "unreadable: state key" in one.stdout

    report = cli(
        "diagnose", "--json", "--github-url", "http://127.0.0.1:1", url=redis_url, prefix=prefix
    )
    assert report.returncode == 0, report.stderr
    diagnosis = json.loads(report.stdout)
    assert len(diagnosis["breakers"]) == 3
    assert len(diagnosis["problems"]) == 4
    shown = cli("diagnose", "--github-url", "http://127.0.0.1:1", url=redis_url, prefix=prefix)
    assert "3 under prefix" in shown.stdout
    assert "4 with problems" in shown.stdout
    assert "\\xff\\xfe" in shown.stdout


def test_the_dashboard_listing_carries_the_problems(
    bad_keys: tuple[Breaker, list[bytes]],
) -> None:
    good, _ = bad_keys
    listing = Fleet(good.redis, good.config.key_prefix).read()
    assert listing.store_ok
    assert listing.error is None
    assert [row.status.name for row in listing.rows] == ["broken", "good", "stringy"]
    assert len(listing.problems) == 4


def test_a_breaker_whose_status_fails_alone_is_a_problem_not_the_end_of_the_listing(
    bad_keys: tuple[Breaker, list[bytes]], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply only a broken server sends (``MalformedReply``) for one breaker; a Redis that
    stops answering still fails the whole listing."""
    good, _ = bad_keys
    prefix = good.config.key_prefix
    real_status = Breaker.status

    def status(self: Breaker) -> BreakerStatus:
        if self.name == "broken":
            raise StoreUnavailableError(self.name, "bad reply") from MalformedReply("odd reply")
        return real_status(self)

    monkeypatch.setattr(Breaker, "status", status)
    listing = get_network_status(redis_url, prefix=prefix)
    assert sorted(listing.breakers) == ["good", "stringy"]
    assert problems_by_key(listing.problems)[f"{prefix}:{{broken}}:state"] == (
        "status failed: odd reply"
    )
    fleet = Fleet(good.redis, prefix).read()
    assert [row.status.name for row in fleet.rows] == ["good", "stringy"]
    assert any(p.name == "broken" for p in fleet.problems)

    def unreachable(self: Breaker) -> BreakerStatus:
        raise StoreUnavailableError(self.name, "gone") from ConnectionError("refused")

    monkeypatch.setattr(Breaker, "status", unreachable)
    assert not get_network_status(redis_url, prefix=prefix).redis.reachable
