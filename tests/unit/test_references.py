"""Image references against the distribution reference grammar."""

from __future__ import annotations

import pytest

from distbreaker.references import ImageReference, parse_reference

SHA256 = "sha256:" + "a" * 64

GOOD = [
    ("redis", ImageReference("redis", None, None)),
    ("redis:7", ImageReference("redis", "7", None)),
    ("redis:7.2-alpine", ImageReference("redis", "7.2-alpine", None)),
    ("library/redis:latest", ImageReference("library/redis", "latest", None)),
    ("docker.io/library/redis:7", ImageReference("docker.io/library/redis", "7", None)),
    ("localhost:5000/team/app:v1", ImageReference("localhost:5000/team/app", "v1", None)),
    ("Registry.Example.com/app", ImageReference("Registry.Example.com/app", None, None)),
    ("[::1]:5000/app:1", ImageReference("[::1]:5000/app", "1", None)),
    ("my_app__x.y-z---w/b:TAG_1.x-Y", ImageReference("my_app__x.y-z---w/b", "TAG_1.x-Y", None)),
    (f"redis@{SHA256}", ImageReference("redis", None, SHA256)),
    (f"redis:7@{SHA256}", ImageReference("redis", "7", SHA256)),
    ("redis:_underscore_first", ImageReference("redis", "_underscore_first", None)),
    ("a" * 255, ImageReference("a" * 255, None, None)),
    ("redis:" + "t" * 128, ImageReference("redis", "t" * 128, None)),
    ("app@sha512:" + "b" * 128, ImageReference("app", None, "sha512:" + "b" * 128)),
    ("app@custom+algo:" + "c" * 32, ImageReference("app", None, "custom+algo:" + "c" * 32)),
    ("distbreaker-test/tiny:1", ImageReference("distbreaker-test/tiny", "1", None)),
]

BAD = [
    "",
    "redis; rm -rf /",
    "$(id)",
    "`id`",
    "redis && id",
    "Redis:7",
    "REDIS",
    "redis:7\n",
    "\nredis",
    " redis",
    "redis ",
    "a" * 256,
    "registry.example.com/" + "a" * 235,  # 256 with the domain
    "redis:" + "t" * 129,
    "redis:7é",
    "redis:\uff567",  # fullwidth v: a Unicode word character, not ASCII
    "rédis",
    "redis:-7",
    "redis:.7",
    "redis:",
    "redis@",
    "redis@sha256:abc",
    "redis@sha256:" + "a" * 63,
    "redis@sha256:" + "A" * 64,
    "redis@" + "a" * 64,
    "a" * 64,
    "redis/",
    "/redis",
    "redis//x",
    "-redis",
    "redis-",
    "redis_",
    "re___dis",
    "redis..x",
    "localhost:port/app",
    "https://registry/app",
    "redis:7:8",
    "redis\x00",
    "../etc/passwd",
    "redis --help",
]


@pytest.mark.parametrize(("text", "expected"), GOOD, ids=[text[:40] for text, _ in GOOD])
def test_valid_references_parse_into_name_tag_and_digest(
    text: str, expected: ImageReference
) -> None:
    parsed = parse_reference(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize("text", BAD, ids=[repr(text[:40]) for text in BAD])
def test_invalid_references_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference"):
        parse_reference(text)


def test_a_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_reference(b"redis")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "pull_tag", "pinned"),
    [
        ("redis", "latest", "redis:latest"),
        ("redis:7", "7", "redis:7"),
        (f"redis:7@{SHA256}", SHA256, f"redis@{SHA256}"),
    ],
)
def test_pull_tag_prefers_the_digest(text: str, pull_tag: str, pinned: str) -> None:
    parsed = parse_reference(text)
    assert parsed.pull_tag == pull_tag
    assert parsed.pinned == pinned


def test_a_long_name_error_is_short_and_gives_the_length() -> None:
    with pytest.raises(ValueError, match="256 characters, at most 255") as caught:
        parse_reference("a" * 256)
    assert len(str(caught.value)) < 150
