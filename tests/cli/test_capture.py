"""`cxe capture` against a real `cxe serve`: trades captured into the store while both are
killed with SIGKILL mid-flow and restarted; the store ends with every trade once, equal to the
trade log a replay of the journal checks, and `cxe clear` settles it exactly as from that log.
Bad input is refused with a message."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq
from msgspec.structs import replace

from engine.clearing.capture import (
    ConflictingDuplicate,
    OtherHistory,
    StreamGap,
    TradeStore,
    read_trade_log,
)
from engine.clearing.live import LiveCapture
from engine.config import default_market
from engine.core import Exchange
from engine.journal.segments import replay_events
from engine.protocol import Audience, Close, DayClosed, EndOfDay, Trade
from tests.cli.test_cli import cxe, cxe_command
from tests.support.engine import DAY, EngineProcess
from tests.support.signals import ignore_sigint, wait_until_caught
from tests.support.trading import CODES, mm_client, trade

MARKET = default_market()
HISTORY = "0123456789abcdef" * 2
NEXT_DAY = "2026-11-25"


class Capture:
    """A `cxe capture --data DATA --store STORE` process, its output in a file."""

    def __init__(self, data: Path, store: Path, *extra: str, sigint_ignored: bool = False) -> None:
        self.log = store.with_suffix(".capture.log")
        command = [*cxe_command(), "capture", "--data", str(data), "--store", str(store), *extra]
        preexec = ignore_sigint if sigint_ignored else None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec
            )

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def stored_position(store: Path) -> int:
    if not store.exists():
        return 0
    trades = TradeStore(store)
    try:
        return trades.stream_position()
    finally:
        trades.close()


def stored_history(store: Path) -> str | None:
    if not store.exists():
        return None
    trades = TradeStore(store)
    try:
        return trades.stream_history()
    finally:
        trades.close()


def wait_for_position(store: Path, position: int, capture: Capture, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while stored_position(store) < position:
        assert capture.process.poll() is None, capture.output()
        assert time.monotonic() < deadline, capture.output()
        time.sleep(0.1)


def all_trades(store: Path) -> list[Trade]:
    trades = TradeStore(store)
    try:
        return [t for day in trades.days() for t in trades.trades_of(day)]
    finally:
        trades.close()


class Trader(threading.Thread):
    """Trades through gateway "mm" in rounds of 50 until stopped (its own connection)."""

    def __init__(self, engine: EngineProcess) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.halt = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        gateway = mm_client(self.engine, zmq.Context.instance())
        while not self.halt.is_set():
            trade(gateway, f"t{self.rounds}", 50)
            self.rounds += 1
        gateway.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(120)


def engine_holds(data: Path) -> int:
    """The clearing events in the engine's trade log now."""
    return sum(1 for _ in read_trade_log(data / "trades.log"))


