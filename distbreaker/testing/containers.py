"""Build small container images ``FROM scratch`` out of the host's own binaries.

For air-gapped hosts and CI without a registry: ``build_redis_image()`` puts the host's
``redis-server`` and the shared libraries ``ldd`` lists into an image, through the Docker
SDK with an in-memory tar context (no shell, no Dockerfile on disk, no pull), and returns
the tag. ``build_scratch_image()`` does the same for any set of host files.

Every file keeps its host path inside the image, so the binary finds its libraries (and
Python its standard library) exactly where they were built to look. ``ldd`` may run the
binary's dynamic loader: use it on trusted binaries only.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

REDIS_IMAGE = "distbreaker/redis:local"
REDIS_IMAGE_ENV = "DISTBREAKER_TEST_REDIS_IMAGE"
# Only where no image can be built from the host: the engine pulls it as usual.
PULLED_REDIS_IMAGE = "redis:7-alpine"
REDIS_COMMAND: tuple[str, ...] = (
    "--bind",
    "0.0.0.0",  # noqa: S104 - inside the container; the engine decides what is published
    "--protected-mode",
    "no",
    "--save",
    "",
    "--appendonly",
    "no",
)

# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
_LDD_LINE = re.compile(r"^\s*(?:(?P<soname>\S+)\s+=>\s+)?(?P<path>\S+)(?:\s+\(0x[0-9a-f]+\))?\s*$")


class ImageBuildError(RuntimeError):
    """An image could not be built: a missing binary or library, or the engine refused."""


def shared_libraries(binary: str | os.PathLike[str]) -> list[Path]:
    """The shared libraries ``ldd`` lists for ``binary``, the dynamic loader included.

    A static binary has none; a library ``ldd`` cannot find raises ``ImageBuildError``.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ImageBuildError("ldd is not on PATH: cannot list the libraries to copy")
    result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
        [ldd, os.fspath(binary)], capture_output=True, text=True, check=False
    )
    if "not a dynamic executable" in result.stdout + result.stderr:
        return []
    if result.returncode != 0:
        raise ImageBuildError(f"ldd {binary} failed: {result.stderr.strip() or result.stdout}")
    return _parse_ldd(result.stdout, binary)


def _parse_ldd(output: str, binary: str | os.PathLike[str]) -> list[Path]:
    libraries: list[Path] = []
    for line in output.splitlines():
        if "not found" in line:
            raise ImageBuildError(f"{binary}: ldd cannot find {line.split()[0]}")
        match = _LDD_LINE.match(line)
        if match is None or not match.group("path").startswith("/"):
            continue  # linux-vdso.so.1 lives in the kernel, not on disk
        libraries.append(Path(match.group("path")))
    return libraries


def with_libraries(binaries: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """``binaries`` and every library they need, each mapped to its own host path."""
    files: dict[str, Path] = {}
    for binary in binaries:
        path = Path(binary)
        files[str(path)] = path
        for library in shared_libraries(path):
            files[str(library)] = library
    return files


def scratch_context(
    files: Mapping[str, Path],
    *,
    entrypoint: Sequence[str],
    command: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    ports: Sequence[int] = (),
    labels: Mapping[str, str] | None = None,
) -> io.BytesIO:
    """A tar build context: a ``FROM scratch`` Dockerfile and ``files`` under ``rootfs/``.

    ``files`` maps a path in the image to a host file; symlinks are copied as the files
    they point to. Files belong to root and keep their permission bits and modification
    times (Python's bytecode caches are checked against their sources' times).
    """
    lines = ["FROM scratch", "COPY rootfs/ /"]
    for key, value in (environment or {}).items():
        lines.append(f"ENV {key}={json.dumps(value)}")
    for key, value in (labels or {}).items():
        lines.append(f"LABEL {json.dumps(key)}={json.dumps(value)}")
    lines.extend(f"EXPOSE {port}" for port in ports)
    lines.append(f"ENTRYPOINT {json.dumps(list(entrypoint))}")
    if command:
        lines.append(f"CMD {json.dumps(list(command))}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", ("\n".join(lines) + "\n").encode(), 0o644)
        for image_path in sorted(files):
            _add_file(tar, image_path, files[image_path])
    buffer.seek(0)
    return buffer


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, image_path: str, host_path: Path) -> None:
    if not PurePosixPath(image_path).is_absolute():
        raise ImageBuildError(f"image paths must be absolute: {image_path!r}")
    real = host_path.resolve(strict=True)
    if not real.is_file():
        raise ImageBuildError(f"{host_path} is not a file")
    info = tarfile.TarInfo("rootfs" + image_path)
    stat = real.stat()
    info.size = stat.st_size
    info.mode = stat.st_mode & 0o755
    info.mtime = int(stat.st_mtime)
    with real.open("rb") as handle:
        tar.addfile(info, handle)


