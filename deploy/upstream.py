"""The compose stack's flaky upstream: ``FlakyUpstream`` on 0.0.0.0, cycling through modes.

``UPSTREAM_CYCLE`` is a list of ``mode:seconds`` (default ``ok:10,error:20``), repeated;
a single mode with no seconds stays forever. ``UPSTREAM_PORT`` defaults to 8080.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from types import FrameType

from distbreaker.testing import FlakyUpstream

stopping = threading.Event()


def stop(signum: int, frame: FrameType | None) -> None:
    stopping.set()


def parse_cycle(text: str) -> list[tuple[str, float]]:
    steps = []
    for part in text.split(","):
        mode, _, seconds = part.strip().partition(":")
        steps.append((mode, float(seconds) if seconds else float("inf")))
    return steps


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    cycle = parse_cycle(os.environ.get("UPSTREAM_CYCLE", "ok:10,error:20"))
    port = int(os.environ.get("UPSTREAM_PORT", "8080"))
    with FlakyUpstream(cycle[0][0], host="0.0.0.0", port=port) as upstream:  # noqa: S104
        for mode, seconds in itertools.cycle(cycle):
            upstream.mode = mode
            print(f"upstream on :{port}: mode={mode} (requests so far: {upstream.requests})")
            if stopping.wait(None if seconds == float("inf") else seconds):
                break


if __name__ == "__main__":
    main()
