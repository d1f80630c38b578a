"""Test and demo infrastructure; ``import distbreaker`` never imports it.

- ``distbreaker.testing.plugin``: the pytest plugin (fixtures ``redis_url``,
  ``breaker_factory``, ``flaky_upstream``, ``redis_container``), loaded by pytest through
  the ``[test]`` extra's entry point;
- ``distbreaker.testing.upstream``: ``FlakyUpstream``, an HTTP upstream on loopback whose
  failures a test switches on and off;
- ``distbreaker.testing.servers``: ``RedisServer``, a private ``redis-server`` on loopback;
- ``distbreaker.testing.containers``: Redis images built ``FROM scratch`` from the host's
  binaries, and testcontainers helpers.

The names below need no test framework; the plugin module imports pytest.
"""

from distbreaker.testing.servers import RedisServer, find_redis_server, free_port
from distbreaker.testing.upstream import FlakyUpstream

__all__ = ["FlakyUpstream", "RedisServer", "find_redis_server", "free_port"]