@pytest.mark.slow
def test_capture_survives_kill_nine_of_itself_and_the_engine_and_settles_as_the_trade_log(
    tmp_path,
):
    data, store = tmp_path / "data", tmp_path / "captured.db"
    engine = EngineProcess(data).start()
    captures: list[Capture] = []
    try:
        engine.open_market(*CODES)
        captures.append(Capture(data, store))
        trader = Trader(engine)
        trader.start()
        wait_for_position(store, 200, captures[-1])
        captures[-1].kill()  # while trades flow
        killed_at = stored_position(store)
        time.sleep(0.5)  # trades go on without it
        captures.append(Capture(data, store))
        wait_for_position(store, killed_at + 300, captures[-1])
        assert f"from stream number {killed_at + 1}" in captures[-1].output()
        trader.stop()
        assert trader.rounds >= 10
        gateway = mm_client(engine)
        trade(gateway, "burst", 400)
        gateway.close(logout=False)
        engine.kill()  # while the capture takes the burst
        engine.start()
        gateway = mm_client(engine)
        trade(gateway, "e", 400)
        captures[-1].kill()
        captures.append(Capture(data, store, "--until-day-closed"))
        trade(gateway, "f", 400)
        wait_for_position(store, engine_holds(data), captures[-1])
        answers = engine.admin(*[Close(code) for code in CODES], EndOfDay())
        assert not [a for a in answers if type(a).__name__ == "Rejected"], answers
        assert captures[-1].process.wait(120) == 0, captures[-1].output()
        assert "the day is closed" in captures[-1].output()
        gateway.close()
        assert engine.stop() == 0, engine.output()[-3000:]
    finally:
        for capture in captures:
            if capture.process.poll() is None:
                capture.process.kill()
                capture.process.wait(30)
        if engine.process.poll() is None:
            engine.process.kill()
            engine.process.wait(30)

    replayed = cxe("replay", str(data / "journal"))
    assert replayed.returncode == 0, replayed.stderr
    assert f"identical to {data / 'trades.log'}" in replayed.stdout
    exchange = Exchange(MARKET)
    from_journal = []
    for _, events in replay_events(data / "journal", exchange):
        from_journal += [e for e in events if type(e).audience is Audience.CLEARING]
    assert list(read_trade_log(data / "trades.log")) == from_journal
    trades = [e for e in from_journal if isinstance(e, Trade)]
    assert len(trades) == 50 * trader.rounds + 1_200
    assert all_trades(store) == trades  # each once, in order, as the engine printed it
    assert stored_position(store) == len(from_journal)

    ledgers = {}
    for name, extra in (
        ("log", ["--trades", str(data / "trades.log"), "--store", str(tmp_path / "log.db")]),
        ("live", ["--store", str(store)]),
    ):
        out = tmp_path / f"out-{name}"
        ledger = tmp_path / f"ledger-{name}.db"
        cleared = cxe("clear", "--date", DAY, *extra, "--ledger", str(ledger), "--out", str(out),
                      "--json")  # fmt: skip
        assert cleared.returncode == 0, cleared.stderr
        files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        shown = cxe("ledger", "--ledger", str(ledger)).stdout.replace(str(ledger), "LEDGER")
        ledgers[name] = (cleared.stdout, files, shown)
    assert ledgers["live"] == ledgers["log"]
    assert "CEA21" in ledgers["live"][0]


@pytest.mark.slow
def test_capture_refuses_another_engine_while_the_stores_day_is_open(tmp_path):
    """Found by a probe: a store that had captured 100 events from one engine, pointed at a
    fresh engine (a new data directory) holding 150, took that engine's events 101..150 and
    left out its first 100, silently. While the store's day is open it refuses the other
    engine, stores nothing, and says what to do."""
    store = tmp_path / "store.db"
    for name, trades in (("first", 100), ("fresh", 150)):
        data = tmp_path / name
        with EngineProcess(data) as engine:
            engine.open_market(*CODES)
            gateway = mm_client(engine)
            trade(gateway, name, trades)
            gateway.close()
            capture = Capture(data, store)
            try:
                if name == "first":
                    wait_for_position(store, 100, capture)
                    capture.process.send_signal(signal.SIGINT)
                    assert capture.process.wait(30) == 0, capture.output()
                else:
                    assert capture.process.wait(60) == 3, capture.output()
            finally:
                if capture.process.poll() is None:
                    capture.kill()
    output = capture.output()
    assert f"its last day, {DAY}, is not closed" in output, output
    assert "capture it from there first" in output and "Traceback" not in output
    assert stored_position(store) == 100
    assert [t.trade_id for t in all_trades(store)] == list(range(1, 101))


def close_day(engine: EngineProcess) -> None:
    answers = engine.admin(*[Close(code) for code in CODES], EndOfDay())
    assert not [a for a in answers if type(a).__name__ == "Rejected"], answers


