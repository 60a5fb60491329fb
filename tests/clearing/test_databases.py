"""Clearing's databases: a file that is not one, and one another process keeps locked, are
errors that name the file and say what to do (no sqlite3 traceback)."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from engine.clearing import capture
from engine.clearing.capture import DatabaseBusy, TradeStore
from engine.clearing.settlement import Ledger
from tests.clearing.test_clearing import DATE, GOLDEN, closed, market


@pytest.mark.parametrize("opener", [TradeStore, Ledger])
@pytest.mark.parametrize("content", [b"date,member\n2026-11-24,1\n", b"\0" * 4096])
def test_a_file_that_is_not_an_sqlite_database_is_named(tmp_path, opener, content):
    path = tmp_path / "statements.csv"
    path.write_bytes(content)
    with pytest.raises(OSError, match=r"statements\.csv is not an SQLite database"):
        opener(path)
    assert path.read_bytes() == content


def test_a_ledger_another_process_keeps_locked_is_busy_not_a_traceback(tmp_path, monkeypatch):
    config = market("CEA25", "CCER")
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")])
    ledger.load_opening(config.members)
    ledger.close()
    monkeypatch.setattr(capture, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy, match=r"l\.db is in use by another process"):
            Ledger(tmp_path / "l.db").settle(DATE, store, config)
    finally:
        holder.execute("ROLLBACK")
    ledger = Ledger(tmp_path / "l.db")
    assert not ledger.settle(DATE, store, config).failures and ledger.settled(DATE)


def test_a_balance_that_would_pass_what_sqlite_holds_is_a_settlement_failure(tmp_path):
    """SQLite turns an int64 sum that overflows into a float: the ledger refuses first."""
    config = market("CEA25", "CCER")
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")])
    ledger.load_opening(config.members)
    ledger.db.execute(
        "UPDATE balances SET amount = ? WHERE member = 2 AND asset = 'CASH'", (2**62,)
    )
    before = ledger.balances()
    report = ledger.settle(DATE, store, config)
    assert report.failures == [
        f"member 2 CASH: receives 294097 fen on top of {2**62} fen, more than the "
        f"{2**62:,} a balance may hold"
    ]
    assert ledger.balances() == before and not ledger.settled(DATE)


def _open_at_once(path: str, barrier, answers) -> None:
    barrier.wait()
    try:
        capture.connect(path).close()
        answers.put("opened")
    except OSError as exc:
        answers.put(str(exc))


def test_processes_creating_one_database_at_once_all_open_it(tmp_path):
    """Two cxe clear of one store once failed in a fresh clone: 'cannot open the database
    c.db: database is locked'. Processes that create one database at the same moment meet in
    a lock upgrade SQLite refuses at once, without its busy timeout (half of such rounds
    failed before the switch to WAL was retried)."""
    answers = multiprocessing.Queue()
    for round_ in range(20):
        barrier = multiprocessing.Barrier(3)
        path = str(tmp_path / f"store{round_}.db")
        processes = [
            multiprocessing.Process(target=_open_at_once, args=(path, barrier, answers))
            for _ in range(3)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [answers.get(timeout=5) for _ in processes] == ["opened"] * 3, f"round {round_}"
