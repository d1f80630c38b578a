"""The faults, each a start/stop pair or a series of strikes, applied to the live run.

A fault's ``stop`` returns once the store is healthy again: that instant is the fault's
end, from which resume times are measured. ``wipes``: Redis loses its data (the counts of
the fault's span prove nothing). ``overwrites``: the state hash is overwritten with
garbage (nothing after the first strike is accountable, since a repair may rewrite it).
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import redis

from benchmarks.soak.proxy import LatencyProxy
from benchmarks.soak.redis_process import RedisProcess

LATENCY = 0.3  # seconds of round trip the proxy adds: more than the 0.25 s store timeout
FILLER_BYTES = 4 * 1024 * 1024
HEADROOM = 512 * 1024
# What the garbage fault writes, one set per strike (the fields the scripts parse).
GARBAGE: tuple[dict[str, str], ...] = (
    {"state": "closed", "generation": "xyz"},
    {"failures_total": "many", "opens_total": "-", "last_failure_at": "yesterday"},
    {"state": "banana"},
    {"state": "open", "open_until": "1e999"},
)


@dataclass
class FaultContext:
    """What a fault acts on, and what it reports back about the run."""

    server: RedisProcess
    proxy: LatencyProxy
    admin: redis.Redis
    prefix: str
    epochs: dict[str, int]  # server run_id -> data epoch (a new epoch after each wipe)
    epoch: int = 0
    names: dict[str, str] = field(default_factory=dict)  # mode -> this phase's breaker
    notes: list[str] = field(default_factory=list)
    lease_losses: list[float] = field(default_factory=list)
    blind_from: float | None = None

    def restarted(self) -> None:
        self.epochs[self.server.start()] = self.epoch

    def state_key(self, name: str) -> str:
        return f"{self.prefix}:{{{name}}}:state"


class Fault:
    """No fault: the baseline every invariant must pass."""

    name: str = "none"
    wipes: ClassVar[bool] = False
    overwrites: ClassVar[bool] = False
    strikes: ClassVar[bool] = False

    def start(self, ctx: FaultContext) -> None:
        """Begin the fault (start/stop faults)."""

    def strike(self, ctx: FaultContext, number: int) -> None:
        """One blow (strike faults)."""

    def stop(self, ctx: FaultContext) -> None:
        """Undo the fault; return once Redis is healthy."""


class SigkillRestart(Fault):
    """A crash: SIGKILL, down for the window, restart on the same data."""

    name = "sigkill_restart"

    def start(self, ctx: FaultContext) -> None:
        ctx.server.crash()

    def stop(self, ctx: FaultContext) -> None:
        ctx.restarted()


class Sigstop(Fault):
    """A hung server: SIGSTOP for the window (connections stay open, nothing answers)."""

    name = "sigstop"

    def start(self, ctx: FaultContext) -> None:
        ctx.server.signal(signal.SIGSTOP)

    def stop(self, ctx: FaultContext) -> None:
        ctx.server.signal(signal.SIGCONT)


class RestartEmpty(Fault):
    """A failover to an empty server: stopped, data removed, back with nothing."""

    name = "restart_empty"
    wipes = True

    def start(self, ctx: FaultContext) -> None:
        ctx.server.stop()
        ctx.lease_losses.append(time.monotonic())  # the old server is gone with its leases
        ctx.server.wipe()
        ctx.epoch += 1

    def stop(self, ctx: FaultContext) -> None:
        ctx.restarted()


class ClientKill(Fault):
    """``CLIENT KILL TYPE <kind>`` four times over the window (the caller is spared)."""

    strikes = True

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"client_kill_{kind}"
        self.killed: list[int] = []

    def strike(self, ctx: FaultContext, number: int) -> None:
        self.killed.append(int(ctx.admin.execute_command("CLIENT", "KILL", "TYPE", self.kind)))

    def stop(self, ctx: FaultContext) -> None:
        counts = ", ".join(map(str, self.killed))
        ctx.notes.append(f"{self.kind} connections killed at each strike: {counts}")


class ScriptFlush(Fault):
    """``SCRIPT FLUSH`` four times over the window: every EVALSHA meets NOSCRIPT once."""

    name = "script_flush"
    strikes = True

    def strike(self, ctx: FaultContext, number: int) -> None:
        ctx.admin.script_flush()


class MaxMemory(Fault):
    """Out of memory: ``maxmemory`` just above use, ``noeviction``, a filler key over it."""

    name = "maxmemory"

    def start(self, ctx: FaultContext) -> None:
        used = int(ctx.admin.info("memory")["used_memory"])
        ctx.admin.config_set("maxmemory-policy", "noeviction")
        ctx.admin.config_set("maxmemory", used + HEADROOM)
        with contextlib.suppress(redis.ResponseError):  # already over the limit: fine
            ctx.admin.set(self._filler(ctx), b"x" * FILLER_BYTES, px=600_000)
        try:
            ctx.admin.set(f"{ctx.prefix}-oom-check", "x", px=1000)
            ctx.notes.append("writes still accepted: the server was not out of memory")
        except redis.ResponseError as error:
            ctx.notes.append(f"writes refused: {str(error).split('.')[0]}")

    def stop(self, ctx: FaultContext) -> None:
        ctx.admin.delete(self._filler(ctx))
        ctx.admin.config_set("maxmemory", 0)

    @staticmethod
    def _filler(ctx: FaultContext) -> str:
        return f"{ctx.prefix}-filler"  # outside the breakers' keys


class Latency(Fault):
    """Every byte between workers and Redis 0.3 s late (a round trip over the timeout)."""

    name = "latency"

    def start(self, ctx: FaultContext) -> None:
        ctx.proxy.delay = LATENCY

    def stop(self, ctx: FaultContext) -> None:
        ctx.proxy.delay = 0.0


class Garbage(Fault):
    """Garbage written into this phase's state hashes, a different set at each strike."""

    name = "garbage"
    overwrites = True
    strikes = True

    def strike(self, ctx: FaultContext, number: int) -> None:
        if ctx.blind_from is None:
            ctx.blind_from = time.monotonic()
        fields: Any = GARBAGE[number % len(GARBAGE)]
        for mode, name in sorted(ctx.names.items()):
            key = ctx.state_key(name)
            if ctx.admin.exists(key):  # never create a hash, and so a key without a TTL
                ctx.admin.hset(key, mapping=fields)
            else:
                ctx.notes.append(f"strike {number + 1}: no {mode} state hash to overwrite")


def make(name: str) -> Fault:
    """The fault called ``name`` (see ``schedule.FAULTS``)."""
    faults: dict[str, Fault] = {
        "none": Fault(),
        "sigkill_restart": SigkillRestart(),
        "sigstop": Sigstop(),
        "restart_empty": RestartEmpty(),
        "client_kill_normal": ClientKill("normal"),
        "client_kill_pubsub": ClientKill("pubsub"),
        "script_flush": ScriptFlush(),
        "maxmemory": MaxMemory(),
        "latency": Latency(),
        "garbage": Garbage(),
    }
    return faults[name]
