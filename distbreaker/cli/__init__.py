"""The ``distbreaker`` command: inspect, watch and steer shared breakers; run the demo.

Tables with colour on a terminal, plain text when piped. Every problem an operator can
cause or meet (a bad URL, an unreachable Redis, an unknown breaker) ends in one line on
stderr and a non-zero exit: 1 for a failure, 2 for a usage error, never a traceback.
Without the ``[cli]`` extra the command says so in one line.

``_app`` holds the typer commands and ``run``, ``_render`` the tables and lines,
``_watch`` the live watcher, ``_demo`` the self-contained demo.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from distbreaker.errors import missing_extra

# What the [cli] extra brings: a ModuleNotFoundError for one of these means "install it".
_EXTRA_MODULES = frozenset({"typer", "click", "rich", "fakeredis"})
_EXPORTS = {
    "app": "distbreaker.cli._app",
    "run": "distbreaker.cli._app",
    "CliError": "distbreaker.cli._app",
    "ago": "distbreaker.cli._render",
    "event_line": "distbreaker.cli._render",
    "plain_table": "distbreaker.cli._render",
    "resets_in": "distbreaker.cli._render",
    "status_row": "distbreaker.cli._render",
}

__all__ = ["main", *sorted(_EXPORTS)]


def _missing_extra(error: ModuleNotFoundError) -> bool:
    return (error.name or "").split(".")[0] in _EXTRA_MODULES


def main() -> None:
    """The console script: run the command, or say in one line which extra it needs."""
    try:
        from distbreaker.cli._app import run
    except ModuleNotFoundError as error:
        if not _missing_extra(error):
            raise
        print(
            f"distbreaker: error: {missing_extra('cli', 'the distbreaker command')}",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(run())


def __getattr__(name: str) -> Any:
    """``from distbreaker.cli import run, app, ...`` (imported on first use)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'distbreaker.cli' has no attribute {name!r}")
    try:
        module = importlib.import_module(_EXPORTS[name])
    except ModuleNotFoundError as error:
        if not _missing_extra(error):
            raise
        raise missing_extra("cli", "distbreaker.cli") from error
    return getattr(module, name)
