"""The command's own options and usage errors: ``--version``, ``-h``, one-line errors."""

from __future__ import annotations

import importlib.metadata

import pytest

from distbreaker.cli import run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("option", ["--version", "-V"])
def test_version_prints_the_installed_version(
    capsys: pytest.CaptureFixture[str], option: str
) -> None:
    code, out, err = cli(capsys, option)
    assert code == 0
    assert out == f"distbreaker {importlib.metadata.version('distbreaker')}\n"
    assert err == ""


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["status", "-h"], ["demo", "-h"]])
def test_short_and_long_help_print_the_usage(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 0
    assert "Usage: distbreaker" in out
    assert err == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["status", "--nope"], "No such option: --nope (see 'distbreaker status --help')"),
        (["stauts"], "No such command 'stauts'. Did you mean 'status'? (see 'distbreaker --help')"),
        (["open"], "Missing argument 'NAME'. (see 'distbreaker open --help')"),
        (["demo", "--workers", "abc"], "Invalid value for '--workers': "),
        (["watch", "--count", "0"], "Invalid value for '--count': "),
    ],
)
def test_a_usage_error_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"distbreaker: error: {line}")
    assert "Usage:" not in err


def test_no_arguments_show_the_help_and_no_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 2
    assert "Usage: distbreaker" in out
    assert err == ""


def test_the_help_names_the_dashboard_extra(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = cli(capsys, "--help")
    assert "(the dashboard extra)" in " ".join(out.replace("│", " ").split())
