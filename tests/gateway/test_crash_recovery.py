"""Crash recovery with real processes: kill -9 the engine at random moments while three
gateway processes load it, restart it, and require after every restart that each
acknowledged order is in the journal at its sequence number, that nothing was applied twice,
and that the engine's state hash equals a fresh replay of its journal (tests/support/crash.py;
tools/crash_soak.py runs the same for 1,000 cycles)."""

from __future__ import annotations

import pytest

from tests.support.crash import crash_cycles

pytestmark = pytest.mark.slow


def test_twenty_kill_nine_restarts_under_load_lose_and_double_nothing(tmp_path):
    report = crash_cycles(tmp_path, cycles=20, seed=20, day_every=8)
    assert report.cycles == 20
    assert report.days == 3  # kills fell on both sides of two day ends
    assert report.acknowledged > 100  # the load really ran through the crashes
    assert report.journaled >= report.acknowledged


@pytest.mark.parametrize("arguments", [["--cycles", "0"], ["--cycles", "-3"], ["--day-every", "0"],
                                       ["--day-every", "x"]])  # fmt: skip
def test_the_soak_refuses_counts_below_one_before_it_starts_anything(arguments):
    import subprocess
    import sys
    from pathlib import Path

    soak = Path(__file__).resolve().parents[2] / "tools" / "crash_soak.py"
    done = subprocess.run([sys.executable, str(soak), *arguments], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "is not a whole number of at least 1" in done.stderr
    assert "Traceback" not in done.stderr
