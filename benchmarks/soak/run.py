"""``python -m benchmarks.soak``: start everything, run the fault schedule, judge, print.

Exit status: 0 when every invariant held, 1 when one was violated, 2 when the harness
itself could not run (no redis-server, a worker crashed).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import platform
import queue
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.soak import faults, schedule
from benchmarks.soak.checker import Bounds, Run, check
from benchmarks.soak.proxy import LatencyProxy
from benchmarks.soak.recorder import EventRecorder
from benchmarks.soak.redis_process import RedisProcess
from benchmarks.soak.report import render
from benchmarks.soak.timeline import (
    Call,
    KeyTTL,
    Phase,
    Sample,
    StatusPoll,
    StoreError,
    read_records,
)
from benchmarks.soak.upstream import UpstreamProcess
from benchmarks.soak.worker import WorkerJob, breaker_name, run_worker

# Fast cycles, so that every phase sees the breakers open, probe and close several times.
SETTINGS: dict[str, Any] = {
    "failure_threshold": 5,
    "window": 2.0,
    "reset_timeout": 0.4,
    "half_open_max_calls": 2,
    "success_threshold": 2,
    "probe_timeout": 10.0,
}
STORE_TIMEOUT = 0.25  # distbreaker.connect's default, for connecting and for each reply
LATENCY_BOUND = 2 * (STORE_TIMEOUT + STORE_TIMEOUT) + 0.25
CACHE_TTL = 1.0  # BreakerConfig's default, kept
# Refusing a healthy upstream is right until a probe got through: reset_timeout, plus a
# cached half-open refusal (cache_ttl), plus a second for a loaded machine.
REFUSAL_BOUND = SETTINGS["reset_timeout"] + CACHE_TTL + 1.0
STATUS_INTERVAL = 0.5  # even workers poll status() this often, as a health endpoint would
LATE = 0.25  # an action this late is noted under the table
FULL = {"duration": 110.0, "workers": 8, "threads": 4}
SHORT = {"duration": 25.0, "workers": 4, "threads": 2}


class HarnessError(RuntimeError):
    """The soak could not run as designed (not a verdict on distbreaker)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, help="seconds of fault schedule (default 110)")
    parser.add_argument("--workers", type=int, help="worker processes (default 8)")
    parser.add_argument("--threads", type=int, help="calling threads per worker (default 4)")
    parser.add_argument("--modes", default="cached,strict", help="consistency modes to run")
    parser.add_argument("--faults", default=",".join(schedule.FAULTS), help="faults to run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the call pacing")
    parser.add_argument("--rate", type=float, default=20.0, help="calls/s per thread")
    parser.add_argument("--short", action="store_true", help="~30 s: 25 s, 4 workers x 2 threads")
    parser.add_argument("--resume-bound", type=float, default=1.0, help="seconds (default 1.0)")
    parser.add_argument("--latency-bound", type=float, default=LATENCY_BOUND, help="seconds")
    parser.add_argument("--refusal-bound", type=float, default=REFUSAL_BOUND, help="seconds")
    parser.add_argument("--keep", type=Path, help="keep the timelines in this directory")
    args = parser.parse_args(argv)
    defaults = SHORT if args.short else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.modes = tuple(m for m in args.modes.split(",") if m)
    args.faults = tuple(f for f in args.faults.split(",") if f)
    if not set(args.modes) <= {"cached", "strict"} or not args.modes:
        parser.error("--modes takes cached, strict or both")
    if args.threads < len(args.modes):
        parser.error("--threads must be at least the number of modes")
    if args.workers < 1 or args.duration <= 0 or args.rate <= 0:
        parser.error("--workers, --duration and --rate must be positive")
    try:
        schedule.plan(args.faults, args.duration)
    except ValueError as error:
        parser.error(str(error))
    return args


