"""Least privilege without a server: refusals are no outage, read-only status falls back where
``EVALSHA_RO`` is missing, TLS options are checked before any I/O, secrets never shown.

The same behaviour on a real Redis with real ACL users and TLS is in
``tests/integration/test_acl.py`` and ``tests/integration/test_tls.py``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from redis.exceptions import NoPermissionError

import distbreaker
from distbreaker import (
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    PermissionDeniedError,
    create_network_operation,
)
from distbreaker.classify import Verdict
from distbreaker.diagnostics import get_network_status, redact_url
from distbreaker.store import (
    _read_only_support,
    check_tls,
    is_denied,
    script_source,
    unflagged_source,
)
from tests.conftest import FakeClock

KEY_REFUSAL = "this user has no permissions to access one of the keys used as arguments"
COMMAND_REFUSAL = "NOPERM this user has no permissions to run the 'hset' command"


class Refusing:
    """A fakeredis client whose given scripts Redis "refuses" (NOPERM), counting attempts."""

    def __init__(self, refused: set[str]) -> None:
        self.inner = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.refused = refused
        self.attempts: dict[str, int] = {}

    def register_script(self, text: str) -> Callable[..., Any]:
        script = self.inner.register_script(text)
        name = next(n for n in ("admit", "record", "report", "control", "status") if _is(n, text))

        def run(*args: Any, **kwargs: Any) -> Any:
            self.attempts[name] = self.attempts.get(name, 0) + 1
            if name in self.refused:
                raise NoPermissionError(KEY_REFUSAL)
            return script(*args, **kwargs)

        return run

    def pubsub(self, **kwargs: Any) -> Any:
        return self.inner.pubsub(**kwargs)


def _is(name: str, text: str) -> bool:
    return unflagged_source(name) in (text, text.split("\n", 1)[-1]) or script_source(name) == text


def make(client: Any, clock: FakeClock, **settings: Any) -> Breaker:
    config = BreakerConfig(key_prefix="p", consistency="strict", failure_threshold=2, **settings)
    return Breaker("github", client, config, clock=clock)


def boom() -> None:
    raise ConnectionError("upstream down")


# -- what a refusal looks like ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "denied"),
    [
        (NoPermissionError(KEY_REFUSAL), True),
        (redis.ResponseError(COMMAND_REFUSAL), True),
        (
            redis.ResponseError(
                "The user executing the script can't run this command or subcommand script: "
                "5ddd, on @user_script:127."
            ),
            True,
        ),
        (redis.ResponseError("ERR unknown command 'evalsha_ro'"), False),
        (redis.ReadOnlyError("You can't write against a read only replica."), False),
        (redis.ConnectionError("Connection refused"), False),
        (PermissionError("a local file"), False),
    ],
)
def test_is_denied_knows_both_forms_redis_uses(error: BaseException, denied: bool) -> None:
    assert is_denied(error) is denied


def test_the_error_is_a_permission_error_that_pickles() -> None:
    error = PermissionDeniedError("github", "force_open", "write access to x", "NOPERM ...")
    assert isinstance(error, PermissionError)
    assert isinstance(error, distbreaker.DistbreakerError)
    again = pickle.loads(pickle.dumps(error))
    assert (again.name, again.operation, again.needed, str(again)) == (
        "github",
        "force_open",
        "write access to x",
        str(error),
    )


# -- refusals are no outage ---------------------------------------------------------------


def test_a_refused_control_raises_and_changes_nothing_here(clock: FakeClock) -> None:
    client = Refusing({"control"})
    breaker = make(client, clock)
    for control in (breaker.force_open, breaker.force_closed, breaker.reset):
        with pytest.raises(PermissionDeniedError, match=r"write access to p:\{github\}:control"):
            control()
    with pytest.raises(PermissionDeniedError):
        breaker.hold_open(60, actor="ops")
    assert breaker.store_ok
    assert breaker.known_refusal() is None  # the local shadow took no command either
    assert breaker.execute(lambda: "ok") == "ok"
    assert client.attempts["admit"] == 1  # shared mode: Redis was asked


def test_a_refused_admission_decides_that_call_locally_without_a_back_off(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = Refusing({"admit"})
    breaker = make(client, clock)
    with caplog.at_level(logging.ERROR, logger="distbreaker"):
        assert [breaker.execute(lambda: "ok") for _ in range(3)] == ["ok"] * 3
    assert client.attempts["admit"] == 3  # every call asked Redis again
    assert breaker.store_ok
    [line] = [r.getMessage() for r in caplog.records]
    assert "Redis refused admit for breaker 'github'" in line
    assert "decided by this process alone (fail_open)" in line
    for _ in range(2):  # the local shadow still protects this process
        with pytest.raises(ConnectionError):
            breaker.execute(boom)
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: "never")


@pytest.mark.parametrize(("mode", "outcome"), [("fail_closed", CircuitOpenError), ("raise", None)])
def test_a_refused_admission_follows_on_store_error(
    clock: FakeClock, mode: str, outcome: type[Exception] | None
) -> None:
    breaker = make(Refusing({"admit"}), clock, on_store_error=mode)
    with pytest.raises(outcome or PermissionDeniedError):
        breaker.execute(lambda: "never")
    assert breaker.store_ok


def test_a_refused_record_keeps_the_outcome_locally(clock: FakeClock) -> None:
    client = Refusing({"record"})
    breaker = make(client, clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.execute(boom)
    assert breaker.store_ok
    assert client.attempts["admit"] == 2
    assert breaker.status().state == "closed"  # Redis never got the failures


def test_a_refused_rate_limit_hold_never_breaks_the_call(clock: FakeClock) -> None:
    client = Refusing({"admit", "record"})  # a worker user without its own prefix's keys

    def limited(error: BaseException) -> Verdict:
        return Verdict(counts=False, retryable=False, rate_limited=True, retry_after=30)

    operation = create_network_operation(
        "github",
        client,
        config=BreakerConfig(key_prefix="p", consistency="strict"),
        clock=clock,
        sleep=lambda _: None,
        classifier=limited,
    )

    def answered_429() -> str:
        raise LookupError("429")

    assert operation.execute(answered_429, fallback=lambda: "fallback") == "fallback"
    breaker = operation.breaker
    assert breaker.store_ok
    with pytest.raises(CircuitOpenError):  # the local shadow that decides here holds
        breaker.execute(lambda: "never")
    clock.advance(31)
    assert breaker.execute(lambda: "after the pause") == "after the pause"
    with pytest.raises(PermissionDeniedError):  # asked for directly, it says so
        breaker.hold_open(30)


def test_a_refused_status_raises_and_a_refused_ping_ends_local_mode(clock: FakeClock) -> None:
    client = Refusing({"status"})
    breaker = make(client, clock)
    with pytest.raises(PermissionDeniedError, match=r"read access to p:\{github\}:"):
        breaker.status()
    assert breaker.store_ok
    protocol = breaker._protocol
    protocol.store_failed(redis.ConnectionError("gone"))  # as if Redis had been away
    # the ping (here, or the background upkeep's) runs status.lua: refused, but Redis answered
    breaker.upkeep()
    assert breaker.store_ok


# -- read-only status ---------------------------------------------------------------------


def test_status_lua_starts_with_the_no_writes_flag() -> None:
    assert script_source("status").startswith("#!lua flags=no-writes\n")
    assert not unflagged_source("status").startswith("#!")
    assert script_source("status").split("\n", 1)[1] == unflagged_source("status")
    assert unflagged_source("admit") == script_source("admit")


def test_without_evalsha_ro_status_falls_back_once_and_remembers(clock: FakeClock) -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    sent: list[str] = []
    execute = client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return execute(*args, **kwargs)

    client.execute_command = counting  # type: ignore[method-assign]
    first = make(client, clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            first.execute(boom)
    assert first.status().state == "open"
    assert make(client, clock).status().state == "open"  # another breaker, same client
    assert sent.count("EVALSHA_RO") == 1  # fakeredis: "unknown command", then never again
    assert _read_only_support[client] is False


# -- TLS options --------------------------------------------------------------------------


def test_tls_options_are_checked_before_any_io(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not even a certificate: it is read at connection time")
    with pytest.raises(ValueError, match="ssl_ca_certs needs a rediss:// URL"):
        check_tls("redis://h:1/0", {"ssl_ca_certs": str(ca)})
    with pytest.raises(ValueError, match="ssl_cert_reqs needs a rediss:// URL"):
        check_tls("unix:///tmp/redis.sock", {"ssl_cert_reqs": "none"})
    with pytest.raises(ValueError, match=r"ssl_certfile: .* is not a readable file"):
        check_tls("rediss://h:1/0", {"ssl_certfile": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="ssl_keyfile needs ssl_certfile"):
        check_tls("rediss://h:1/0", {"ssl_keyfile": str(ca)})
    check_tls("rediss://h:1/0", {"ssl_ca_certs": str(ca), "ssl_check_hostname": None})
    check_tls("redis://h:1/0", {})
    for connect in (distbreaker.connect, distbreaker.connect_async):
        with pytest.raises(ValueError):
            connect("redis://h:1/0", ssl_ca_certs=str(ca))


def test_cli_tls_option_errors_name_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distbreaker.cli import run

    code = run(["status", "--redis-url", "rediss://h:1/0", "--tls-cert", str(tmp_path / "x")])
    assert code == 2
    assert "--tls-cert: " in capsys.readouterr().err


# -- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://u:s3cret@h:bad/0", "redis://u:***@h:bad/0"),
        ("redis://:se/cr?s3cret@h:1/0", "redis://:***@h:1/0"),
        ("rediss://u:s3cret@[::1]:6380/0", "rediss://u:***@[::1]:6380/0"),
        ("redis://h:1/0?password=s3cret&db=1", "redis://h:1/0?password=***&db=1"),
        ("rediss://h/0?ssl_password=s3cret", "rediss://h/0?ssl_password=***"),
        ("unix://:s3cret@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redact_url_never_shows_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_no_password_in_reprs_logs_or_statuses(caplog: pytest.LogCaptureFixture) -> None:
    url = "redis://worker:s3cret@127.0.0.1:1/0"
    client = distbreaker.connect(url)
    breaker = Breaker("github", client, BreakerConfig(consistency="strict"))
    with caplog.at_level(logging.DEBUG, logger="distbreaker"):
        assert breaker.execute(lambda: "ok") == "ok"  # Redis unreachable: fail_open
        status = breaker.status()
    network = get_network_status(url)
    shown = [
        repr(breaker),
        repr(client),
        status.model_dump_json(),
        network.model_dump_json(),
        caplog.text,
    ]
    assert all("s3cret" not in text for text in shown)
    assert network.redis.url == "redis://worker:***@127.0.0.1:1/0"
