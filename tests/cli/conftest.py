"""Fixtures the cxe command tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import cxe


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory) -> Path:
    """A demo day's trade log (the embedded market, 2026-11-24)."""
    out = tmp_path_factory.mktemp("demo")
    result = cxe("demo", "--in-process", "--steps", "200", "--seed", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out / "trades.log"