@dataclass
class PhaseLog:
    """What the driver saw of one phase, as it happened."""

    plan: schedule.PhasePlan
    names: dict[str, str]
    fault_started: float = 0.0
    fault_ended: float = 0.0
    lease_losses: list[float] = field(default_factory=list)
    blind_from: float | None = None
    notes: list[str] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)
    outage_from: float | None = None
    outage_tail: float = 0.0  # a hung request may still be answered this long after
    wiped: bool = False  # since the last sample
    overwritten: bool = False


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.prefix = f"soak-{uuid.uuid4().hex[:8]}"
        self.plans = schedule.plan(args.faults, args.duration)
        self.hang = schedule.hang_seconds(self.plans)
        self.logs = [
            PhaseLog(p, {m: breaker_name(p.index, p.fault, m) for m in args.modes})
            for p in self.plans
        ]
        self.faults = {p.index: faults.make(p.fault) for p in self.plans}
        self.samples: list[Sample] = []
        self.keys: list[KeyTTL] = []
        self.notes: list[str] = []
        self.t0 = 0.0

    # -- the run ------------------------------------------------------------------

    def run(self) -> Run:
        binary = shutil.which("redis-server")
        if binary is None:
            raise HarnessError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        server = RedisProcess(self.work / "redis", binary)
        epochs = {server.start(): 0}
        with contextlib.ExitStack() as stack:
            stack.callback(server.stop)
            proxy = LatencyProxy(server.port).start()
            stack.callback(proxy.stop)
            admin = redis.Redis(port=server.port, socket_timeout=5, socket_connect_timeout=5)
            stack.callback(admin.close)
            self.notes.append(f"redis-server {admin.info('server')['redis_version']}")
            context = multiprocessing.get_context("spawn")
            upstream = UpstreamProcess(context, self.hang).start()
            stack.callback(self._upstream_note, upstream)
            recorder = EventRecorder(server.url, f"{self.prefix}:events").start()
            stack.callback(recorder.stop)
            ctx = faults.FaultContext(server, proxy, admin, self.prefix, epochs)
            workers = stack.enter_context(self._workers(context, proxy.url, upstream.url))
            self._drive(ctx, upstream)
            self._finish(workers)
            self._scan_all(admin)
            recorder.stop()
            result = self._collect(recorder, epochs)
        return result

    @contextlib.contextmanager
    def _workers(self, context: Any, redis_url: str, upstream_url: str) -> Iterator[list[Any]]:
        ready, go, start_at = context.Queue(), context.Event(), context.Value("d", 0.0)
        phases = tuple((p.index, p.fault, p.start, p.end) for p in self.plans)
        processes = []
        for index in range(self.args.workers):
            job = WorkerJob(
                index=index,
                redis_url=redis_url,
                upstream_url=upstream_url,
                prefix=self.prefix,
                phases=phases,
                modes=self.args.modes,
                threads=self.args.threads,
                rate=self.args.rate,
                settings=SETTINGS,
                out=str(self.work / f"worker-{index}.jsonl"),
                seed=self.args.seed,
                status_interval=STATUS_INTERVAL if index % 2 == 0 else None,
            )
            process = context.Process(target=run_worker, args=(job, ready, go, start_at))
            process.start()
            processes.append(process)
        try:
            deadline = time.monotonic() + 120
            for _ in processes:
                try:
                    ready.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise HarnessError("the workers did not start within 120 s") from None
            self.t0 = time.monotonic() + 1.0  # every worker starts its threads first
            start_at.value = self.t0
            go.set()
            yield processes
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join(timeout=5)

    def _drive(self, ctx: faults.FaultContext, upstream: UpstreamProcess) -> None:
        for at, _, kind, index, argument in self._actions():
            lateness = self._wait_until(at)
            log = self.logs[index]
            if lateness > LATE:
                log.notes.append(f"{kind} ran {lateness:.2f} s late")
            if kind == "sample":
                self._sample(ctx, log, final=False)
            elif kind == "weather":
                self._weather(upstream, log, str(argument))
            elif kind == "start":
                self._fault_start(ctx, log)
            elif kind == "strike":
                self.faults[index].strike(ctx, int(argument))
            elif kind == "stop":
                self._fault_stop(ctx, log)
            elif kind == "final":
                self._sample(ctx, log, final=True)
                print(
                    f"soak: phase {index + 1}/{len(self.logs)} {log.plan.fault} done",
                    file=sys.stderr,
                )

    def _actions(self) -> list[tuple[float, int, str, int, object]]:
        actions: list[tuple[float, int, str, int, object]] = []
        for plan in self.plans:
            fault = self.faults[plan.index]
            i = plan.index
            actions.append((plan.start, 0, "sample", i, None))
            for burst in plan.bursts:
                actions += [
                    (burst.start, 1, "weather", i, burst.mode),
                    (burst.end, 1, "weather", i, "ok"),
                ]
            actions.append((plan.fault_start, 2, "start", i, None))
            if fault.strikes:
                actions += [(at, 3, "strike", i, n) for n, at in enumerate(plan.strikes)]
            actions.append((plan.fault_end, 4, "stop", i, None))
            actions.append((plan.final_sample, 5, "final", i, None))
        return sorted(actions, key=lambda a: (a[0], a[1]))

    def _wait_until(self, at: float) -> float:
        """Sleep until ``at`` seconds after the start (the schedule's clock); return lateness."""
        delay = self.t0 + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return max(0.0, -delay)

    def _weather(self, upstream: UpstreamProcess, log: PhaseLog, mode: str) -> None:
        """Switch the upstream; an outage spans from before the switch to after the next,
        and past it by the hang time when requests were being held."""
        if mode != "ok":
            log.outage_from = time.monotonic()
            log.outage_tail = self.hang if mode == "hang" else 0.0
            upstream.set_mode(mode)
            return
        upstream.set_mode(mode)
        if log.outage_from is not None:
            log.outages.append((log.outage_from, time.monotonic() + log.outage_tail))
            log.outage_from = None

    def _fault_start(self, ctx: faults.FaultContext, log: PhaseLog) -> None:
        self._sample(ctx, log, final=False)
        ctx.names, ctx.notes, ctx.lease_losses, ctx.blind_from = dict(log.names), [], [], None
        fault = self.faults[log.plan.index]
        log.fault_started = time.monotonic()
        fault.start(ctx)
        log.wiped = fault.wipes

    def _fault_stop(self, ctx: faults.FaultContext, log: PhaseLog) -> None:
        fault = self.faults[log.plan.index]
        fault.stop(ctx)
        log.fault_ended = time.monotonic()
        log.lease_losses, log.blind_from = list(ctx.lease_losses), ctx.blind_from
        log.overwritten = fault.overwrites
        log.notes += ctx.notes
        self._sample(ctx, log, final=False)

    def _sample(self, ctx: faults.FaultContext, log: PhaseLog, *, final: bool) -> None:
        accountable = not (log.wiped or log.overwritten)
        log.wiped = False
        modes = sorted(log.names)
        before = time.monotonic()
        try:
            pipe = ctx.admin.pipeline(transaction=False)
            for mode in modes:
                pipe.hmget(ctx.state_key(log.names[mode]), "failures_total", "generation")
            replies = pipe.execute()
        except redis.RedisError as error:
            log.notes.append(f"a sample failed ({type(error).__name__}); its span is not counted")
            replies = [[b"?", b"?"] for _ in modes]
        after = time.monotonic()
        for mode, (failures, generation) in zip(modes, replies, strict=True):
            count, gen = _integer(failures), _integer(generation)
            sample = Sample(log.plan.index, mode, before, after, ctx.epoch, count, gen, accountable)
            self.samples.append(sample)
        if final:
            for mode in modes:
                pattern = f"{self.prefix}:{{{log.names[mode]}}}:*"
                self.keys += _ttls(ctx.admin, pattern, log.plan.index)

    def _finish(self, workers: list[Any]) -> None:
        deadline = self.t0 + self.plans[-1].end + 60
        for process in workers:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
        failed = [
            f"worker {n}: exit {p.exitcode}" for n, p in enumerate(workers) if p.exitcode != 0
        ]
        if failed:
            raise HarnessError("workers failed: " + ", ".join(failed))

    def _scan_all(self, admin: redis.Redis) -> None:
        """Every key under the prefix at the end, attributed to its phase by breaker name."""
        phase_of = {name: log.plan.index for log in self.logs for name in log.names.values()}
        for key in _ttls(admin, f"{self.prefix}:*", -1):
            name = key.key.partition("{")[2].partition("}")[0]
            self.keys.append(KeyTTL(phase_of.get(name, -1), key.key, key.pttl, key.at))

    def _upstream_note(self, upstream: UpstreamProcess) -> None:
        served = upstream.stop()
        self.notes.append(f"the upstream served {served} requests")

    def _collect(self, recorder: EventRecorder, epochs: dict[str, int]) -> Run:
        calls: list[Call] = []
        polls: list[StatusPoll] = []
        errors: list[StoreError] = []
        for index in range(self.args.workers):
            for record in read_records(self.work / f"worker-{index}.jsonl"):
                if isinstance(record, Call):
                    calls.append(record)
                elif isinstance(record, StatusPoll):
                    polls.append(record)
                else:
                    errors.append(record)
        phases = [
            Phase(
                index=log.plan.index,
                round=log.plan.round,
                fault=log.plan.fault,
                started=self.t0 + log.plan.start,
                fault_started=log.fault_started,
                fault_ended=log.fault_ended,
                ended=self.t0 + log.plan.end,
                names=log.names,
                lease_losses=tuple(log.lease_losses),
                blind_from=log.blind_from,
                outages=tuple(log.outages),
                notes=tuple(log.notes),
            )
            for log in self.logs
        ]
        bounds = Bounds(
            half_open_max_calls=SETTINGS["half_open_max_calls"],
            lease_horizon=min(SETTINGS["reset_timeout"], SETTINGS["probe_timeout"]),
            resume=self.args.resume_bound,
            added_latency=self.args.latency_bound,
            refusal=self.args.refusal_bound,
        )
        if recorder.other_messages:
            self.notes.append(f"{recorder.other_messages} other messages on the events channel")
        return Run(
            phases, calls, polls, errors, self.samples, recorder.events, recorder.connections,
            epochs, self.keys, bounds,
        )  # fmt: skip


