"""Soak the engine's crash recovery: kill -9 under load from three gateway processes, restart,
check (tests/support/crash.py), 1,000 times by default.

    python tools/crash_soak.py [--cycles N] [--seed S] [--dir DIR]

Prints a line per cycle (acknowledged orders so far, journal records); exits non-zero at the
first cycle that loses an acknowledged order, applies one twice, or restarts to a state that is
not its journal's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.crash import CrashReport, crash_cycles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(report: CrashReport) -> None:
        print(
            f"cycle {report.cycles}/{args.cycles}: {report.acknowledged:,} orders acknowledged, "
            f"{report.journaled:,} journal records, {time.monotonic() - started:.0f} s",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="crash-soak-") as scratch:
        work = Path(args.dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        report = crash_cycles(work, args.cycles, args.seed, progress)
    print(f"passed: {report.cycles} kill -9 restarts, nothing lost or doubled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
