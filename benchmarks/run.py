"""Run every benchmark in one go and print markdown tables: ``python -m benchmarks.run``.

Without ``--redis-url`` a private ``redis-server`` is started on a free loopback port
(the binary must be on PATH), so ``make bench`` works on a fresh machine. ``--quick``
takes about 30 s; the full run about two to three minutes on two cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import distbreaker
from benchmarks import report
from benchmarks.detection import detection_table, run_detection
from benchmarks.latency import (
    Budget,
    ReportCheck,
    RoundTripCheck,
    check_no_round_trips,
    check_reports_only,
    measure,
)
from benchmarks.load import LoadResult, WorkerPool, scenarios
from benchmarks.propagation import Propagation, measure_propagation
from benchmarks.subjects import (
    CASES,
    Subject,
    bare,
    check,
    distbreaker_subject,
    interlock_subject,
    pybreaker_memory,
    pybreaker_redis,
    redis_floor,
)

FULL = Budget(local_calls=200_000, remote_calls=10_000, rounds=5)
QUICK = Budget(local_calls=30_000, remote_calls=1_500, rounds=3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--redis-url", help="an existing Redis (default: start a private one)")
    parser.add_argument("--quick", action="store_true", help="a ~30 s run with fewer samples")
    parser.add_argument("--skip-load", action="store_true", help="leave out the store-load part")
    return parser.parse_args(argv)


def versions(client: redis.Redis) -> str:
    server = client.info("server")["redis_version"]
    packages = ", ".join(
        f"{name} {_version(name)}" for name in ("redis", "distbreaker", "pybreaker", "interlock-cb")
    )
    return f"Python {platform.python_version()}, redis-server {server}; {packages}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def run_latency(
    url: str, admin: redis.Redis, budget: Budget
) -> tuple[list[Subject], report.Numbers, list[RoundTripCheck], ReportCheck]:
    tag = uuid.uuid4().hex[:8]
    subjects: list[Subject] = []
    try:
        cached = distbreaker_subject(url, f"bench-cached-{tag}", "cached")
        subjects.append(cached)
        # server-side proof first, while no peer with a background poller is alive
        calls = 20_000 if budget is QUICK else 50_000
        checks = [
            check_no_round_trips(admin, cached.breakers[case], case, calls)
            for case in ("healthy", "refused")
        ]
        rate = distbreaker_subject(url, f"bench-rate-{tag}", "cached", rate=True)
        subjects.append(rate)
        report_check = check_reports_only(admin, rate.breakers["healthy"], calls)
        local = interlock_subject(None, f"bench-interlock-local-{tag}")
        subjects[:0] = [bare(), pybreaker_memory(), local]
        subjects.append(distbreaker_subject(url, f"bench-strict-{tag}", "strict"))
        subjects.append(pybreaker_redis(url, f"bench-pybreaker-{tag}"))
        subjects.append(interlock_subject(url, f"bench-interlock-{tag}"))
        subjects.extend(redis_floor(url, f"bench-floor-{tag}"))
        runnable = [s for s in subjects if not s.skipped]
        for subject in runnable:
            check(subject)
        results = measure(runnable, CASES, budget)
    finally:
        for subject in subjects:
            subject.close()
    return subjects, report.Numbers(results), checks, report_check


def run_propagation(url: str, quick: bool) -> list[Propagation]:
    trips = 10 if quick else 30
    return [measure_propagation(url, 4, trips, mode) for mode in ("listener", "paced")]


def run_load(url: str, admin: redis.Redis, quick: bool) -> list[LoadResult]:
    rows = scenarios(quick)
    pool = WorkerPool(url, max(s.processes for s in rows))
    try:
        return [pool.run(admin, scenario, 1.0 if quick else 3.0) for scenario in rows]
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    url = args.redis_url
    if url is None:
        from distbreaker.testing import RedisServer, find_redis_server

        binary = find_redis_server()
        if binary is None:
            print("no --redis-url and no redis-server on PATH", file=sys.stderr)
            return 2
        server = RedisServer(binary).start()
        url = server.url
    started = time.monotonic()
    admin = distbreaker.connect(url, timeout=5.0)
    try:
        budget = QUICK if args.quick else FULL
        command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
        print(f"# distbreaker benchmarks (`{command}`)\n")
        print(versions(admin) + f"; {platform.machine()}, {_cpus()} CPUs\n")
        subjects, numbers, checks, report_check = run_latency(url, admin, budget)
        took = [("latency", time.monotonic() - started)]
        propagation = run_propagation(url, args.quick)
        took.append(("propagation", time.monotonic() - started - sum(t for _, t in took)))
        detection = run_detection(url, args.quick)
        took.append(("detection", time.monotonic() - started - sum(t for _, t in took)))
        load = [] if args.skip_load else run_load(url, admin, args.quick)
        took.append(("store load", time.monotonic() - started - sum(t for _, t in took)))
        _print_all(subjects, numbers, checks, report_check, propagation, load, budget)
        print("\n## Detection (the upstream starts failing; until every worker refuses)\n")
        print(detection_table(detection))
    finally:
        admin.close()
        if server is not None:
            server.stop()
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took)
    print(f"\n(total {time.monotonic() - started:.0f} s: {parts})")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _print_all(
    subjects: list[Subject],
    numbers: report.Numbers,
    checks: list[RoundTripCheck],
    report_check: ReportCheck,
    propagation: list[Propagation],
    load: list[LoadResult],
    budget: Budget,
) -> None:
    print("## Goals (issues 8 and 13)\n")
    goals = report.goals(numbers, checks, propagation) + report.rate_goals(numbers, report_check)
    print(report.goals_table(goals))
    print(
        f"\n## Per-call latency\n\n{budget.local_calls} timed calls per local case, "
        f"{budget.remote_calls} per case that talks to Redis, in {budget.rounds} interleaved "
        "rounds; GC off while timing. Overhead = median minus the bare call's median of the "
        "same case (for `refused`, the bare call is a function that raises).\n"
    )
    print(report.latency_table(subjects, numbers))
    print("\n## Same-run ratios\n")
    print(report.ratios_table(numbers))
    print("\n## Round trips of cached decisions (server-side `INFO commandstats`)\n")
    print(report.checks_table(checks))
    print("\n## Trip propagation (one process trips, 4 processes in cached mode refuse)\n")
    print(report.propagation_table(propagation))
    if load:
        print("\n## Store load (cached mode; server-side `INFO commandstats` over each window)\n")
        print(report.load_table(load))


if __name__ == "__main__":
    sys.exit(main())
