"""From the core wheel alone (redis + pydantic), every part that needs an extra says which.

The wheel is installed with ``--no-deps`` into a fresh venv; the core dependencies come from
this test's environment through a directory holding only their top-level modules, so no
extra is importable by accident (checked first).
"""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CORE = ("redis", "pydantic")
TIMEOUT = 120.0


@dataclass(frozen=True)
class CoreInstall:
    python: Path
    command: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in argv],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env,
            timeout=TIMEOUT,
        )


def _closure(names: tuple[str, ...]) -> set[str]:
    """The distributions ``names`` need at run time here (no extras), themselves included."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _link_top_level(distributions: set[str], into: Path) -> None:
    """Symlink each distribution's top-level modules and packages into ``into``."""
    into.mkdir()
    for name in distributions:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", "__pycache__")) or top == "..":
                continue
            source = Path(str(dist.locate_file(top)))
            target = into / top
            if source.exists() and not target.exists():
                target.symlink_to(source)


@pytest.fixture(scope="module")
def core_install(tmp_path_factory: pytest.TempPathFactory) -> CoreInstall:
    base = tmp_path_factory.mktemp("core-only")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("distbreaker-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=TIMEOUT,
    )
    site = base / "core-site"
    _link_top_level(_closure(CORE), site)
    env = {"PYTHONPATH": str(site), "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin"}
    return CoreInstall(python, env_dir / "bin" / "distbreaker", env, base)


def test_the_core_install_has_no_extra_by_accident(core_install: CoreInstall) -> None:
    probe = (
        "import importlib.util as u, distbreaker, sys\n"
        "assert 'site-packages' in distbreaker.__file__, distbreaker.__file__\n"
        "print(*[m for m in ('httpx', 'typer', 'docker', 'prometheus_client', 'requests',"
        " 'jwt', 'starlette', 'fakeredis', 'pytest') if u.find_spec(m)])"
    )
    result = core_install.run(core_install.python, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    "argv",
    [["status"], ["--version"], ["-h"], ["demo"]],
    ids=["status", "version", "help", "demo"],
)
def test_the_command_without_the_cli_extra_says_so_in_one_line(
    core_install: CoreInstall, argv: list[str]
) -> None:
    for result in (
        core_install.run(core_install.command, *argv),
        core_install.run(core_install.python, "-m", "distbreaker", *argv),
    ):
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "distbreaker: error: the distbreaker command needs the [cli] extra: "
            "pip install 'distbreaker[cli]'"
        ]


@pytest.mark.parametrize(
    ("statement", "extra"),
    [
        ("from distbreaker.github import GitHubClient", "github"),
        ("import distbreaker.github", "github"),
        ("from distbreaker.docker import DockerImages", "docker"),
        ("from distbreaker.metrics import enable_metrics", "metrics"),
        ("from distbreaker.httpx import BreakerTransport", "httpx"),
        ("from distbreaker.requests import BreakerAdapter", "requests"),
        ("from distbreaker.dashboard import serve", "dashboard"),
        ("from distbreaker.cli import app", "cli"),
    ],
)
def test_an_import_without_its_extra_names_the_extra_to_install(
    core_install: CoreInstall, statement: str, extra: str
) -> None:
    result = core_install.run(core_install.python, "-c", statement)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), result.stderr
    assert last.endswith(f"pip install 'distbreaker[{extra}]'"), last


def test_the_core_parts_import_without_any_extra(core_install: CoreInstall) -> None:
    statement = (
        "import distbreaker, distbreaker.diagnostics, distbreaker.fleet, distbreaker.testing\n"
        "from distbreaker import Breaker, BreakerConfig, create_network_operation\n"
        "print('ok')"
    )
    result = core_install.run(core_install.python, "-c", statement)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
