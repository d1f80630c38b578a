"""Every ``distbreaker`` subcommand as a real subprocess against the real test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from distbreaker import Breaker, BreakerConfig, connect
from distbreaker.testing import RedisServer, free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

NOWHERE_REDIS = "redis://127.0.0.1:1/0"


def command(*args: str, url: str | None = None, prefix: str | None = None) -> list[str]:
    where = ([] if url is None else ["--redis-url", url]) + (
        [] if prefix is None else ["--prefix", prefix]
    )
    return [sys.executable, "-m", "distbreaker", *args, *where]


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DISTBREAKER_REDIS_URL", None)
    env["NO_COLOR"] = "1"
    return env


def distbreaker(
    *args: str, url: str | None = None, prefix: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args, url=url, prefix=prefix),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=quiet_env(),
        check=False,
    )


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))


def strict(**settings: object) -> BreakerConfig:
    return BreakerConfig(consistency="strict", **settings)  # type: ignore[arg-type]


def test_status_table_shows_every_breaker(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    github = breaker_factory("github", strict(failure_threshold=2, window=30))
    prefix = github.config.key_prefix
    docker = Breaker("docker-registry", github.redis, strict(key_prefix=prefix))
    fail(github, 2)
    fail(docker, 1)
    result = distbreaker("status", url=redis_url, prefix=prefix)
    assert result.returncode == 0, result.stderr
    header, docker_row, github_row, *note = result.stdout.splitlines()
    assert header.split()[:3] == ["BREAKER", "STATE", "FAILURES"]
    assert header.endswith("RESETS IN  LAST FAILURE  OPENS  WHY")
    assert github_row.split()[:3] == ["github", "open", "2/2"]
    assert "in 30s" in github_row
    # docker-registry has not changed state: "?" while record.lua stores no settings
    if docker_row.split()[2] == "1/?":
        assert note[0].startswith("?: settings not stored yet")
    else:
        assert docker_row.split()[:3] == ["docker-registry", "closed", "1/5"]
    assert result.stderr == ""


def test_status_json_equals_the_breakers_own_status(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict(failure_threshold=3, window=60))
    fail(breaker, 3)
    result = distbreaker(
        "status", "github", "--json", url=redis_url, prefix=breaker.config.key_prefix
    )
    assert result.returncode == 0, result.stderr
    [shown] = json.loads(result.stdout)
    own = breaker.status().model_dump(mode="json")
    assert abs(shown.pop("time_until_reset") - own.pop("time_until_reset")) < 2
    assert abs(shown.pop("since") - own.pop("since")) < 2
    assert shown == own
    assert shown["state"] == "open"
    assert shown["failure_count"] == 3


def test_status_errors_are_one_line(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    prefix = breaker_factory("x").config.key_prefix
    unknown = distbreaker("status", "nosuch", url=redis_url, prefix=prefix)
    unreachable = distbreaker("status", url=NOWHERE_REDIS)
    bad_url = distbreaker("status", url="notaurl://x")
    for result, code, text in (
        (unknown, 1, "no breaker 'nosuch'"),
        (unreachable, 1, "cannot reach Redis at redis://127.0.0.1:1/0"),
        (bad_url, 2, "bad Redis URL 'notaurl://x'"),
    ):
        assert result.returncode == code
        assert result.stdout == ""
        assert result.stderr.startswith(f"distbreaker: error: {text}")
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr


def test_open_for_expires_by_itself(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict())
    prefix = breaker.config.key_prefix
    result = distbreaker(
        "open", "github", "--for", "1", "--reason", "deploy", url=redis_url, prefix=prefix
    )
    assert result.returncode == 0, result.stderr
    assert "breaker 'github' is open for 1.0s" in result.stdout
    assert breaker.execute(lambda: "called", fallback=lambda: "refused") == "refused"
    wait_until(lambda: breaker.status().time_until_reset == 0, 10)  # Redis time, bounded
    shown = distbreaker("status", "github", url=redis_url, prefix=prefix)
    assert shown.stdout.splitlines()[1].split()[:2] == ["github", "open"]
    assert " due " in shown.stdout  # the wait is over: the next call probes
    assert breaker.execute(lambda: "called", fallback=lambda: "refused") == "called"
    assert breaker.status().state == "closed"


def test_open_close_reset_from_the_command_line(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict())
    prefix = breaker.config.key_prefix
    opened = distbreaker("open", "github", url=redis_url, prefix=prefix)
    assert opened.returncode == 0, opened.stderr
    assert breaker.status().state == "forced_open"
    assert f"until `distbreaker reset github --prefix {prefix}`" in opened.stdout
    closed = distbreaker("close", "github", url=redis_url, prefix=prefix)
    assert closed.returncode == 0, closed.stderr
    assert breaker.status().state == "forced_closed"
    refused = distbreaker("open", "github", "--for", "30", url=redis_url, prefix=prefix)
    assert refused.returncode == 1
    assert "does not override a manual state" in refused.stderr
    reset = distbreaker("reset", "github", url=redis_url, prefix=prefix)
    assert reset.returncode == 0, reset.stderr
    assert breaker.status().state == "closed"
    assert "failure window cleared" in reset.stdout


def test_close_and_reset_of_unknown_breakers_fail(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    prefix = breaker_factory("x").config.key_prefix
    for verb in ("close", "reset"):
        result = distbreaker(verb, "ghost", url=redis_url, prefix=prefix)
        assert result.returncode == 1
        assert "no breaker 'ghost'" in result.stderr
    for verb in ("open", "close", "reset"):
        result = distbreaker(verb, "github", url=NOWHERE_REDIS)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1


def test_watch_prints_a_transition_caused_by_another_process(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict(failure_threshold=2))
    watcher = subprocess.Popen(
        command(
            "watch",
            "--count",
            "1",
            "--timeout",
            "20",
            url=redis_url,
            prefix=breaker.config.key_prefix,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=quiet_env(),
    )
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith("watching ")  # subscribed
        fail(breaker, 2)  # this test process trips it
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    [line] = out.splitlines()
    assert "github  closed -> open  generation 1  (failure_threshold)" in line


def test_watch_json_and_name_filter(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict())
    other = Breaker("other", breaker.redis, breaker.config)
    watcher = subprocess.Popen(
        command(
            "watch",
            "github",
            "--json",
            "--count",
            "1",
            "--timeout",
            "20",
            url=redis_url,
            prefix=breaker.config.key_prefix,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=quiet_env(),
    )
    try:
        assert watcher.stderr is not None
        watcher.stderr.readline()
        other.force_open()  # filtered out
        breaker.force_open()
        out, _ = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        watcher.wait()
    event = json.loads(out)
    assert (event["name"], event["from"], event["to"]) == ("github", "closed", "forced_open")


def test_watch_without_redis_fails_at_once() -> None:
    result = distbreaker("watch", url=NOWHERE_REDIS, timeout=10)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr


def test_diagnose_reports_everything(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github", strict(failure_threshold=1))
    fail(breaker, 1)
    github_url = f"http://127.0.0.1:{free_port()}/"  # nothing listens: "unreachable", quickly
    result = distbreaker(
        "diagnose", "--github-url", github_url, url=redis_url, prefix=breaker.config.key_prefix
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines()[1:]]
    assert rows[:4] == [
        ["redis", "ok"],
        ["scripts", "ok"],
        ["breakers", "degraded"],
        ["github", "open"],
    ]
    assert ["github", "unreachable"] in rows  # the service check: nothing listens there
    assert rows[-1][0] == "docker"
    assert "Redis 7" in result.stdout


def test_diagnose_with_unreachable_redis_exits_1() -> None:
    result = distbreaker("diagnose", "--github-url", "http://127.0.0.1:1/", url=NOWHERE_REDIS)
    assert result.returncode == 1
    assert result.stdout.splitlines()[1].split()[:2] == ["redis", "unreachable"]
    assert result.stderr.startswith("distbreaker: error: Redis at redis://127.0.0.1:1/0")


@pytest.mark.slow
def test_demo_shows_the_breaker_trip_and_recover(redis_url: str) -> None:
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = distbreaker(
        "demo", "--workers", "2", "--duration", "8", url=redis_url, prefix=prefix, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    out = result.stdout
    assert "embedded" not in out
    for transition in ("closed -> open", "open -> half_open", "half_open -> closed"):
        assert f"breaker {transition}" in out, out
    assert "breaker 'demo-upstream' ends closed" in out
    assert "Traceback" not in result.stderr
    seconds = [line for line in out.splitlines() if "upstream hits" in line and "refused" in line]
    assert len(seconds) >= 5, out
    refused = [int(line.split("refused")[1].split()[0]) for line in seconds]
    assert max(refused) > 0  # per-second numbers: refusals while the breaker is open
    assert refused[-1] == 0  # and none once it closed again (not a running total)
    saved = next(line for line in out.splitlines() if line.startswith("saved by sharing: "))
    shared = int(saved.split("saved by sharing: ")[1].split()[0])
    independent = int(saved.split("would have let about ")[1].split()[0])
    assert 3 <= shared < independent, saved


def test_demo_with_a_given_url_that_does_not_answer_is_an_error() -> None:
    result = distbreaker("demo", "--workers", "1", "--duration", "6", url=NOWHERE_REDIS)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "distbreaker: error: no Redis answers at redis://127.0.0.1:1/0 (ConnectionError); "
        "the embedded Redis is only started when no URL is given"
    ]


@pytest.mark.slow
def test_demo_without_a_url_uses_an_embedded_redis_when_the_default_is_silent() -> None:
    default = connect("redis://localhost:6379/0", timeout=0.5)
    try:
        default.ping()
    except Exception:
        pass
    else:
        pytest.skip("a Redis answers at the default URL, so the demo would use it")
    finally:
        default.close()
    result = distbreaker("demo", "--workers", "2", "--duration", "8", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "starting an embedded one" in out
    assert "breaker closed -> open" in out
    assert "breaker half_open -> closed" in out
    assert "Traceback" not in result.stderr


def test_demo_refuses_a_bad_url_and_a_short_duration() -> None:
    assert distbreaker("demo", url="notaurl://x").returncode == 2
    assert distbreaker("demo", "--duration", "1", url=NOWHERE_REDIS).returncode == 2


def test_watch_survives_a_redis_restart() -> None:
    server = RedisServer().start()
    watcher = subprocess.Popen(
        command("watch", "--count", "1", "--timeout", "30", url=server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=quiet_env(),
    )
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith("watching ")
        server.stop()
        assert watcher.stderr.readline().startswith("lost Redis (")
        server.start()
        assert watcher.stderr.readline() == "watching again\n"
        Breaker("github", connect(server.url, timeout=2.0)).force_open()
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
        server.stop()
    assert watcher.returncode == 0
    assert "github  closed -> forced_open" in out
