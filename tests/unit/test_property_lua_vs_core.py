"""Property test: the Lua scripts and core.py agree on every reply for the same sequences."""

from __future__ import annotations

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
)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("admit")),
        st.tuples(
            st.just("record"),
            st.integers(0, 50),
            st.sampled_from(["failure", "failure", "success", "success", "release"]),
            st.booleans(),
        ),
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
    max_size=60,
)


def run_both(client: Any, config: BreakerConfig, sequence: list[tuple[Any, ...]]) -> None:
    config = config.model_copy(update={"key_prefix": f"prop-{uuid.uuid4().hex[:10]}"})
    store = SyncStore(client, "prop", config)
    model = BreakerModel("prop", config)
    now = 1_700_000_000_000
    admitted: list[tuple[str, int]] = []
    counter = 0
    for step in sequence:
        kind = step[0]
        if kind == "admit":
            counter += 1
            call_id = f"w:{counter}"
            expected, actual = model.admit(now, call_id), store.admit(now, call_id)
            if expected.allowed:
                admitted.append((call_id, expected.generation))
        elif kind == "record":
            if not admitted:
                continue
            call_id, generation = admitted[step[1] % len(admitted)]
            if step[3]:
                generation -= 1  # a late outcome from an older generation
            expected = model.record(now, call_id, generation, step[2])
            actual = store.record(now, call_id, generation, step[2])
        elif kind == "advance":
            now += step[1]
            continue
        elif kind == "control":
            expected = model.control(now, step[1], step[2], "because")
            actual = store.control(now, step[1], step[2], "because")
        else:
            expected, actual = model.snapshot(now), store.snapshot(now)
        assert actual == expected, f"after {step}"
    assert store.snapshot(now) == model.snapshot(now)


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
