"""docker-compose.yml: its config parses (and images are overridable), and where an engine
answers, the stack comes up with locally built images and its worker containers trip one
shared breaker, as Redis shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from distbreaker.store import breaker_keys
from distbreaker.testing import free_port
from distbreaker.testing.containers import docker_unavailable
from distbreaker.testing.plugin import skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT / "docker-compose.yml"


def compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) when it works, else ``docker-compose`` (v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        skip_or_fail("neither 'docker compose' nor 'docker-compose' is installed")
    return command


def run_compose(
    compose: list[str], project: str, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [*compose, "-f", str(COMPOSE_FILE), "-p", project, *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTBREAKER_")}
    env.update(overrides)
    return env


def parse_config(text: str) -> dict[str, Any]:
    """``compose config`` prints the resolved file as YAML (v1 and v2 alike)."""
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_compose_config_is_valid_and_images_are_overridable(compose: list[str]) -> None:
    env = clean_env(
        DISTBREAKER_REDIS_IMAGE="redis:7-alpine",
        DISTBREAKER_PYTHON_IMAGE="example.org/team/worker:1.2",
        DISTBREAKER_WORKERS="4",
    )
    result = run_compose(compose, "distbreaker-config", env, "config")
    assert result.returncode == 0, result.stderr
    services = parse_config(result.stdout)["services"]
    assert isinstance(services, dict)
    assert set(services) == {"redis", "upstream", "worker"}
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["worker"]["image"] == "example.org/team/worker:1.2"
    assert services["upstream"]["image"] == "example.org/team/worker:1.2"
    assert int(services["worker"]["deploy"]["replicas"]) == 4
    assert services["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_defaults_name_the_locally_built_images(compose: list[str]) -> None:
    result = run_compose(compose, "distbreaker-config", clean_env(), "config")
    assert result.returncode == 0, result.stderr
    services = parse_config(result.stdout)["services"]
    assert isinstance(services, dict)
    assert services["redis"]["image"] == "distbreaker/redis:local"
    assert services["worker"]["image"] == "distbreaker/python:local"
    assert int(services["worker"]["deploy"]["replicas"]) >= 2


@pytest.fixture
def stack(compose: list[str]) -> Iterator[tuple[str, dict[str, str], int]]:
    """The stack up with freshly built local images; always brought down afterwards."""
    reason = docker_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    build = subprocess.run(
        [sys.executable, str(PROJECT / "deploy" / "build_images.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    port = free_port()
    project = f"distbreaker-test-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        DISTBREAKER_REDIS_PORT=str(port),
        # healthy until every worker runs, then down for good: the failures come from all
        DISTBREAKER_UPSTREAM_CYCLE="ok:6,error",
        DISTBREAKER_RESET_TIMEOUT="300",  # stays open: the evidence stays in Redis
        DISTBREAKER_CALL_INTERVAL="0.2",
        DISTBREAKER_WORKERS="3",
    )
    up = run_compose(compose, project, env, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr
        yield project, env, port
    finally:
        down = run_compose(compose, project, env, "down", "-v", "-t", "2")
        assert down.returncode == 0, down.stderr


def worker_hostnames(compose: list[str], project: str, env: dict[str, str]) -> set[str]:
    """Container hostnames default to the first 12 hex digits of the container id."""
    listed = run_compose(compose, project, env, "ps", "-q", "worker")
    return {line.strip()[:12] for line in listed.stdout.splitlines() if line.strip()}


@pytest.mark.slow
def test_worker_containers_trip_one_shared_breaker(
    compose: list[str], stack: tuple[str, dict[str, str], int]
) -> None:
    project, env, port = stack
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    keys = breaker_keys("compose", "upstream")
    state_key, failures_key = keys.state, keys.failures
    deadline = time.monotonic() + 60
    state: dict[Any, Any] = {}
    while time.monotonic() < deadline:
        try:
            state = client.hgetall(state_key)
        except redis.ConnectionError:
            state = {}
        if state.get(b"state") == b"open":
            break
        time.sleep(0.5)
    logs = run_compose(compose, project, env, "logs", "--no-color", "--tail", "5").stdout
    assert state.get(b"state") == b"open", logs
    assert int(state[b"opens_total"]) == 1, logs
    assert json.loads(state[b"config"])["failure_threshold"] == 6

    # failure members are "<hostname>:<pid>:<token>:<n>": who recorded the failures
    listed: list[bytes] = client.zrange(failures_key, 0, -1)  # type: ignore[assignment]
    members = [member.decode() for member in listed]
    hosts = {member.split(":")[0] for member in members}
    workers = worker_hostnames(compose, project, env)
    assert len(workers) == 3, workers
    assert hosts <= workers, (hosts, workers)
    assert len(hosts) >= 2, (members, logs)
    assert "refused (open" in logs
    client.close()
