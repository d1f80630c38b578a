"""The package's shape: what ``import distbreaker`` loads, and where each concept lives."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("pytest", "typer", "rich", "httpx", "docker", "fakeredis", "prometheus_client")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_import_distbreaker_loads_neither_test_infrastructure_nor_extras() -> None:
    modules = loaded_after("import distbreaker")
    ours = {m for m in modules if m.startswith("distbreaker")}
    assert not {m for m in ours if m.startswith(("distbreaker.testing", "distbreaker.cli"))}
    assert not {m for m in modules if m.split(".")[0] in OPTIONAL}


def test_the_testing_package_needs_no_test_framework() -> None:
    modules = loaded_after("from distbreaker.testing import FlakyUpstream, RedisServer")
    assert "pytest" not in modules


def test_the_version_comes_from_the_installed_metadata() -> None:
    from importlib.metadata import version

    import distbreaker

    assert distbreaker.__version__ == version("distbreaker")
