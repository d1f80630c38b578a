"""Repository URLs: the accepted forms, and everything else refused before any request."""

from __future__ import annotations

import pytest

from distbreaker.github import Repository, parse_repository


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/widgets",
        "https://github.com/octo/widgets.git",
        "https://github.com/octo/widgets/",
        "https://GitHub.com/octo/widgets",
        "git@github.com:octo/widgets.git",
        "git@github.com:octo/widgets",
        "ssh://git@github.com/octo/widgets.git",
        "ssh://git@github.com/octo/widgets",
        "octo/widgets",
        "octo/widgets.git",
    ],
)
def test_accepted_forms_name_the_same_repository(url: str) -> None:
    assert parse_repository(url) == Repository("octo", "widgets")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("octo/.github", Repository("octo", ".github")),
        ("my-org/my_repo.v2", Repository("my-org", "my_repo.v2")),
        ("a/b", Repository("a", "b")),
        ("0/x-y_z.1", Repository("0", "x-y_z.1")),
    ],
)
def test_names_github_allows(url: str, expected: Repository) -> None:
    assert parse_repository(url) == expected
    assert str(expected) == expected.full_name


def test_enterprise_web_host() -> None:
    ghe = "ghe.example.com"
    assert parse_repository("https://ghe.example.com/team/app.git", ghe).full_name == "team/app"
    assert parse_repository("git@ghe.example.com:team/app.git", ghe).full_name == "team/app"
    with pytest.raises(ValueError, match=r"ghe\.example\.com"):
        parse_repository("https://github.com/team/app", ghe)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "octo",
        "octo/",
        "/widgets",
        "octo/widgets/",
        "octo/widgets/extra",
        "https://gitlab.com/octo/widgets",
        "https://github.com.evil.com/octo/widgets",
        "https://evil.com/github.com/octo/widgets",
        "https://www.github.com/octo/widgets",
        "http://github.com/octo/widgets",
        "https://github.com:8443/octo/widgets",
        "https://github.com/octo/widgets/tree/main",
        "https://github.com/octo/widgets?tab=readme",
        "https://github.com/octo/widgets#readme",
        "https://github.com/octo",
        "github.com/octo/widgets",
        "git@gitlab.com:octo/widgets.git",
        "git@github.com/octo/widgets.git",
        "ssh://git@github.com:22/octo/widgets.git",
        "ssh://root@github.com/octo/widgets.git",
        "octo/..",
        "octo/.",
        "../widgets",
        "octo/../../etc/passwd",
        "octo/%2e%2e",
        "octo/widgets;rm -rf /",
        "octo/$(id)",
        "octo/`id`",
        "octo/widgets|cat",
        "octo/widgets&&ls",
        "octo/wid gets",
        " octo/widgets",
        "octo/widgets\n",
        "octo/widgets\x00",
        "-octo/widgets",
        "octo/widgét",
        "\uff4f\uff43\uff54\uff4f/widgets",  # fullwidth letters
        "a" * 40 + "/widgets",
        "octo/" + "w" * 101,
        "octo/" + "w" * 600,
        "file:///etc/passwd",
    ],
)
def test_everything_else_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"github\.com|repository"):
        parse_repository(url)


@pytest.mark.parametrize("value", [None, 42, b"octo/widgets"])
def test_non_strings_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        parse_repository(value)  # type: ignore[arg-type]


def test_refusal_does_not_echo_credentials() -> None:
    with pytest.raises(ValueError) as caught:
        parse_repository("https://user:hunter2@github.com/octo/widgets")
    assert "hunter2" not in str(caught.value)


def test_refusal_redacts_tokens() -> None:
    token = "ghp_" + "A1b2" * 9
    with pytest.raises(ValueError) as caught:
        parse_repository(f"https://{token}@github.com/octo/widgets")
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://{token}@github.com/octo/widgets",
        "https://x-access-token:{token}@github.com/octo/widgets",
        "https://github.com/octo/widgets?access_token={token}",
        "https://github.com/{token}/widgets/extra",
        "{token}",
    ],
)
def test_refusal_never_echoes_a_classic_40_hex_token(url: str) -> None:
    """Before: a classic token (40 hex digits, no ``ghp_`` prefix) came back in the error."""
    token = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ValueError) as caught:
        parse_repository(url.format(token=token))
    assert token not in str(caught.value)
    assert token[:12] not in str(caught.value)


def test_a_rejected_ssh_url_is_still_shown() -> None:
    with pytest.raises(ValueError) as caught:
        parse_repository("ssh://git@github.com/octo/widgets/extra")
    assert "ssh://git@github.com/octo/widgets/extra" in str(caught.value)
