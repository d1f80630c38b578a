"""The live dashboard (extra ``[dashboard]``): ``distbreaker dashboard`` serves one page of
every breaker under a prefix, updated through the events channel, with token-guarded
controls, a JSON listing and fleet-level Prometheus metrics.

``create_app(client, prefix, token)`` builds the Starlette app; ``serve(...)`` checks the
settings and runs it on uvicorn.
"""

from __future__ import annotations

try:
    from distbreaker.dashboard.app import create_app
    from distbreaker.dashboard.server import DashboardError, serve
except ImportError as error:  # pragma: no cover - depends on the installed extras
    if error.name in (None, "distbreaker") or str(error.name).startswith("distbreaker."):
        raise
    raise ImportError(
        f"the dashboard needs {error.name}: pip install 'distbreaker[dashboard]'", name=error.name
    ) from error

__all__ = ["DashboardError", "create_app", "serve"]
