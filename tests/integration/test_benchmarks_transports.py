"""``python -m benchmarks.transports`` runs end to end and prints both tables (tiny budget)."""

from __future__ import annotations

import pytest

from benchmarks import transports

pytestmark = pytest.mark.integration


def test_the_transport_benchmark_prints_a_row_per_client_in_both_tables(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert transports.main(["--redis-url", redis_url, "--requests", "8"]) == 0
    out = capsys.readouterr().out
    assert "## Loopback" in out
    assert "## In memory" in out
    for client in transports.CLIENTS:
        rows = [line for line in out.splitlines() if line.startswith(f"| {client} |")]
        assert len(rows) == 2, out
        cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
        assert len(cells) == 10
        assert float(cells[8]) == 1.0  # strict: one script run per request
