"""Build the compose stack's images FROM scratch out of this host's files (no registry).

    python deploy/build_images.py [--redis-tag T] [--python-tag T]

- ``distbreaker/redis:local``: the host's ``redis-server`` and its libraries.
- ``distbreaker/python:local``: the interpreter running this script (its real binary, not a
  venv link), its standard library without the parts a worker never imports (tests, IDLE,
  tkinter, the static libpython), the libraries ``ldd`` lists for it and for every
  extension module, and, under ``/app``, distbreaker with its Lua scripts, its runtime
  dependencies (redis, pydantic) and ``deploy/*.py``. Files keep their host paths, so the
  interpreter finds its standard library where it was built to look.

Prints each tag and image size. Run it with the project's venv Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from distbreaker.testing.containers import (
    REDIS_IMAGE,
    build_redis_image,
    build_scratch_image,
    with_libraries,
)

PYTHON_IMAGE = "distbreaker/python:local"
STABLE_INTERPRETER = "/usr/local/bin/python3"
PROJECT = Path(__file__).resolve().parent.parent
# What the workers import beyond the standard library (distbreaker's runtime dependencies).
RUNTIME_PACKAGES = (
    "redis",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
)
STDLIB_LEFT_OUT = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "site-packages",
        "pydoc_data",
    }
)

UNUSED_EXTENSIONS = ("_tkinter", "_test", "_ctypes_test", "_xx", "xx")


def files_under(
    root: Path, image_root: str, *, skip: frozenset[str] = frozenset()
) -> dict[str, Path]:
    """Every file below ``root`` (but not under a top-level name in ``skip``) -> image path."""
    found: dict[str, Path] = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] in skip or relative.parts[0].startswith("config-"):
            continue
        if path.is_file() and not _unwanted(path):
            found[f"{image_root}/{relative.as_posix()}"] = path
    return found


def _unwanted(path: Path) -> bool:
    # optimised bytecode (opt-1, opt-2) is never used without -O; plain .pyc saves start-up
    if ".opt-" in path.name or path.suffix in {".a", ".exe"}:
        return True
    # extension modules of the parts left out (Tk would bring X11 and fonts along)
    return path.suffix == ".so" and path.name.startswith(UNUSED_EXTENSIONS)


def package_files(names: Iterable[str], image_root: str) -> dict[str, Path]:
    """The installed files of top-level modules or packages, placed under ``image_root``."""
    found: dict[str, Path] = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{name} is not installed in this Python")
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            folder = origin.parent
            found.update(files_under(folder, f"{image_root}/{folder.name}"))
        else:
            found[f"{image_root}/{origin.name}"] = origin
    return found


def python_image_files() -> dict[str, Path]:
    interpreter = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = with_libraries([interpreter])
    # a stable name too: the copy finds the standard library through the built-in prefix
    files[STABLE_INTERPRETER] = interpreter
    files.update(files_under(stdlib, str(stdlib), skip=STDLIB_LEFT_OUT))
    extensions = [path for path in files.values() if path.suffix == ".so"]
    files.update(with_libraries(extensions))
    site = package_files(RUNTIME_PACKAGES, "/app/site")
    files.update(site)
    files.update(with_libraries([p for p in site.values() if p.suffix == ".so"]))
    project = files_under(PROJECT / "distbreaker", "/app/distbreaker")
    # the checkout's bytecode changes with every test run: leave it out, keep builds cached
    files.update({path: host for path, host in project.items() if "__pycache__" not in path})
    files.update(files_under(PROJECT / "lua", "/app/lua"))
    for script in (PROJECT / "deploy").glob("*.py"):
        files[f"/app/deploy/{script.name}"] = script
    return files


def build_python_image(tag: str = PYTHON_IMAGE) -> str:
    return build_scratch_image(
        tag,
        python_image_files(),
        entrypoint=[STABLE_INTERPRETER],
        environment={
            "PYTHONPATH": "/app/site:/app",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-tag", default=REDIS_IMAGE)
    parser.add_argument("--python-tag", default=PYTHON_IMAGE)
    args = parser.parse_args()
    for tag in (build_redis_image(args.redis_tag), build_python_image(args.python_tag)):
        print(tag)


if __name__ == "__main__":
    main()