def build_scratch_image(
    tag: str,
    files: Mapping[str, Path],
    *,
    entrypoint: Sequence[str],
    command: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    ports: Sequence[int] = (),
    client: Any = None,
    timeout: float = 300.0,
) -> str:
    """Build ``tag`` from ``files`` on the Docker engine (never pulls); returns ``tag``."""
    import docker
    import docker.errors

    context = scratch_context(
        files,
        entrypoint=entrypoint,
        command=command,
        environment=environment,
        ports=ports,
        labels={"org.distbreaker.built-from": "host files, FROM scratch"},
    )
    engine = client if client is not None else docker.from_env(timeout=int(timeout))
    try:
        previous = _image_id(engine, tag)
        image, _ = engine.images.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, pull=False, timeout=timeout
        )
        if previous is not None and previous != image.id:
            _remove_quietly(engine, previous)
    except (docker.errors.BuildError, docker.errors.APIError) as error:
        raise ImageBuildError(f"building {tag} failed: {error}") from error
    finally:
        if client is None:
            engine.close()
    return tag


def _image_id(engine: Any, tag: str) -> str | None:
    import docker.errors

    try:
        return str(engine.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def _remove_quietly(engine: Any, image_id: str) -> None:
    """Drop the image a rebuild replaced, so rebuilds do not pile up; keep it if in use."""
    import docker.errors

    # APIError: a container still uses it, or another tag names it
    with contextlib.suppress(docker.errors.APIError):
        engine.images.remove(image_id)


def find_redis_server() -> Path:
    """The host's ``redis-server``: on PATH, else Debian's ``/usr/bin/redis-server``."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    path = Path(found)
    if not path.is_file():
        raise ImageBuildError("redis-server is not installed on this host")
    return path


def build_redis_image(
    tag: str = REDIS_IMAGE,
    *,
    binary: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> str:
    """A Redis image ``FROM scratch``: the host's ``redis-server`` and its libraries.

    It listens on 6379 on every interface of the container, with no persistence and
    protected mode off (the engine decides which ports reach the host). Returns ``tag``.
    """
    server = Path(binary) if binary is not None else find_redis_server()
    return build_scratch_image(
        tag,
        with_libraries([server]),
        entrypoint=[str(server)],
        command=REDIS_COMMAND,
        ports=[6379],
        client=client,
    )


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or ``None`` when one answers."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install 'distbreaker[test]')"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # DockerException, requests errors: all mean "no engine"
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    return None


def _redis_container_class() -> Any:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers before 4.10 had it at the old path
        from testcontainers.redis import RedisContainer
    return RedisContainer


def _disable_unreachable_reaper() -> None:
    """Turn off Ryuk when its image is not on the engine and the user said nothing."""
    if "TESTCONTAINERS_RYUK_DISABLED" in os.environ:
        return
    import docker
    import docker.errors
    from testcontainers.core.config import testcontainers_config

    client = docker.from_env(timeout=5)
    try:
        client.images.get(testcontainers_config.ryuk_image)
    except docker.errors.ImageNotFound:
        testcontainers_config.ryuk_disabled = True
    finally:
        client.close()


def redis_test_image() -> str:
    """``$DISTBREAKER_TEST_REDIS_IMAGE``; else an image built from the host's Linux
    ``redis-server``; else (no binary, no ``ldd``: macOS, say) the registry's ``redis``."""
    image = os.environ.get(REDIS_IMAGE_ENV)
    if image:
        return image
    try:
        return build_redis_image()
    except ImageBuildError:
        return PULLED_REDIS_IMAGE


def start_redis_container(image: str | None = None) -> Any:
    """A started testcontainers ``RedisContainer``; the caller must ``stop()`` it."""
    _disable_unreachable_reaper()
    container = _redis_container_class()(image or redis_test_image())
    try:
        container.start()
    except BaseException:
        with contextlib.suppress(Exception):  # it may never have been created
            container.stop()
        raise
    return container


def container_url(container: Any) -> str:
    host = container.get_container_host_ip()
    return f"redis://{host}:{container.get_exposed_port(container.port)}/0"
