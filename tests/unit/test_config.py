"""Bad input is refused before any Redis call, with an error naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from distbreaker import Breaker, BreakerConfig, RetryPolicy
from distbreaker.config import validate_name


class NoRedis:
    """Fails the test if the breaker touches Redis at all."""

    def register_script(self, script: str) -> Any:
        return self._touched

    def _touched(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Redis was called")


@pytest.mark.parametrize(
    "name", ["", "has space", "{tagged}", "a}b", "x" * 129, "naïve", "tab\t", "new\nline", None, 7]
)
def test_invalid_names_are_value_errors_before_io(name: Any) -> None:
    with pytest.raises(ValueError, match="invalid breaker name"):
        Breaker(name, NoRedis())


@pytest.mark.parametrize("name", ["github", "docker-registry", "api.v2:eu_west", "x" * 128])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("window", 0),
        ("window", -1),
        ("reset_timeout", 0),
        ("half_open_max_calls", 0),
        ("success_threshold", 0),
        ("probe_timeout", 0),
        ("slow_call_threshold", 0),
        ("key_prefix", "has space"),
        ("key_prefix", "{x}"),
        ("on_store_error", "ignore"),
        ("consistency", "eventual"),
        ("cache_ttl", 0),
        ("window", 0.0001),
        ("unknown_field", 1),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        BreakerConfig(**{field: value})
    assert field in str(caught.value) or "window" in str(caught.value)


def test_config_is_frozen_and_has_the_documented_defaults() -> None:
    config = BreakerConfig()
    assert (config.failure_threshold, config.window, config.reset_timeout) == (5, 120.0, 60.0)
    assert (config.on_store_error, config.consistency, config.cache_ttl) == (
        "fail_open",
        "cached",
        1.0,
    )
    with pytest.raises(ValidationError):
        config.failure_threshold = 2  # type: ignore[misc]


def test_config_must_be_a_breaker_config() -> None:
    with pytest.raises(TypeError):
        Breaker("x", NoRedis(), {"failure_threshold": 1})  # type: ignore[arg-type]


def test_retry_policy_validation() -> None:
    with pytest.raises(ValidationError, match="max_delay"):
        RetryPolicy(base_delay=10, max_delay=1)
    with pytest.raises(ValidationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
