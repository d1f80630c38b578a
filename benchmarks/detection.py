"""Detection: from the upstream starting to fail to the whole fleet refusing, per rule.

``processes`` workers call at ``rate`` calls/s each through one breaker. After a healthy
warm-up (which fills the window with successes, as production traffic would), the shared
upstream starts failing a fraction ``ratio`` of calls; each worker notes its first refusal.
The fleet's detection time is the last worker's. Count rule (5 failures) and rate rule
(50 %, at least 50 calls) side by side, at ratios 1.0 and 0.7, in one run.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import distbreaker
from benchmarks.subjects import delete_keys
from distbreaker import Breaker, BreakerConfig, CircuitOpenError

RULES: dict[str, dict[str, Any]] = {
    "count (5 failures)": {"failure_threshold": 5},
    "rate (50 %, min 50 calls)": {"failure_rate_threshold": 0.5, "minimum_calls": 50},
}
WARM_UP = 1.0


@dataclass(frozen=True)
class Detection:
    rule: str
    ratio: float
    processes: int
    rate: int
    fleet: list[float]  # seconds until the last worker refused, one per trial
    missed: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.fleet)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _worker(
    url: str, name: str, settings: dict[str, Any], rate: int, ratio: Any, queue: Any, stop: Any
) -> None:
    breaker = Breaker(name, distbreaker.connect(url, timeout=2.0), BreakerConfig(**settings))
    rng = random.Random()
    breaker.execute(lambda: None)
    queue.put(("ready", 0.0))
    interval, next_at, reported = 1.0 / rate, time.monotonic(), False

    def call() -> None:
        if rng.random() < ratio.value:
            raise ConnectionError("upstream down")

    while not stop.is_set():
        try:
            breaker.execute(call)
        except ConnectionError:
            pass
        except CircuitOpenError:
            if not reported and ratio.value > 0:
                reported = True
                queue.put(("refused", time.time()))
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def measure_detection(
    url: str, rule: str, ratio: float, trials: int, processes: int = 4, rate: int = 200
) -> Detection:
    context = multiprocessing.get_context("spawn")
    fleet: list[float] = []
    missed = 0
    admin = distbreaker.connect(url, timeout=5.0)
    for _ in range(trials):
        prefix = f"bench-detect-{uuid.uuid4().hex[:8]}"
        settings = {**RULES[rule], "key_prefix": prefix, "window": 60.0, "reset_timeout": 60.0}
        shared_ratio = context.Value("d", 0.0)
        queue = context.Queue()
        stop = context.Event()
        workers = [
            context.Process(
                target=_worker,
                args=(url, "upstream", settings, rate, shared_ratio, queue, stop),
                daemon=True,
            )
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        for _ in workers:
            queue.get(timeout=60)
        time.sleep(WARM_UP)  # healthy traffic fills the window first
        started = time.time()
        shared_ratio.value = ratio
        refused: list[float] = []
        deadline = time.monotonic() + 20
        while len(refused) < processes and time.monotonic() < deadline:
            try:
                _, at = queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except Exception:  # queue.Empty: the fleet did not refuse in time
                break
            refused.append(at)
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        if len(refused) < processes:
            missed += 1
        else:
            fleet.append(max(refused) - started)
        delete_keys(admin, f"{prefix}:*")
    admin.close()
    return Detection(rule, ratio, processes, rate, fleet, missed)


def run_detection(url: str, quick: bool) -> list[Detection]:
    trials = 3 if quick else 7
    return [measure_detection(url, rule, ratio, trials) for ratio in (1.0, 0.7) for rule in RULES]


def detection_table(results: list[Detection]) -> str:
    rows = [
        "| rule | true failure ratio | processes x calls/s | trials | p50 ms | p99 ms | "
        "mean ms | missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mean = statistics.fmean(r.fleet) if r.fleet else float("nan")
        rows.append(
            f"| {r.rule} | {r.ratio:.1f} | {r.processes} x {r.rate} | {len(r.fleet)} | "
            f"{r.percentile(0.5) * 1000:.0f} | {r.percentile(0.99) * 1000:.0f} | "
            f"{mean * 1000:.0f} | {r.missed} |"
        )
    return "\n".join(rows)
