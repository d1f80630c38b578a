"""The fleet as one cached listing: every breaker under a prefix, read at most so often.

The dashboard and its ``/metrics`` route show the same listing as ``distbreaker status``
(a bounded ``SCAN``, then each breaker's ``status()``), but a page kept open by many
people, or a scraper every few seconds, must not multiply the Redis load. ``Fleet.read()``
answers from one cached listing younger than ``max_age`` (``min_age`` after a change was
announced), and concurrent callers wait for the one read in flight instead of starting
their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.diagnostics import (
    DEFAULT_PREFIX,
    SCAN_BUDGET,
    TOOL_ERRORS,
    BreakerProblem,
    breaker_for,
    problem_of,
    read_failure,
    settings_stored,
    survey_breakers,
)
from distbreaker.errors import StoreUnavailableError
from distbreaker.status import BreakerStatus
from distbreaker.store import breaker_keys

Clock = Callable[[], float]
READ_ERRORS: tuple[type[BaseException], ...] = (*TOOL_ERRORS, StoreUnavailableError)
# Stored settings change only when a deploy changes them: re-read them this rarely.
SETTINGS_MAX_AGE = 30.0


@dataclass(frozen=True, slots=True)
class BreakerRow:
    """One breaker: its status, and its stored settings (None while none are stored)."""

    status: BreakerStatus
    config: BreakerConfig | None


@dataclass(frozen=True, slots=True)
class FleetListing:
    """Every breaker found under ``prefix``, as read at ``read_at`` (the fleet's clock).

    ``store_ok`` is the health of the reader's own Redis connection; when the read failed,
    ``rows`` are those of the last good read (possibly none) and ``error`` says why.
    ``problems``: keys that could not be listed as they are (a name that is not UTF-8, a
    foreign value, unreadable fields), each with what is wrong; the rest is listed.
    """

    prefix: str
    rows: tuple[BreakerRow, ...]
    store_ok: bool
    read_at: float
    latency_ms: float | None = None
    error: str | None = None
    truncated: bool = False
    problems: tuple[BreakerProblem, ...] = ()

    @property
    def statuses(self) -> list[BreakerStatus]:
        return [row.status for row in self.rows]


@dataclass
class _Known:
    breaker: Breaker
    stored: bool
    checked_at: float


@dataclass
class _Cache:
    listing: FleetListing | None = None
    read_at: float = float("-inf")
    stale: bool = True
    reads: int = 0
    known: dict[str, _Known] = field(default_factory=dict)


class Fleet:
    """The cached listing of the breakers under ``prefix`` on ``client`` (sync redis-py).

    ``read()`` blocks (run it off an event loop); it never raises for Redis trouble.
    ``clock`` is monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = DEFAULT_PREFIX,
        *,
        max_age: float = 1.0,
        min_age: float = 0.25,
        budget: int = SCAN_BUDGET,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 <= min_age <= max_age:
            raise ValueError("need 0 <= min_age <= max_age")
        self.client = client
        self.prefix = BreakerConfig(key_prefix=prefix).key_prefix
        self.max_age = max_age
        self.min_age = min_age
        self.budget = budget
        self._clock = clock
        self._lock = threading.Lock()
        self._cache = _Cache()

    @property
    def reads(self) -> int:
        """How many times Redis was read (for tests and the dashboard's own metrics)."""
        return self._cache.reads

    @property
    def stale(self) -> bool:
        """True from ``invalidate()`` until the next read that goes to Redis."""
        return self._cache.stale

    def invalidate(self) -> None:
        """Something changed (an event arrived): the next read may go to Redis at once."""
        self._cache.stale = True

    def read(self) -> FleetListing:
        """The listing, from the cache when fresh enough, else read from Redis now."""
        with self._lock:
            cache = self._cache
            age = self._clock() - cache.read_at
            limit = self.min_age if cache.stale else self.max_age
            if cache.listing is not None and 0 <= age < limit:
                return cache.listing
            cache.stale = False
            cache.listing = self._read_now(cache)
            cache.read_at = self._clock()
            return cache.listing

    def breaker(self, name: str) -> Breaker:
        """The operator ``Breaker`` for ``name`` (stored settings, errors raised)."""
        with self._lock:
            known = self._cache.known.get(name)
        if known is not None:
            return known.breaker
        return breaker_for(self.client, self.prefix, name)

    def _read_now(self, cache: _Cache) -> FleetListing:
        started = self._clock()
        cache.reads += 1
        try:
            survey = survey_breakers(self.client, self.prefix, budget=self.budget)
            names, truncated = survey.names, survey.truncated
            problems = list(survey.problems)
            rows = tuple(self._rows(cache, names, started, problems))
        except READ_ERRORS as error:
            last = cache.listing.rows if cache.listing is not None else ()
            return FleetListing(
                prefix=self.prefix,
                rows=last,
                store_ok=False,
                read_at=started,
                error=f"{type(error).__name__}: {error}",
            )
        for gone in set(cache.known) - set(names):
            del cache.known[gone]
        elapsed = (self._clock() - started) * 1000
        return FleetListing(
            prefix=self.prefix,
            rows=rows,
            store_ok=True,
            read_at=started,
            latency_ms=round(elapsed, 3),
            truncated=truncated,
            problems=tuple(problems),
        )

    def _rows(
        self, cache: _Cache, names: list[str], now: float, problems: list[BreakerProblem]
    ) -> Iterator[BreakerRow]:
        """A row per readable breaker; the others (and unreadable fields) as ``problems``."""
        for name in names:
            try:
                row = self._row(cache, name, now)
            except READ_ERRORS as error:
                failure = read_failure(error)
                if failure is None:
                    raise  # Redis itself failed: the whole read did
                key = breaker_keys(self.prefix, name).state
                problems.append(failure.model_copy(update={"key": key, "name": name}))
                continue
            problem = problem_of(row.status, self.prefix)
            if problem is not None:
                problems.append(problem)
            yield row

    def _row(self, cache: _Cache, name: str, now: float) -> BreakerRow:
        known = cache.known.get(name)
        # unstored settings are looked for on every read: they appear at the first transition
        if known is None or not known.stored or not 0 <= now - known.checked_at < SETTINGS_MAX_AGE:
            stored = settings_stored(self.client, self.prefix, name)
            known = _Known(breaker_for(self.client, self.prefix, name), stored, now)
            cache.known[name] = known
        status = known.breaker.status()
        return BreakerRow(status, known.breaker.config if known.stored else None)
