"""The demo's arithmetic: per-second numbers, and the estimate for independent breakers."""

from __future__ import annotations

import pytest

from distbreaker.cli._demo import (
    DemoError,
    demo_config,
    independent_failures,
    interval_counts,
    interval_text,
    mode_at,
    redis_for_demo,
)

TIMELINE = [(0.0, "ok"), (2.0, "error"), (6.0, "ok")]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, style: str | None = None) -> None:
        self.lines.append(text)

    def table(self, title: str, columns: object, rows: object) -> None:
        self.lines.append(title)


def test_the_mode_at_a_time_follows_the_switches() -> None:
    assert [mode_at(TIMELINE, t) for t in (0.0, 1.9, 2.0, 5.9, 6.0, 60.0)] == [
        "ok",
        "ok",
        "error",
        "error",
        "ok",
        "ok",
    ]
    assert mode_at([], 3.0) == "ok"


def test_each_independent_breaker_pays_the_threshold_and_its_own_failed_probes() -> None:
    # 10 calls a second per worker; threshold 3, reset 2 s: 3 failures open it near 2.3 s,
    # the probe near 4.3 s fails, the one near 6.3 s finds the upstream back
    config = demo_config("p")
    assert (config.failure_threshold, config.reset_timeout) == (3, 2.0)
    assert independent_failures([100], TIMELINE, 10.0, config) == 4
    assert independent_failures([100, 100, 100], TIMELINE, 10.0, config) == 12


def test_no_calls_or_no_outage_means_no_failures() -> None:
    config = demo_config("p")
    assert independent_failures([0, 0], TIMELINE, 10.0, config) == 0
    assert independent_failures([100], [(0.0, "ok")], 10.0, config) == 0
    assert independent_failures([100], TIMELINE, 0.0, config) == 0


def test_the_live_line_shows_one_intervals_numbers_with_refusals() -> None:
    before = {"calls": 100, "ok": 90, "failed": 3, "refused": 7}
    now = {"calls": 160, "ok": 90, "failed": 4, "refused": 66}
    counts = interval_counts(now, 95, before, 94)
    assert counts == {"calls": 60, "ok": 0, "failed": 1, "refused": 59, "hits": 1}
    assert interval_text(counts) == (
        "calls   60  ok    0  failed   1  refused   59  upstream hits    1"
    )


def test_a_given_url_that_does_not_answer_is_an_error_not_an_embedded_redis() -> None:
    printer = Lines()
    with (
        pytest.raises(DemoError, match=r"no Redis answers at redis://:\*\*\*@127\.0\.0\.1:1/0"),
        redis_for_demo("redis://:secret@127.0.0.1:1/0", printer),
    ):
        pass
    assert printer.lines == []
