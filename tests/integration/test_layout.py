"""The Redis layout after a trip is exactly what the README's redis-cli section shows.

Run ``python -m tests.integration.test_layout URL`` to print the transcript for the README.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.store import breaker_keys
from tests.conftest import wait_for_subscribers

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
DB = 9  # a database of its own, so the default "distbreaker" prefix collides with nothing
NOW = 1_790_000_000.0
KEYS = tuple(breaker_keys("distbreaker", "github"))


def _cli(url: str) -> list[str]:
    parsed = urlparse(url)
    return [
        "redis-cli",
        "-h",
        parsed.hostname or "127.0.0.1",
        "-p",
        str(parsed.port or 6379),
        "-n",
        str(DB),
        "--no-raw",
    ]


def transcript(url: str) -> str:
    """Trip the breaker ``github`` with a fixed clock and show what redis-cli prints."""
    cli = _cli(url)
    client = distbreaker.connect(url.rsplit("/", 1)[0] + f"/{DB}", timeout=2.0)
    client.delete(*KEYS)
    subscriber = subprocess.Popen(
        [*cli, "subscribe", "distbreaker:events"], stdout=subprocess.PIPE, text=True
    )
    wait_for_subscribers(client, "distbreaker:events", 1)  # redis-cli listens before the trip
    config = BreakerConfig(reporter_id="web-1")  # a stable reporter for the README
    breaker = Breaker("github", client, config, clock=lambda: NOW)
    breaker._protocol.local.worker_id = "web-1:4242:9f3a"  # stable members for the README

    def timeout() -> None:
        raise TimeoutError("GitHub did not answer")

    for _ in range(5):
        breaker.execute(timeout, fallback=lambda: None)
    events = read_until_message(subscriber)

    def run(*args: str) -> str:
        shown = " ".join(f"'{a}'" if "{" in a else a for a in args)
        output = subprocess.run([*cli, *args], capture_output=True, text=True, check=True).stdout
        if args[0] == "--scan":
            output = "".join(sorted(output.splitlines(keepends=True)))
        return f"$ redis-cli {shown}\n{output}"

    parts = [
        run("--scan", "--pattern", "distbreaker:{github}:*"),
        run("hgetall", "distbreaker:{github}:state"),
        run("zrange", "distbreaker:{github}:failures", "0", "-1", "withscores"),
        run("hgetall", "distbreaker:{github}:calls"),
        run("zrange", "distbreaker:{github}:reporters", "0", "-1", "withscores"),
        run("ttl", "distbreaker:{github}:state"),
        "$ redis-cli subscribe distbreaker:events\n" + events,
    ]
    client.delete(*KEYS)
    client.close()
    return "".join(parts)


def read_until_message(subscriber: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """``redis-cli subscribe``'s output up to the first message's payload, then stop it."""
    stdout = subscriber.stdout
    assert stdout is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    seen: list[str] = []
    while not seen or '"{' not in seen[-1]:
        seen.append(lines.get(timeout=timeout))  # queue.Empty: no event arrived
    subscriber.terminate()
    subscriber.wait(timeout=5)
    return "".join(seen)


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- redis-cli:begin -->\n```\n(.*?)```\n<!-- redis-cli:end -->", text, re.S
    )
    assert found, "README lacks the redis-cli transcript block"
    return found.group(1)


def normalized(text: str) -> list[object]:
    """The transcript with what Redis does not order made comparable.

    A hash stored as a hashtable lists its fields in a per-server random order, and the
    event's JSON keys follow Lua's table order: compare those as sets and objects.
    """
    sections: list[object] = []
    for section in re.split(r"(?m)^(?=\$ redis-cli )", text):
        if section.startswith("$ redis-cli hgetall"):
            values = re.findall(r'^\s*\d+\) "(.*)"$', section, re.M)
            sections.append(sorted(zip(values[::2], values[1::2], strict=True)))
        elif section.startswith("$ redis-cli subscribe"):
            payloads = re.findall(r'^3\) "(\{.*\})"$', section, re.M)
            sections.append([json.loads(p.encode().decode("unicode_escape")) for p in payloads])
        else:
            sections.append(section)
    return sections


def test_layout_matches_readme(redis_url: str) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    actual = transcript(redis_url)
    assert normalized(actual) == normalized(readme_block())
    # and the facts it shows, independently of the README
    assert "(integer) 420" in actual  # 3 x max(window, reset, probe) + time left open
    assert re.search(r'"state"\n\s*\d+\) "open"', actual)


if __name__ == "__main__":
    sys.stdout.write(transcript(sys.argv[1]))