def _integer(value: bytes | None) -> int | None:
    """A counter from the hash: missing is 0 (as the scripts read it), garbage is None."""
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def _ttls(admin: redis.Redis, pattern: str, phase: int) -> list[KeyTTL]:
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in admin.scan_iter(match=pattern)]
    now = time.monotonic()
    return [KeyTTL(phase, key, int(admin.pttl(key)), now) for key in keys]


def _work_dir(keep: Path | None) -> tuple[Path, bool]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep, False
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and shm.stat().st_mode & 0o2 else None
    return Path(tempfile.mkdtemp(prefix="distbreaker-soak-", dir=base)), True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, remove = _work_dir(args.keep)
    modes = "+".join(args.modes)
    print(
        f"distbreaker soak: {args.workers} workers x {args.threads} threads ({modes}), "
        f"{args.duration:.0f} s of faults, seed {args.seed}; Python {platform.python_version()}",
        file=sys.stderr,
    )
    soak = Soak(args, work)
    try:
        run = soak.run()
    except HarnessError as error:
        print(f"soak: cannot run: {error}", file=sys.stderr)
        return 2
    finally:
        if remove:
            shutil.rmtree(work, ignore_errors=True)
    rows = check(run)
    notes = list(soak.notes)
    for phase in run.phases:
        notes += [f"{phase.fault} (phase {phase.index + 1}): {note}" for note in phase.notes]
    print(render(rows, run.bounds, notes))
    violated = sum(len(row.violations) for row in rows)
    print(f"\nResult: {'FAIL' if violated else 'PASS'} ({len(rows)} rows, {violated} violations)")
    return 1 if violated else 0
