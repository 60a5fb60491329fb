"""Soak the engine's crash recovery: kill -9 under load from three gateway processes, restart,
check (tests/support/crash.py), 1,000 times by default.

    python tools/crash_soak.py [--cycles N] [--seed S] [--dir DIR] [--day-every K]

Prints a line per cycle (acknowledged orders so far, journal records, the trading day); exits
non-zero at the first cycle that loses an acknowledged order, applies one twice, or restarts
to a state that is not its journal's. Every --day-every cycles the operator closes the day and
opens the next (tests/support/crash.py), so the state stays a day's size over 1,000 cycles.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.crash import DAY_EVERY, CrashReport, crash_cycles


def positive(text: str) -> int:
    """A whole number of at least 1, or argparse's usage error naming it."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--cycles", type=positive, default=1000, help="kill -9 restarts (%(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the order flow and kill moments (%(default)s)"
    )
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument(
        "--day-every", type=positive, default=DAY_EVERY, help="cycles per trading day (%(default)s)"
    )
    args = parser.parse_args()
    started = time.monotonic()

    def progress(report: CrashReport) -> None:
        print(
            f"cycle {report.cycles}/{args.cycles}: {report.acknowledged:,} orders acknowledged, "
            f"{report.journaled:,} journal records, day {report.days}, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="crash-soak-") as scratch:
        work = Path(args.dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        report = crash_cycles(work, args.cycles, args.seed, progress, args.day_every)
    print(f"passed: {report.cycles} kill -9 restarts, nothing lost or doubled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
