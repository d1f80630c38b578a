"""The README's first snippet runs as is, and ``status --json`` behaves as the README says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import distbreaker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# No network in tests: urlopen fails as it does on a machine that reaches no api.github.com.
OFFLINE = """
import runpy, sys, urllib.error, urllib.request

def offline(url, *args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")

urllib.request.urlopen = offline
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def first_python_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_first_snippet_runs_as_is(redis_url: str, tmp_path: Path) -> None:
    snippet = tmp_path / "first.py"
    snippet.write_text(first_python_snippet())
    env = {**os.environ, "DISTBREAKER_REDIS_URL": redis_url}
    client = distbreaker.connect(redis_url, timeout=2.0)
    client.delete("distbreaker:{github}:state", "distbreaker:{github}:failures")
    try:
        result = subprocess.run(
            [sys.executable, "-c", OFFLINE, str(snippet)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        for key in client.scan_iter(match="distbreaker:{github}:*"):
            client.delete(key)
        client.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['cpython (cached)']",
        "failed: <urlopen error [Errno -2] Name or service not known>",
        "closed 2 True",
    ]


def distbreaker_json(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISTBREAKER_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "distbreaker", "status", *args, "--json", "--redis-url", url],
        capture_output=True,
        text=True,
        env={**env, "NO_COLOR": "1"},
        timeout=60,
    )


def test_status_json_without_breakers_is_an_empty_list(redis_url: str) -> None:
    result = distbreaker_json("--prefix", f"empty-{uuid.uuid4().hex[:8]}", url=redis_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_status_name_json_of_an_unknown_breaker_is_one_line_and_no_json(redis_url: str) -> None:
    prefix = f"empty-{uuid.uuid4().hex[:8]}"
    result = distbreaker_json("nope", "--prefix", prefix, url=redis_url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        f"distbreaker: error: no breaker 'nope' under prefix '{prefix}'"
    )