@pytest.mark.slow
def test_one_store_captures_each_days_engine_of_the_daily_cycle_and_clear_settles_both(
    tmp_path,
):
    """Found by a helper's probe: the daily cycle of docs/OPERATIONS.md (day 2 in a fresh
    data directory under day 1's opening file, its trade ids going on) could not be
    captured live: the store refused day 2's engine, and a store of its own refused trade
    21 as a gap. The store now follows the next day's engine once its day is closed. Day 1
    is captured after its close, day 2 from before its first trade (--until-day-closed
    once quit there at once: the day it saw closed was day 1's)."""
    store, ledger, out = tmp_path / "store.db", tmp_path / "ledger.db", tmp_path / "out"
    days = ((DAY, tmp_path / "day1", None, 20), (NEXT_DAY, tmp_path / "day2", out, 30))
    for day, data, opening_dir, trades in days:
        extra = ["--config", str(opening_dir / f"opening-after-{DAY}.json")] if opening_dir else []
        engine = EngineProcess(data, *extra)
        engine.clock = f"{day}T09:10+08:00"
        with engine:
            capture = None
            if opening_dir:  # day 2's capture follows the new engine before it trades
                capture = Capture(data, store, "--until-day-closed")
                history = (data / "journal" / "history").read_text().strip()
                deadline = time.monotonic() + 60
                while stored_history(store) != history:
                    assert time.monotonic() < deadline, capture.output()
                    time.sleep(0.1)
                time.sleep(1.5)  # its heartbeats: the old capture quit on the first one
            engine.open_market(*CODES, day=day)
            gateway = mm_client(engine)
            trade(gateway, day, trades)
            gateway.close()
            close_day(engine)
            if capture is None:
                capture = Capture(data, store, "--until-day-closed")
            try:
                assert capture.process.wait(120) == 0, capture.output()
            finally:
                if capture.process.poll() is None:
                    capture.kill()
        cleared = cxe("clear", "--date", day, "--store", str(store), "--ledger", str(ledger),
                      "--out", str(out))  # fmt: skip
        assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    day_two = [t.trade_id for t in all_trades(store) if t.date == NEXT_DAY]
    assert day_two == list(range(21, 51))  # the opening file carried the trade ids on


@pytest.mark.slow
def test_capture_refuses_an_engine_restored_from_an_older_copy_of_its_data(tmp_path):
    """Found by a helper's probe: captured to stream number 20, the engine's data directory
    restored from a copy taken at 10 and traded on: the copy keeps the history id, and the
    store took the new timeline's events from 21 on after the old one's 11..20."""
    data, store = tmp_path / "data", tmp_path / "store.db"
    with EngineProcess(data) as engine:
        engine.open_market(*CODES)
        gateway = mm_client(engine)
        trade(gateway, "a", 10)
        gateway.close(logout=False)
        engine.stop()
        shutil.copytree(data, tmp_path / "copy")
        engine.start()
        gateway = mm_client(engine)
        trade(gateway, "b", 10)
        gateway.close()
        capture = Capture(data, store)
        wait_for_position(store, 20, capture)
        capture.process.send_signal(signal.SIGINT)
        assert capture.process.wait(30) == 0
        engine.stop()
    shutil.rmtree(data)
    shutil.copytree(tmp_path / "copy", data)
    with EngineProcess(data) as engine:
        gateway = mm_client(engine)
        trade(gateway, "c", 15, codes=CODES[1:2])  # another timeline from 11 on
        gateway.close()
        capture = Capture(data, store)
        assert capture.process.wait(60) == 3, capture.output()
    assert "holds another event there (the store's stream number 20)" in capture.output()
    assert stored_position(store) == 20


