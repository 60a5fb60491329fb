"""capture_live: trades/s captured into the clearing store from a live engine.

A real `cxe serve` (fsync on) and a real `cxe capture --until-day-closed` process; gateway "mm"
sends crossing orders in records frames (one trade per pair), then the day is closed. The
figure is the trades stored per second from the first order sent to the capture's exit (all
trades and the day's records committed), with the engine printing them at the same time;
`engine` is the rate the engine printed them at (the bound on the live figure),
`catch_up` is a second, fresh store capturing the whole day from the engine's trade log
over the stream at once. The reference is TradeStore.capture of the same trade log read from
the file (what `cxe clear --trades` does). The store must end equal to the trade log.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from engine.clearing.capture import TradeStore, capture_file, read_trade_log
from engine.protocol import Close, EndOfDay, Trade
from tests.cli.test_cli import cxe_command
from tests.support.engine import EngineProcess
from tests.support.trading import CODES, mm_client, trade


def _capture(data: Path, store: Path) -> float:
    """Run `cxe capture --until-day-closed` to its end; the seconds it took."""
    command = [*cxe_command(), "capture", "--data", str(data), "--store", str(store)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--until-day-closed"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"cxe capture failed: {done.stderr}")
    return time.perf_counter() - started


def _stored(store: Path) -> list[Trade]:
    trades = TradeStore(store)
    try:
        return [t for day in trades.days() for t in trades.trades_of(day)]
    finally:
        trades.close()


def capture_benchmark(trades: int = 20_000) -> dict:
    with tempfile.TemporaryDirectory(prefix="capture-live-") as tmp:
        root = Path(tmp)
        data, store = root / "data", root / "live.db"
        with EngineProcess(data) as engine:
            engine.open_market(*CODES)
            command = [*cxe_command(), "capture", "--data", str(data), "--store", str(store)]
            capture = subprocess.Popen(
                [*command, "--until-day-closed"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                capture.stdout.readline()  # "capturing from ...": it is up
                gateway = mm_client(engine)
                started = time.perf_counter()
                trade(gateway, "bench", trades, frame=2_000, records=True, codes=CODES)
                printed = time.perf_counter() - started
                engine.admin(*[Close(code) for code in CODES], EndOfDay())
                if capture.wait(600) != 0:
                    raise RuntimeError(f"cxe capture failed: {capture.stdout.read()}")
                live = time.perf_counter() - started
            finally:
                if capture.poll() is None:  # the run failed: leave nothing running
                    capture.kill()
                    capture.wait(30)
                capture.stdout.close()
            catch_up = _capture(data, root / "catch-up.db")
            gateway.close()
            engine.stop()
        log = data / "trades.log"
        expected = [t for t in read_trade_log(log) if isinstance(t, Trade)]
        if len(expected) != trades or _stored(store) != expected:
            raise RuntimeError("the captured store differs from the engine's trade log")
        if _stored(root / "catch-up.db") != expected:
            raise RuntimeError("the caught-up store differs from the engine's trade log")
        reference_store = TradeStore(root / "file.db")
        started = time.perf_counter()
        capture_file(reference_store, log)
        from_file = time.perf_counter() - started
        reference_store.close()
    return {
        "bench": "capture_live",
        "value": trades / live,
        "unit": "trades/s",
        "reference": trades / from_file,
        "trades": trades,
        "catch_up": trades / catch_up,
        "engine": trades / printed,
        "note": "live: from the first order sent to every trade and day record committed, "
        "engine and capture running together; catch_up: a fresh store from the stream at once "
        "(process start included); engine: trades/s the engine printed (every order answered) "
        "in the same run; reference: TradeStore.capture of the trade log file",
    }
