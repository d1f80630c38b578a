"""Breakers, the command and the dashboard over ``rediss://`` on a real TLS ``redis-server``.

The servers listen on TLS only (``--port 0 --tls-port P``), with a throwaway CA made by
``cryptography``; one of them requires client certificates (``--tls-auth-clients yes``).
A wrong CA, plain text to the TLS port, TLS to a plain port and a silent peer all fail
fast with one line, bounded by the breaker's 0.25 s timeouts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

with warnings.catch_warnings():  # Starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient

import distbreaker
from distbreaker import AsyncBreaker, Breaker, BreakerConfig, CircuitOpenError
from distbreaker.cli import run
from distbreaker.dashboard.app import create_app
from distbreaker.dashboard.server import connect as dashboard_connect
from distbreaker.diagnostics import TlsFiles, get_network_status
from distbreaker.testing import free_port
from tests.integration.secure_redis import Certificates, PrivateRedis, make_certificates, wait_for

pytestmark = pytest.mark.integration

BOUND = 2.0  # seconds: any failure here must come much sooner than a hang would


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def tls_server(certs: Certificates, *extra: str) -> PrivateRedis:
    port = free_port()
    server = PrivateRedis(
        [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs.server_cert),
            "--tls-key-file",
            str(certs.server_key),
            "--tls-ca-cert-file",
            str(certs.ca_cert),
            *extra,
        ],
        port=port,
    )
    client: dict[str, Any] = {"ssl_ca_certs": str(certs.ca_cert)}
    if "yes" in extra:
        client |= {"ssl_certfile": str(certs.client_cert), "ssl_keyfile": str(certs.client_key)}
    return server.wait(lambda: distbreaker.connect(f"rediss://127.0.0.1:{port}/0", **client))


@pytest.fixture(scope="module")
def tls_url(certs: Certificates) -> Iterator[str]:
    """A TLS-only server that does not ask for client certificates."""
    server = tls_server(certs, "--tls-auth-clients", "no")
    yield f"rediss://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture(scope="module")
def mtls_url(certs: Certificates) -> Iterator[str]:
    """A TLS-only server that requires a client certificate signed by the CA."""
    server = tls_server(certs, "--tls-auth-clients", "yes")
    yield f"rediss://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"tls-{uuid.uuid4().hex[:8]}"


def boom() -> None:
    raise ConnectionError("upstream down")


def trip(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.execute(boom)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the library --------------------------------------------------------------------------


def test_breaker_admits_records_trips_and_reads_status_over_tls(
    tls_url: str, certs: Certificates, prefix: str
) -> None:
    client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert))
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, consistency="strict")
    breaker = Breaker("github", client, config)
    assert breaker.execute(lambda: "ok") == "ok"
    trip(breaker, 2)
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: "never")
    status = breaker.status()
    assert (status.state, status.store_ok, status.failure_count) == ("open", True, 2)
    assert [e.reason for e in breaker.history()] == ["failure_threshold"]


async def test_async_breaker_over_tls(tls_url: str, certs: Certificates, prefix: str) -> None:
    client = distbreaker.connect_async(tls_url, ssl_ca_certs=str(certs.ca_cert))
    try:
        config = BreakerConfig(key_prefix=prefix, failure_threshold=2, consistency="strict")
        breaker = AsyncBreaker("github", client, config)

        async def fails() -> None:
            raise ConnectionError("upstream down")

        async def works() -> str:
            return "ok"

        assert await breaker.execute(works) == "ok"
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.execute(fails)
        status = await breaker.status()
        assert (status.state, status.store_ok) == ("open", True)
        assert [e.reason for e in await breaker.history()] == ["failure_threshold"]
    finally:
        await client.aclose()


def test_a_cached_breakers_subscriber_gets_events_over_tls(
    tls_url: str, certs: Certificates, prefix: str
) -> None:
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, reset_timeout=60)
    one = Breaker("github", distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert)), config)
    other = Breaker("github", distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert)), config)
    assert other.execute(lambda: "ok") == "ok"  # subscribes this worker's process state
    subscriber = wait_for(lambda: _subscriber_of(other), BOUND, "the subscriber")
    assert subscriber.connected.wait(BOUND)
    trip(one, 2)
    # the other worker learns it from the event, over its own TLS subscription
    refusal = wait_for(other.known_refusal, BOUND, "the open event")
    assert refusal.state == "open"


async def test_an_async_cached_breakers_subscriber_gets_events_over_tls(
    tls_url: str, certs: Certificates, prefix: str
) -> None:
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, reset_timeout=60)
    sync = Breaker("github", distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert)), config)
    client = distbreaker.connect_async(tls_url, ssl_ca_certs=str(certs.ca_cert))
    try:
        other = AsyncBreaker("github", client, config)

        async def works() -> str:
            return "ok"

        assert await other.execute(works) == "ok"
        subscriber = _async_subscriber_of(other)
        await asyncio.wait_for(subscriber.connected.wait(), BOUND)
        await asyncio.to_thread(trip, sync, 2)
        deadline = time.monotonic() + BOUND
        while other.known_refusal() is None:
            assert time.monotonic() < deadline, "no open event over TLS"
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def _subscriber_of(breaker: Breaker) -> Any:
    from distbreaker.events import _sync_registry

    return next((s for (_, cid, _), s in _sync_registry.items() if cid == id(breaker.redis)), None)


def _async_subscriber_of(breaker: AsyncBreaker) -> Any:
    from distbreaker.events import _async_registry

    found = [s for key, s in _async_registry.items() if key[2] == id(breaker.redis)]
    assert found, "the async breaker did not subscribe"
    return found[-1]


def test_client_certificates_where_redis_requires_them(
    mtls_url: str, certs: Certificates, prefix: str
) -> None:
    without = distbreaker.connect(mtls_url, ssl_ca_certs=str(certs.ca_cert))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        without.ping()
    assert time.monotonic() - started < BOUND
    client = distbreaker.connect(
        mtls_url,
        ssl_ca_certs=str(certs.ca_cert),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    )
    breaker = Breaker("github", client, BreakerConfig(key_prefix=prefix, failure_threshold=1))
    trip(breaker, 1)
    assert breaker.status().state == "open"


# -- failing fast ---------------------------------------------------------------------------


def test_a_wrong_ca_fails_fast_with_one_clear_error(tls_url: str, certs: Certificates) -> None:
    client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.other_ca_cert))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        client.ping()
    assert time.monotonic() - started < BOUND


def test_a_breaker_with_a_wrong_ca_degrades_instead_of_hanging(
    tls_url: str, certs: Certificates, prefix: str
) -> None:
    client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.other_ca_cert))
    breaker = Breaker("github", client, BreakerConfig(key_prefix=prefix, consistency="strict"))
    started = time.monotonic()
    assert breaker.execute(lambda: "ok") == "ok"  # fail_open: the local shadow decides
    assert not breaker.store_ok
    assert time.monotonic() - started < BOUND


def test_plain_text_to_the_tls_port_fails_fast(tls_url: str) -> None:
    plain = tls_url.replace("rediss://", "redis://")
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        distbreaker.connect(plain).ping()
    assert time.monotonic() - started < BOUND


def test_tls_to_a_plain_port_fails_fast(certs: Certificates) -> None:
    port = free_port()
    server = PrivateRedis(["--port", str(port)], port=port)
    try:
        server.wait(lambda: distbreaker.connect(f"redis://127.0.0.1:{port}/0"))
        client = distbreaker.connect(
            f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(certs.ca_cert)
        )
        started = time.monotonic()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
        assert time.monotonic() - started < BOUND
    finally:
        server.stop()


def test_a_silent_peer_cannot_stall_the_tls_handshake(certs: Certificates) -> None:
    """Accepts TCP, never answers the ClientHello: the 0.25 s timeout ends the wait."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = distbreaker.connect(
            f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(certs.ca_cert)
        )
        started = time.monotonic()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            client.ping()
        assert time.monotonic() - started < BOUND  # 0.25 s timeouts; BOUND allows a loaded machine


