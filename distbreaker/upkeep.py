"""The background upkeep: one daemon thread per process (and one task per event loop).

Off the call path it runs each registered breaker's ``upkeep()``: batched reports of the
calls counted since the last one, probe outcomes Redis did not take, and a check every
``PING_INTERVAL`` while Redis is away so shared mode resumes within a fraction of a second
of Redis answering again. Breakers are held weakly; a forked child starts its own thread;
at exit a last batch is sent (bounded by the store's short timeouts).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import weakref
from typing import Protocol

logger = logging.getLogger("distbreaker")


class Job(Protocol):
    def upkeep(self, final: bool = False) -> float:
        """Do what is due; the seconds until it wants to run again."""


class AsyncJob(Protocol):
    async def upkeep(self, final: bool = False) -> float:
        """Do what is due; the seconds until it wants to run again."""


class _Thread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: weakref.WeakSet[Job] = weakref.WeakSet()
        self.wakeup = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="distbreaker-upkeep", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            wait = 1.0
            for job in list(self.jobs):
                wait = min(wait, _run_job(job))
            self.wakeup.wait(max(0.001, wait))
            self.wakeup.clear()

    def flush(self) -> None:
        self.stopping = True
        for job in list(self.jobs):
            _run_job(job, final=True)


def _run_job(job: Job, final: bool = False) -> float:
    try:
        return job.upkeep(final)
    except Exception:  # the upkeep must never die: log and try again later
        logger.exception("distbreaker upkeep of %r failed", job)
        return 1.0


_lock = threading.Lock()
_thread: _Thread | None = None
_background = True


def run_in_background(enabled: bool) -> None:
    """Testing switch: with ``False``, breakers first used from now on get no background
    upkeep, and a test calls ``breaker.upkeep()`` itself, at the moments it chooses."""
    global _background
    _background = enabled


def register(job: Job) -> None:
    """Run ``job.upkeep()`` in this process's upkeep thread (started on first use)."""
    global _thread
    if not _background:
        return
    with _lock:
        if _thread is None or _thread.pid != os.getpid():
            _thread = _Thread()
        _thread.jobs.add(job)
    wake()


def wake() -> None:
    """Ask the upkeep thread to look at every breaker now (Redis failed, work arrived)."""
    thread = _thread
    if thread is not None and thread.pid == os.getpid():
        thread.wakeup.set()


@atexit.register
def _flush_at_exit() -> None:
    thread = _thread
    if thread is not None and thread.pid == os.getpid():
        thread.flush()


class _Task:
    def __init__(self) -> None:
        self.jobs: weakref.WeakSet[AsyncJob] = weakref.WeakSet()
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            wait = 1.0
            for job in list(self.jobs):
                try:
                    wait = min(wait, await job.upkeep())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("distbreaker upkeep of %r failed", job)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), max(0.001, wait))
            self.wakeup.clear()


_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Task] = weakref.WeakKeyDictionary()


def register_async(job: AsyncJob) -> None:
    """Run ``await job.upkeep()`` in the running loop's upkeep task (started on first use)."""
    if not _background:
        return
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.task.done():
        task = _Task()
        _tasks[loop] = task
    task.jobs.add(job)
    task.wakeup.set()


def wake_async() -> None:
    """Wake the running loop's upkeep task, if any."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = _tasks.get(loop)
    if task is not None:
        task.wakeup.set()