def test_capture_refuses_bad_input_with_a_message(tmp_path):
    missing = cxe("capture", "--data", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s"))
    assert missing.returncode == 2
    assert "no engine data directory" in missing.stderr and "Traceback" not in missing.stderr
    neither = cxe("capture", "--store", str(tmp_path / "s.db"))
    assert neither.returncode == 2 and "--endpoint" in neither.stderr
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database " * 100)
    bad_store = cxe("capture", "--endpoint", "tcp://127.0.0.1:9", "--store", str(not_sqlite))
    assert bad_store.returncode == 2 and "not an SQLite database" in bad_store.stderr
    assert "Traceback" not in bad_store.stderr
    old_engine = tmp_path / "old"
    old_engine.mkdir()
    (old_engine / "endpoints.json").write_text('{"orders": "tcp://127.0.0.1:9"}')
    no_stream = cxe("capture", "--data", str(old_engine), "--store", str(tmp_path / "s.db"))
    assert no_stream.returncode == 2 and "serves no trade stream" in no_stream.stderr


@pytest.mark.slow
def test_capture_started_with_sigint_ignored_still_stops_cleanly_on_sigint(tmp_path):
    (tmp_path / "data").mkdir()  # an engine that has not started yet: capture waits for it
    capture = Capture(tmp_path / "data", tmp_path / "store.db", sigint_ignored=True)
    try:
        wait_until_caught(capture.process, signal.SIGINT, signal.SIGTERM)
        capture.process.send_signal(signal.SIGINT)
        assert capture.process.wait(60) == 0, capture.output()
    finally:
        if capture.process.poll() is None:
            capture.kill()
    assert "stream number 0 of 0: 0 trades stored by this run" in capture.output()


def stream_trade(n: int, qty: int = 100) -> Trade:
    """Trade n with clearing stream number n."""
    return Trade(n, n, n, DAY, CODES[0], 6_000, qty, 1, 2, 2 * n, 2 * n + 1, 0, "continuous",
                 stream_seq=n)  # fmt: skip


def test_the_store_takes_stream_numbers_in_order_once_with_its_position(tmp_path):
    store = TradeStore(tmp_path / "store.db")
    try:
        assert store.stream_position() == 0
        store.begin_history(HISTORY)
        store.capture_stream([stream_trade(n) for n in range(1, 6)], HISTORY)
        assert store.stream_position() == 5
        again = store.capture_stream([stream_trade(n) for n in range(3, 8)], HISTORY)  # 3..5
        assert (again.stored, store.stream_position()) == (2, 7)
        with pytest.raises(StreamGap, match="expected event 8, got 9"):
            store.capture_stream([stream_trade(9)], HISTORY)
        with pytest.raises(ConflictingDuplicate):
            store.capture_stream([stream_trade(4, qty=200), stream_trade(8)], HISTORY)
        assert store.stream_position() == 7  # neither changed anything
        assert [t.trade_id for t in store.trades_of(DAY)] == list(range(1, 8))
    finally:
        store.close()


def test_the_store_follows_another_engine_only_once_its_day_is_closed(tmp_path):
    """Found by a probe: day 1 captured from one engine, day 2 from a fresh one (its stream
    numbers began again at 1) into the same store: once the new engine held more events
    than the store, the store took them from its own position on, silently leaving out the
    new engine's first ones. Each day's engine is another history: the store stores
    events under its current one only, and moves to the next from its number 1 once its
    last day is closed."""
    store = TradeStore(tmp_path / "store.db")
    try:
        store.begin_history(HISTORY)  # an empty store may follow any engine
        assert store.stream_history() == HISTORY
        store.capture_stream([stream_trade(n) for n in range(1, 6)], HISTORY)
        assert store.continues(stream_trade(5)) and not store.continues(stream_trade(4))
        assert not store.continues(stream_trade(5, qty=200))
        next_day = "f" * 32
        with pytest.raises(OtherHistory, match=f"follows the stream of engine history {HISTORY}"):
            store.capture_stream([stream_trade(6)], next_day)
        with pytest.raises(OtherHistory, match=f"its last day, {DAY}, is not closed"):
            store.begin_history(next_day)
        assert (store.stream_position(), store.stream_history()) == (5, HISTORY)
        closed = DayClosed(9, DAY, CODES[0], 5, 500, 6_000, "digest", stream_seq=6)
        store.capture_stream([closed], HISTORY)
        assert store.continues(closed)
        store.begin_history(next_day)  # the day is closed: the next day's engine, from 1
        assert (store.stream_position(), store.stream_history()) == (0, next_day)
        tomorrow = replace(stream_trade(6), date=NEXT_DAY, stream_seq=1)  # ids go on
        assert store.capture_stream([tomorrow], next_day).stored == 1
        assert store.stream_position() == 1 and store.last_trade_id() == 6
    finally:
        store.close()


def test_a_store_from_before_it_kept_its_last_event_still_tells_the_engines_apart(tmp_path):
    """Found by a helper's probe: a store made before history ids took a fresh engine's
    events from its position on. Without the event it kept, the store's last trade (or its
    day record) is the one the engine must hold at the store's position."""
    store = TradeStore(tmp_path / "store.db")
    try:
        store.begin_history(HISTORY)
        store.capture_stream([stream_trade(n) for n in range(1, 6)], HISTORY)
        store.db.execute("UPDATE stream_position SET last_event = NULL")
        store.db.execute("DELETE FROM stream_source")  # as a store from before both
        assert store.stream_history() is None
        assert store.continues(stream_trade(5))
        assert not store.continues(stream_trade(4))  # not its last trade
        assert not store.continues(stream_trade(5, qty=200))
        closed = DayClosed(9, DAY, CODES[0], 5, 500, 6_000, "digest", stream_seq=6)
        assert not store.continues(closed)  # no such day record
        store.capture([closed])
        assert store.continues(closed)
        store.take_history(HISTORY)
        assert store.stream_history() == HISTORY and store.stream_position() == 5
    finally:
        store.close()


@pytest.mark.slow
def test_capture_pointed_at_another_socket_of_the_engine_says_it_is_not_a_trade_stream(tmp_path):
    """Found by a helper's probe: at the admin endpoint it said only "sent an unknown message
    b'M'"."""
    with EngineProcess(tmp_path / "data") as engine:
        admin = engine.endpoints["admin"]
        result = cxe("capture", "--endpoint", admin, "--store", str(tmp_path / "s.db"),
                     timeout=60)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"{admin} is not an engine's trade stream (it answered b'" in result.stderr
    assert 'endpoints.json names "trades"' in result.stderr


@pytest.mark.slow
def test_capture_at_a_socket_that_never_answers_says_so_and_keeps_trying(tmp_path):
    """Found by a helper's probe: at the market data PUB (which never answers a DEALER) it
    reconnected for ever, printing only its reconnects."""
    with EngineProcess(tmp_path / "data") as engine:
        feed = engine.endpoints["market_data"]
        capture = subprocess.Popen(
            [*cxe_command(), "capture", "--endpoint", feed, "--store", str(tmp_path / "s.db")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            line = capture.stdout.readline()
            while "nothing answers" not in line:
                assert line and time.monotonic() < deadline, line
                line = capture.stdout.readline()
            assert f"nothing answers at {feed} after 3 connections" in line
            assert "Still trying" in line and capture.poll() is None
            wait_until_caught(capture, signal.SIGINT)
            capture.send_signal(signal.SIGINT)
            assert capture.wait(30) == 0
        finally:
            if capture.poll() is None:
                capture.kill()
                capture.wait(30)


def test_a_day_is_closed_in_the_store_once_every_traded_instrument_has_its_record(tmp_path):
    """Found by a helper's probe: one instrument's end-of-day record was taken for the whole
    day's, and the store followed the next day's engine without the others'."""
    store = TradeStore(tmp_path / "store.db")
    try:
        store.begin_history(HISTORY)
        other = replace(stream_trade(2), instrument=CODES[1])
        store.capture_stream([stream_trade(1), other], HISTORY)
        first = DayClosed(9, DAY, CODES[0], 1, 100, 6_000, "digest", stream_seq=3)
        store.capture_stream([first], HISTORY)
        assert not store.day_closed()
        with pytest.raises(OtherHistory, match="is not closed"):
            store.begin_history("f" * 32)
        second = replace(first, instrument=CODES[1], stream_seq=4)
        store.capture_stream([second], HISTORY)
        assert store.day_closed()
    finally:
        store.close()


def test_a_capture_takes_the_stores_position_anew_at_each_connection(tmp_path):
    """Found by a helper's probe: a second capture moved the store on to the next day's
    engine; the first, reconnecting from the position it held, took the store back."""
    store = TradeStore(tmp_path / "store.db")
    try:
        live = LiveCapture(store, lambda: None)  # no engine: the connection is not made
        store.begin_history(HISTORY)
        store.capture_stream([stream_trade(n) for n in range(1, 6)], HISTORY)
        live._connect()
        assert live.progress.position == 5
        closed = DayClosed(9, DAY, CODES[0], 5, 500, 6_000, "digest", stream_seq=6)
        store.capture_stream([closed], HISTORY)
        store.begin_history("f" * 32)  # as another capture would
        live._connect()
        assert live.progress.position == 0
        assert not store.continues(closed)  # a stream followed from 1: not a store of old
    finally:
        store.close()
