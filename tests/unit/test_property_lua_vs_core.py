"""Property test: the Lua scripts and core.py agree on every reply for the same sequences.

Random histories drive both with the same clock: admissions, outcomes from three
reporters (with piggy-backed batches), batched reports, rate-limit holds, operator
commands and status reads; then the history streams are compared entry by entry.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distbreaker
from distbreaker import BreakerConfig
from distbreaker.core import BreakerModel
from distbreaker.store import SyncStore

configs = st.builds(
    BreakerConfig,
    failure_threshold=st.integers(1, 4),
    window=st.sampled_from([1.0, 2.5, 10.0]),
    reset_timeout=st.sampled_from([1.0, 3.0]),
    half_open_max_calls=st.integers(1, 3),
    success_threshold=st.integers(1, 3),
    probe_timeout=st.sampled_from([0.5, 2.0, 5.0]),
    failure_rate_threshold=st.sampled_from([None, None, 0.3, 0.5, 1.0]),
    minimum_calls=st.integers(1, 6),
    min_reporters=st.sampled_from([1, 1, 2, 3]),
    reset_timeout_multiplier=st.sampled_from([1.0, 1.5, 2.0]),
    max_reset_timeout=st.sampled_from([None, 5.0, 7.5]),
    reset_jitter=st.sampled_from([0.0, 0.0, 0.2, 0.5]),
)

REPORTERS = ("host-a", "host-b", "host-c")
batches = st.lists(
    st.tuples(st.integers(0, 12_000), st.integers(0, 5), st.integers(0, 2)), max_size=3
).map(lambda items: ";".join(f"{a}:{c}:{r}" for a, c, r in items))

admits = st.tuples(st.just("admit"), st.integers(0, 2))
records = st.tuples(
    st.just("record"),
    st.integers(0, 50),
    st.sampled_from(["failure", "failure", "failure", "success", "success", "release"]),
    st.booleans(),
    st.integers(0, 2),
    batches,
)
steps = st.lists(
    st.one_of(
        admits,
        records,
        admits,
        records,
        st.tuples(
            st.just("report"),
            st.integers(0, 2),
            batches,
            st.integers(0, 3),
            st.sampled_from([0, 0, 1_500, 5_000]),
        ),
        st.tuples(st.just("hold"), st.integers(0, 5_000)),
        st.tuples(
            st.just("advance"),
            st.one_of(
                st.sampled_from([0, 1, 500, 1_000, 2_000, 2_500, 3_000, 5_000]),
                st.integers(-200, 4_000),
            ),
        ),
        st.tuples(
            st.just("control"),
            st.sampled_from(["force_open", "force_closed", "reset", "hold_open"]),
            st.integers(0, 5_000),
        ),
        st.tuples(st.just("status")),
    ),
    min_size=10,
    max_size=80,
)


def run_both(client: Any, config: BreakerConfig, sequence: list[tuple[Any, ...]]) -> None:
    config = config.model_copy(update={"key_prefix": f"prop-{uuid.uuid4().hex[:10]}"})
    stores = [SyncStore(client, "prop", config, reporter) for reporter in REPORTERS]
    model = BreakerModel("prop", config)
    now = 1_700_000_000_000
    admitted: list[tuple[str, int]] = []
    counter = 0
    seqs = [0, 0, 0]
    for step in sequence:
        kind = step[0]
        if kind == "admit":
            counter += 1
            call_id = f"w:{counter}"
            expected, actual = model.admit(now, call_id), stores[step[1]].admit(now, call_id)
            if expected.allowed:
                admitted.append((call_id, expected.generation))
        elif kind == "record":
            if not admitted:
                continue
            call_id, generation = admitted[step[1] % len(admitted)]
            if step[3]:
                generation -= 1  # a late outcome from an older generation
            who = step[4]
            seqs[who] += 1
            batch = (step[5], f"worker-{who}", seqs[who])
            expected = model.record(
                now,
                call_id,
                generation,
                step[2],
                reporter=REPORTERS[who],
                batch=batch[0],
                worker=batch[1],
                seq=batch[2],
            )
            actual = stores[who].record(now, call_id, generation, step[2], batch)
        elif kind == "report":
            who = step[1]
            seqs[who] += 1
            batch = (step[2], f"worker-{who}", seqs[who])
            local_until = now + step[4] if step[4] else 0
            expected = model.report(
                now,
                step[2],
                batch[1],
                batch[2],
                step[3],
                reporter=REPORTERS[who],
                local_until_ms=local_until,
            )
            actual = stores[who].report(now, batch, step[3], local_until)
        elif kind == "hold":
            expected = model.hold(now, step[1], "rate limited")
            actual = stores[0].hold(now, step[1], "rate limited")
        elif kind == "advance":
            now += step[1]
            continue
        elif kind == "control":
            expected = model.control(now, step[1], step[2], "because", "ops@desk")
            actual = stores[0].control(now, step[1], step[2], "because", "ops@desk")
        else:
            expected, actual = model.snapshot(now), stores[0].snapshot(now)
        assert actual == expected, f"after {step}"
    assert stores[0].snapshot(now) == model.snapshot(now)
    stored = [dataclasses.replace(entry, id="") for entry in stores[0].history(1000)]
    assert stored == list(model.history)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, sequence=steps)
def test_lua_on_fakeredis_agrees_with_core(
    config: BreakerConfig, sequence: list[tuple[Any, ...]]
) -> None:
    run_both(fakeredis.FakeRedis(), config, sequence)


@pytest.mark.integration
def test_lua_on_real_redis_agrees_with_core(redis_url: str) -> None:
    client = distbreaker.connect(redis_url, timeout=2.0)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(config=configs, sequence=steps)
    def check(config: BreakerConfig, sequence: list[tuple[Any, ...]]) -> None:
        run_both(client, config, sequence)

    check()
    client.close()