def test_tls_options_with_a_plain_url_are_refused_before_any_io(certs: Certificates) -> None:
    with pytest.raises(ValueError, match="ssl_ca_certs needs a rediss:// URL"):
        distbreaker.connect("redis://127.0.0.1:1/0", ssl_ca_certs=str(certs.ca_cert))
    with pytest.raises(ValueError, match="not a readable file"):
        distbreaker.connect("rediss://127.0.0.1:1/0", ssl_ca_certs="/nonexistent/ca.crt")


# -- the command, diagnostics and the dashboard ------------------------------------------


def test_cli_status_and_diagnose_over_tls(
    tls_url: str, certs: Certificates, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert))
    trip(Breaker("github", client, BreakerConfig(key_prefix=prefix, failure_threshold=1)), 1)
    where = ["--redis-url", tls_url, "--prefix", prefix, "--tls-ca-cert", str(certs.ca_cert)]
    code, out, err = cli(capsys, "status", *where)
    assert code == 0, err
    assert "github" in out
    assert "open" in out
    code, out, err = cli(capsys, "diagnose", "--json", *where)
    assert code == 0, err
    assert '"reachable": true' in out
    assert f'"url": "{tls_url}"' in out


def test_cli_reads_the_ca_from_the_environment(
    tls_url: str,
    certs: Certificates,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTBREAKER_TLS_CA_CERT", str(certs.ca_cert))
    code, out, err = cli(capsys, "status", "--redis-url", tls_url, "--prefix", prefix)
    assert code == 0, err
    assert "no breakers under prefix" in out


def test_cli_client_certificate_options(
    mtls_url: str, certs: Certificates, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--redis-url", mtls_url, "--prefix", prefix, "--tls-ca-cert", str(certs.ca_cert)]
    code, _, err = cli(capsys, "status", *where)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    mine = ["--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
    code, _, err = cli(capsys, "open", "github", *where, *mine)
    assert code == 0, err
    code, out, err = cli(capsys, "status", "github", *where, *mine)
    assert code == 0, err
    assert "forced_open" in out


@pytest.mark.parametrize("wrong", ["ca", "plain"])
def test_cli_with_a_wrong_ca_or_plain_text_fails_fast_in_one_line(
    tls_url: str, certs: Certificates, wrong: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if wrong == "ca":
        args = ["--redis-url", tls_url, "--tls-ca-cert", str(certs.other_ca_cert)]
        expected = "certificate verify failed"
    else:
        args = ["--redis-url", tls_url.replace("rediss://", "redis://")]
        expected = "cannot reach Redis at redis://127.0.0.1"
    started = time.monotonic()
    code, out, err = cli(capsys, "status", *args)
    assert time.monotonic() - started < 2 * BOUND  # the tools' timeout is 2 s
    assert code == 1
    assert out == ""
    [line] = err.strip().splitlines()
    assert expected in line


def test_cli_tls_options_need_a_tls_url(
    certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys,
        "status",
        "--redis-url",
        "redis://127.0.0.1:1/0",
        "--tls-ca-cert",
        str(certs.ca_cert),
    )
    assert code == 2
    assert "--tls-ca-cert needs a rediss:// URL" in err
    code, _, err = cli(
        capsys, "status", "--redis-url", "rediss://127.0.0.1:1/0", "--tls-key", str(certs.ca_cert)
    )
    assert code == 2
    assert "--tls-key needs --tls-cert" in err


def test_cli_watch_over_tls(tls_url: str, certs: Certificates, prefix: str) -> None:
    env = {**os.environ, "NO_COLOR": "1", "DISTBREAKER_TLS_CA_CERT": str(certs.ca_cert)}
    env.pop("DISTBREAKER_REDIS_URL", None)
    args = [sys.executable, "-m", "distbreaker", "watch", "--count", "1", "--timeout", "20"]
    watcher = subprocess.Popen(
        [*args, "--redis-url", tls_url, "--prefix", prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith("watching ")
        client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert))
        trip(Breaker("github", client, BreakerConfig(key_prefix=prefix, failure_threshold=1)), 1)
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    assert "github  closed -> open" in out


def test_the_dashboard_command_takes_the_tls_options(
    tls_url: str, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong CA stops the dashboard before it listens, in one line."""
    port = str(free_port())
    where = ["--redis-url", tls_url, "--port", port]
    code, _, err = cli(capsys, "dashboard", *where, "--tls-ca-cert", str(certs.other_ca_cert))
    assert code == 1
    [line] = err.strip().splitlines()
    assert f"cannot reach Redis at {tls_url}" in line
    assert "certificate verify failed" in line
    code, _, err = cli(
        capsys, "dashboard", "--redis-url", "redis://127.0.0.1:1/0", "--tls-cert", "x"
    )
    assert code == 2
    assert "--tls-cert needs a rediss:// URL" in err


def test_network_status_of_a_tls_client_names_its_url(
    tls_url: str, certs: Certificates, prefix: str
) -> None:
    client = distbreaker.connect(tls_url, ssl_ca_certs=str(certs.ca_cert))
    status = get_network_status(client, prefix)
    assert status.redis.reachable
    assert status.redis.url == tls_url


def test_dashboard_view_over_tls(tls_url: str, certs: Certificates, prefix: str) -> None:
    client = dashboard_connect(tls_url, False, TlsFiles(ca_cert=str(certs.ca_cert)))
    trip(Breaker("github", client, BreakerConfig(key_prefix=prefix, failure_threshold=1)), 1)
    with TestClient(create_app(client, prefix, None), base_url="http://127.0.0.1") as page:
        listing = page.get("/api/breakers")
    assert listing.status_code == 200
    assert [(b["name"], b["state"]) for b in listing.json()] == [("github", "open")]


# -- a Redis Cluster over TLS -------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(certs: Certificates) -> Iterator[str]:
    cli_binary = shutil.which("redis-cli")
    if cli_binary is None:
        pytest.skip("redis-cli is needed for the cluster")
    servers: list[PrivateRedis] = []
    tls: dict[str, Any] = {"ssl_ca_certs": str(certs.ca_cert)}
    try:
        for _ in range(3):
            port, bus = free_port(), free_port()
            folder = Path(certs.ca_cert).parent / f"node-{port}"
            folder.mkdir()
            server = PrivateRedis(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    str(port),
                    "--tls-cert-file",
                    str(certs.server_cert),
                    "--tls-key-file",
                    str(certs.server_key),
                    "--tls-ca-cert-file",
                    str(certs.ca_cert),
                    "--tls-auth-clients",
                    "no",
                    "--tls-cluster",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    str(folder / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    str(folder),
                ],
                port=port,
            )
            servers.append(server)
            url = f"rediss://127.0.0.1:{port}/0"
            server.wait(lambda url=url: distbreaker.connect(url, **tls))  # type: ignore[misc]
        create = [cli_binary, "--tls", "--cacert", str(certs.ca_cert), "--cluster", "create"]
        create += [f"127.0.0.1:{s.port}" for s in servers] + ["--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=30)
        url = f"rediss://127.0.0.1:{servers[0].port}/0"

        def ready() -> bool:
            for server in servers:
                node = distbreaker.connect(f"rediss://127.0.0.1:{server.port}/0", **tls)
                try:
                    if node.cluster("INFO").get("cluster_state") != "ok":
                        return False
                finally:
                    node.close()
            return True

        wait_for(ready, 30, "cluster_state:ok")
        yield url
    finally:
        for server in servers:
            server.stop()


def test_breakers_on_a_tls_cluster(tls_cluster: str, certs: Certificates, prefix: str) -> None:
    client = distbreaker.connect_cluster(tls_cluster, ssl_ca_certs=str(certs.ca_cert), timeout=1.0)
    try:
        names = [f"upstream-{i}" for i in range(6)]  # spread over the masters
        config = BreakerConfig(key_prefix=prefix, failure_threshold=1, consistency="strict")
        breakers = [Breaker(name, client, config) for name in names]
        for breaker in breakers:
            trip(breaker, 1)
        assert {b.status().state for b in breakers} == {"open"}
        assert all(b.status().store_ok for b in breakers)
    finally:
        client.close()
