"""The pytest plugin as a user's suite meets it: a pytest run in a subprocess per case.

A test must not pass without the Redis it is meant to exercise: a dead
``DISTBREAKER_TEST_REDIS_URL`` is one clear error naming the URL, breakers from
``breaker_factory`` raise when Redis goes away (unless the test asks for the fallback), and
the header says which Redis the session uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from distbreaker import Breaker, BreakerConfig
from distbreaker.testing import RedisServer, find_redis_server, free_port

pytestmark = pytest.mark.integration

# The README's example ("Testing your own code with the distbreaker fixtures"), verbatim.
README_EXAMPLE = """
import urllib.request

import pytest

from distbreaker import BreakerConfig, CircuitOpenError


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read()


def test_breaker_opens_when_the_upstream_fails(breaker_factory, flaky_upstream):
    breaker = breaker_factory("payments", BreakerConfig(failure_threshold=3))
    assert b'"ok": true' in breaker.execute(lambda: fetch(flaky_upstream.url))

    flaky_upstream.mode = "error"            # 503 from now on
    for _ in range(3):
        with pytest.raises(OSError):         # urllib's HTTPError, counted as a failure
            breaker.execute(lambda: fetch(flaky_upstream.url))

    with pytest.raises(CircuitOpenError):    # refused without calling the upstream
        breaker.execute(lambda: fetch(flaky_upstream.url))
    assert flaky_upstream.requests == 4
    assert breaker.status().state == "open"
"""

REDIS_GOES_AWAY = """
import os, signal, time

import pytest
import distbreaker
from distbreaker import BreakerConfig, StoreUnavailableError


def down():
    raise ConnectionError("upstream down")


def test_redis_goes_away_mid_test(breaker_factory, redis_url):
    strict = breaker_factory("strict", BreakerConfig(failure_threshold=3))
    lenient = breaker_factory("lenient", BreakerConfig(on_store_error="fail_open"))
    assert strict.execute(lambda: "ok") == "ok"
    os.kill(int(os.environ["REDIS_PID"]), signal.SIGKILL)
    probe = distbreaker.connect(redis_url, timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            probe.ping()
        except Exception:
            break
        time.sleep(0.02)
    with pytest.raises(StoreUnavailableError):
        strict.status()
    for _ in range(3):
        with pytest.raises(StoreUnavailableError):
            strict.execute(down)
    for _ in range(3):
        with pytest.raises(ConnectionError):  # the local shadow decides: the test asked for it
            lenient.execute(down)
    assert lenient.store_ok is False
    assert lenient.status().store_ok is False
"""


def run_pytest(
    directory: Path, test_file: str, url: str, **env: str
) -> subprocess.CompletedProcess[str]:
    (directory / "pytest.ini").write_text("[pytest]\n")
    (directory / "test_user.py").write_text(test_file)
    environment = {**os.environ, "DISTBREAKER_TEST_REDIS_URL": url, **env}
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_user.py"],
        capture_output=True,
        text=True,
        cwd=directory,
        env=environment,
        timeout=120,
    )


def test_a_dead_redis_url_is_one_clear_error_and_no_test_passes(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = run_pytest(tmp_path, README_EXAMPLE, dead)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"distbreaker: redis_url = {dead} (from $DISTBREAKER_TEST_REDIS_URL)" in output
    assert re.search(r"=+ 1 error in [\d.]+s =+", output), output
    assert "passed" not in output
    lines = [line for line in output.splitlines() if "does not answer" in line]
    assert lines, output
    assert lines[0].startswith(
        f"distbreaker: {dead} (from $DISTBREAKER_TEST_REDIS_URL) does not answer: ConnectionError"
    )
    assert "During handling" not in output
    assert "Traceback" not in output
    assert len(output.splitlines()) < 30, output


def test_a_live_redis_url_runs_the_readme_example_and_the_header_names_it(
    tmp_path: Path, redis_url: str
) -> None:
    result = run_pytest(tmp_path, README_EXAMPLE, redis_url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"distbreaker: redis_url = {redis_url} (from $DISTBREAKER_TEST_REDIS_URL)" in output
    assert re.search(r"=+ 1 passed in [\d.]+s =+", output), output


def test_a_password_in_the_url_never_reaches_the_output(tmp_path: Path) -> None:
    dead = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"
    result = run_pytest(tmp_path, README_EXAMPLE, dead)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "s3cret-pass" not in output
    assert "redis://user:***@127.0.0.1:" in output


def test_factory_breakers_raise_when_redis_goes_away_unless_the_test_asks(
    tmp_path: Path,
) -> None:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary).start()
    try:
        assert server.process is not None
        result = run_pytest(
            tmp_path, REDIS_GOES_AWAY, server.url, REDIS_PID=str(server.process.pid)
        )
    finally:
        server.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"=+ 1 passed, 1 warning in [\d.]+s =+", output), output
    assert "could not delete the test's breaker keys" in output
    assert "Traceback" not in output


def test_factory_breakers_raise_on_store_errors_by_default(
    breaker_factory: Callable[..., Breaker],
) -> None:
    assert breaker_factory().config.on_store_error == "raise"
    assert breaker_factory(config=BreakerConfig(failure_threshold=2)).config.on_store_error == (
        "raise"
    )


def test_factory_breakers_keep_the_store_error_policy_a_test_sets(
    breaker_factory: Callable[..., Breaker],
) -> None:
    explicit = BreakerConfig(on_store_error="fail_open", failure_threshold=2)
    built = breaker_factory("x", explicit)
    assert built.config.on_store_error == "fail_open"
    assert built.config.failure_threshold == 2
    assert breaker_factory(on_store_error="fail_closed").config.on_store_error == "fail_closed"
    assert built.config.key_prefix != explicit.key_prefix
