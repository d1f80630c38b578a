"""The Lua scripts ship inside the wheel: install it into a fresh venv and trip a breaker."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, distbreaker
from pathlib import Path
from distbreaker import Breaker, BreakerConfig
from distbreaker.store import _lua_dir
assert "site-packages" in str(_lua_dir()), _lua_dir()
assert not str(Path(distbreaker.__file__)).startswith(sys.argv[2])
b = Breaker("wheel", distbreaker.connect(sys.argv[1]),
            BreakerConfig(failure_threshold=1, key_prefix="wheel-test", consistency="strict"))
b.reset()
def down():
    raise ConnectionError("down")
print(b.execute(down, fallback=lambda: "fallback"))
print(b.status().state)
b.reset()
"""


def test_wheel_contains_lua_and_works_outside_the_checkout(redis_url: str, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("distbreaker-*.whl"))
    listing = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("admit", "record", "control", "status", "_lib"):
        assert f"distbreaker/lua/{name}.lua" in listing
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # core dependencies come from the test's own environment, read-only
    site = subprocess.run(
        [
            sys.executable,
            "-c",
            "import redis, pydantic, os; print(os.path.dirname(os.path.dirname(redis.__file__)))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = subprocess.run(
        [str(python), "-c", SCRIPT, redis_url, str(ROOT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fallback", "open"]
