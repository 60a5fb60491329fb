"""Clearing: capture, netting, DVP settlement, statements, surrender (real SQLite files)."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clearing.capture import (
    ConflictingDuplicate,
    TradeGap,
    TradeLogWriter,
    TradeStore,
    capture_file,
    read_trade_log,
)
from engine.clearing.compliance import Surrender, SurrenderRefused, surrender
from engine.clearing.netting import (
    LOOKUP_IDS,
    ConservationError,
    TradeArrays,
    check_conservation,
    member_rows,
    net,
)
from engine.clearing.report import statement_rows, write_files
from engine.clearing.settlement import CASH, EXCHANGE, Ledger, SettlementRefused
from engine.config import MarketConfig, Member, default_market
from engine.demo import run_demo
from engine.framing import CorruptLog
from engine.instruments import Instrument
from engine.journal import CommandLog
from engine.protocol import DayClosed, StartOfDay, Trade, trades_digest

DATE = "2026-11-24"
ROOT = Path(__file__).resolve().parents[2]


def trade(tid, code, buyer, seller, price, qty, date=DATE):
    return Trade(
        tid, tid, tid, date, code, price, qty, buyer, seller, 100 + tid, 200 + tid, -1, "call"
    )


def closed(trades, code, date=DATE):
    mine = [t for t in trades if t.instrument == code]
    return DayClosed(0, date, code, len(mine), sum(t.qty for t in mine), 0, trades_digest(mine))


def market(*codes: str, cash: int = 10**12, stock: int = 10**6) -> MarketConfig:
    """Members 1, 2 and 3 holding `cash` and `stock` of each code; CCER is a credit at 8000
    fen, the others allowances at 6000 fen (GOLDEN's prices are inside their bands)."""
    instruments = [
        Instrument(code=c, name=c, product="CCER", reference_price=8000)
        if c == "CCER"
        else Instrument(code=c, name=c, product="CEA", reference_price=6000)
        for c in codes
    ]
    members = [
        Member(id=m, name=f"M{m}", cash=cash, holdings=dict.fromkeys(codes, stock))
        for m in (1, 2, 3)
    ]
    return MarketConfig(name="t", instruments=instruments, members=members)


def write_log(path, records):
    with TradeLogWriter(path) as log:
        for record in records:
            log.record([record])


GOLDEN = [
    trade(1, "CEA25", 1, 2, 6000, 100),  # value 600,000 fen; fee 3,600 each side
    trade(2, "CEA25", 2, 3, 6010, 50),  # value 300,500; fee 1,803
    trade(3, "CCER", 3, 1, 8233, 7),  # value 57,631; fee 345 (345.786 rounded down)
]


def test_a_golden_day_nets_to_hand_checked_statements(tmp_path):
    records = [*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")]
    write_log(tmp_path / "t.log", records)
    store = TradeStore(tmp_path / "c.db")
    assert capture_file(store, tmp_path / "t.log").stored == 3
    ledger = Ledger(tmp_path / "l.db")
    config = market("CEA25", "CCER")
    ledger.load_opening(config.members)
    report = ledger.settle(DATE, store, config)
    assert not report.failures
    rows = {(r["member"], r["instrument"]): r for r in statement_rows(report)}
    assert rows[(1, "CEA25")] == {
        "date": DATE,
        "member": 1,
        "instrument": "CEA25",
        "bought_t": 100,
        "sold_t": 0,
        "net_t": 100,
        "buy_value_fen": 600_000,
        "sell_value_fen": 0,
        "fees_fen": 3_600,
        "net_cash_fen": -603_600,
    }
    assert rows[(2, "CEA25")]["net_t"] == -50
    assert rows[(2, "CEA25")]["net_cash_fen"] == 600_000 - 300_500 - 3_600 - 1_803
    assert rows[(3, "CEA25")]["net_cash_fen"] == 300_500 - 1_803
    assert rows[(1, "CCER")]["net_cash_fen"] == 57_631 - 345
    assert rows[(3, "CCER")]["net_cash_fen"] == -57_631 - 345
    assert report.netting.total_fees == 2 * (3_600 + 1_803 + 345)
    assert ledger.balance(EXCHANGE, CASH) == 2 * (3_600 + 1_803 + 345)
    assert ledger.balance(1, "CEA25") == 10**6 + 100
    assert ledger.balance(1, CASH) == 10**12 - 603_600 + 57_631 - 345
    files = write_files(report, tmp_path / "out")
    first = (tmp_path / "out" / f"statements-{DATE}.csv").read_bytes()
    write_files(report, tmp_path / "out")
    assert (tmp_path / "out" / f"statements-{DATE}.csv").read_bytes() == first
    assert any(p.name == f"summary-{DATE}.csv" for p in files)
    member_3 = (tmp_path / "out" / f"statements-{DATE}" / "member-3.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in member_3[1:]] == ["CEA25", "CCER"]


def captured_day(tmp_path, records) -> tuple[TradeStore, Ledger, MarketConfig]:
    """A trade log of `records` captured into a store, and a ledger opened for CEA25/CCER."""
    write_log(tmp_path / "t.log", records)
    store, ledger, config = (
        TradeStore(tmp_path / "c.db"),
        Ledger(tmp_path / "l.db"),
        market("CEA25", "CCER"),
    )
    capture_file(store, tmp_path / "t.log")
    ledger.load_opening(config.members)
    return store, ledger, config


def test_a_day_settles_once(tmp_path):
    records = [*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")]
    store, ledger, config = captured_day(tmp_path, records)
    ledger.settle(DATE, store, config)
    balances = ledger.balances()
    again = ledger.settle(DATE, store, config)
    assert again.already_settled and ledger.balances() == balances


def test_the_day_summary_carries_the_exchanges_open_high_low_and_close(tmp_path):
    """The summary once held only what netting computes; the day's prices were in the store
    and nowhere a user opens. A record from before the open existed leaves those cells empty."""
    record = msgspec.structs.replace(
        closed(GOLDEN, "CEA25"), close=6004, open=6000, high=6010, low=5990
    )
    old_record = closed(GOLDEN, "CCER")  # open, high and low 0: not recorded
    store, ledger, config = captured_day(tmp_path, [*GOLDEN, record, old_record])
    write_files(ledger.settle(DATE, store, config), tmp_path / "out")
    with (tmp_path / "out" / f"summary-{DATE}.csv").open() as f:
        rows = {row["instrument"]: row for row in csv.DictReader(f)}
    prices = ("open_fen", "high_fen", "low_fen", "close_fen")
    assert [rows["CEA25"][k] for k in prices] == ["6000", "6010", "5990", "6004"]
    assert [rows["CCER"][k] for k in prices] == ["", "", "", "0"]


def test_capture_ignores_duplicates_and_stops_at_a_gap(tmp_path):
    store = TradeStore(tmp_path / "c.db")
    assert store.capture(GOLDEN[:2]).stored == 2
    result = store.capture(GOLDEN)
    assert (result.stored, result.duplicates) == (1, 2)
    with pytest.raises(TradeGap, match=r"expected trade 4, got 6; re-request trades 4\.\.5"):
        store.capture([trade(6, "CEA25", 1, 2, 6000, 1)])
    assert store.last_trade_id() == 3
    with pytest.raises(ConflictingDuplicate, match=r"opening-after-DATE\.json"):
        store.capture([trade(2, "CEA25", 2, 3, 6010, 51)])


def test_an_empty_store_given_a_later_days_trades_says_where_they_belong(tmp_path):
    """Found by a newcomer's walk through the guides: a fresh store for the next day (whose
    engine ran on the opening file: trades from 2) was told to "re-request trades 1..1 from
    the engine", which has no trade 1 (nor has `cxe clear --trades` an engine to ask)."""
    store = TradeStore(tmp_path / "fresh.db")
    with pytest.raises(TradeGap) as refused:
        store.capture([trade(2, "CEA25", 1, 2, 6000, 1)])
    said = str(refused.value)
    assert "this store is empty, and the first trade is 2" in said
    assert "into the store that holds those days" in said and "re-request" not in said
    assert store.last_trade_id() == 0


def test_the_store_keeps_the_day_records_open_high_and_low_and_upgrades_an_older_store(
    tmp_path,
):
    path = tmp_path / "c.db"
    old = sqlite3.connect(path)  # the day_records table as stores were made before
    old.executescript(
        "CREATE TABLE day_records (date TEXT NOT NULL, instrument TEXT NOT NULL, trades INTEGER"
        " NOT NULL, volume INTEGER NOT NULL, close INTEGER NOT NULL, checksum TEXT NOT NULL,"
        " PRIMARY KEY (date, instrument));"
        "INSERT INTO day_records VALUES ('2026-11-23', 'CEA25', 0, 0, 6000, 'x');"
    )
    old.commit()
    old.close()
    store = TradeStore(path)
    assert store.day_records("2026-11-23")["CEA25"].open == 0  # not recorded then
    record = DayClosed(9, DATE, "CEA25", 0, 0, 6000, trades_digest([]), 6010, 6050, 5990)
    store.capture([record])
    stored = store.day_records(DATE)["CEA25"]
    assert (stored.open, stored.high, stored.low, stored.close) == (6010, 6050, 5990, 6000)


def test_settlement_refuses_when_clearing_does_not_hold_what_the_exchange_printed(tmp_path):
    store, config = TradeStore(tmp_path / "c.db"), market("CEA25", "CCER")
    ledger = Ledger(tmp_path / "l.db")
    ledger.load_opening(config.members)
    store.capture(GOLDEN[:1])
    with pytest.raises(SettlementRefused, match="no end-of-day record"):
        ledger.settle(DATE, store, config)
    store.capture([closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")])
    with pytest.raises(SettlementRefused, match=r"reports 2 trades.*clearing holds 1"):
        ledger.settle(DATE, store, config)


def test_a_member_short_of_cash_is_a_settlement_failure_and_nothing_is_written(tmp_path):
    config = market("CEA25", "CCER", cash=100_000)
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")])
    ledger.load_opening(config.members)
    before = ledger.balances()
    report = ledger.settle(DATE, store, config)
    assert report.failures and "member 1 CASH" in report.failures[0]
    assert ledger.balances() == before and not ledger.settled(DATE)


trade_sets = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.integers(1, 6),
        st.integers(1, 6),
        st.integers(7_000, 13_000),  # inside the widest band (+-30%) of the reference 10,000
        st.integers(1, 5_000),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(trade_sets)
def test_random_days_conserve_and_net_equals_gross(tmp_path_factory, rows):
    rows = [r for r in rows if r[1] != r[2]] or [("A", 1, 2, 10_000, 1)]
    trades = [trade(i, c, b, s, p, q) for i, (c, b, s, p, q) in enumerate(rows, 1)]
    codes = ["A", "B", "C"]
    arrays = TradeArrays(
        codes,
        *(
            np.array(col, dtype=np.int64)
            for col in zip(
                *[(codes.index(t.instrument), t.buyer, t.seller, t.price, t.qty) for t in trades],
                strict=True,
            )
        ),
    )
    netting = net(arrays, np.array([6_000, 6_000, 0], dtype=np.int64))
    check_conservation(netting)
    config = MarketConfig(
        name="t",
        instruments=[
            Instrument(
                code=c,
                name=c,
                product="CEA",
                reference_price=10_000,
                fee_ppm=0 if c == "C" else 6_000,
            )
            for c in codes
        ],
        members=[
            Member(id=m, name=str(m), cash=10**13, holdings=dict.fromkeys(codes, 10**7))
            for m in range(1, 7)
        ],
    )
    records = [*trades, *(closed(trades, c) for c in codes)]
    balances = []
    for gross in (False, True):
        tmp = tmp_path_factory.mktemp("day")
        store, ledger = TradeStore(tmp / "c.db"), Ledger(tmp / "l.db")
        store.capture(records)
        ledger.load_opening(config.members)
        report = ledger.settle(DATE, store, config, gross=gross)
        assert not report.failures
        balances.append(ledger.balances())
    assert balances[0] == balances[1]
    total_cash = sum(v for (m, a), v in balances[0].items() if a == CASH)
    assert total_cash == 6 * 10**13


def test_the_loop_engine_to_clearing_to_engine_closes(tmp_path):
    config = default_market()
    day = run_demo(config, seed=5, steps=300, out=str(tmp_path))
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    capture_file(store, tmp_path / "trades.log")
    ledger.load_opening(config.members)
    report = ledger.settle(DATE, store, config)
    assert not report.failures and report.netting.trades > 1000
    assert ledger.balance(EXCHANGE, CASH) == day.exchange.accounts.fees
    closes = {code: r.close for code, r in store.day_records(DATE).items()}
    opening = ledger.opening_market(config, closes)
    for inst in opening.instruments:
        assert inst.reference_price == day.exchange.markets[inst.code].reference
    for member in opening.members:
        account = day.exchange.accounts.get(member.id)
        assert member.cash == account.cash + account.cash_frozen
        for code, qty in member.holdings.items():
            assert qty == account.holding(code).total
    # the next day runs from the opening file and settles into the same store and ledger;
    # its trade ids follow the last captured one (they once restarted at 1 and capture
    # refused them: "trade 1 arrived again with other contents")
    opening = ledger.opening_market(config, closes, store.last_trade_id() + 1, DATE)
    # the opening file names the day it follows: that day cannot be traded again from it,
    # and the demo's default day is the next weekday
    assert opening.last_trading_day == DATE
    with pytest.raises(ValueError, match="after 2026-11-24"):
        run_demo(opening, steps=10, date=DATE)
    next_day = run_demo(opening, seed=6, steps=300, out=str(tmp_path / "next"))
    assert next_day.date == "2026-11-25"
    result = capture_file(store, tmp_path / "next" / "trades.log")
    assert result.stored == next_day.exchange.next_trade_id - opening.first_trade_id > 1000
    report = ledger.settle("2026-11-25", store, opening)
    assert not report.failures and not report.already_settled


def test_surrender_enforces_the_ccer_cap_and_holdings(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.load_opening([Member(id=1, name="A", holdings={"CEA25": 9_000, "CCER": 1_000})])
    config = market("CEA25", "CCER")
    with pytest.raises(SurrenderRefused, match="at most 5%"):
        surrender(ledger, Surrender(1, "2025", 10_000, {"CEA25": 9_000}, 501), config, "")
    with pytest.raises(SurrenderRefused, match="holds 9,000 t of CEA25"):
        surrender(ledger, Surrender(1, "2025", 10_000, {"CEA25": 9_600}, 400), config, "")
    with pytest.raises(SurrenderRefused, match="against an obligation"):
        surrender(ledger, Surrender(1, "2025", 9_000, {"CEA25": 9_000}, 400), config, "")
    done = surrender(
        ledger, Surrender(1, "2025", 10_000, {"CEA25": 9_000}, 500), config, "2025 emissions"
    )
    assert done.shortfall == 500
    assert ledger.balance(1, "CEA25") == 0 and ledger.balance(1, "CCER") == 500
    rows = ledger.db.execute("SELECT asset, qty FROM surrenders ORDER BY asset").fetchall()
    assert rows == [("CCER", 500), ("CEA25", 9_000)]


def test_a_member_without_an_account_cannot_surrender(tmp_path):
    """It was once answered with a surrender of 0 t and a shortfall, as if it had an account."""
    ledger = Ledger(tmp_path / "l.db")
    ledger.load_opening([Member(id=1, name="A", holdings={"CEA25": 9_000})])
    with pytest.raises(SurrenderRefused, match=r"member 2 has no account in .*l\.db"):
        surrender(ledger, Surrender(2, "2025", 10_000, {}, 0), market("CEA25"), "")


PAUSING_CONNECTION = textwrap.dedent("""
    import sys, time

    class PausingConnection:
        # wraps a sqlite3 connection and hangs for good, inside the open transaction, after
        # the n-th statement starting with `prefix`
        def __init__(self, db, prefix, n):
            self.db, self.prefix, self.left = db, prefix, n
        def execute(self, sql, *args):
            result = self.db.execute(sql, *args)
            if sql.startswith(self.prefix):
                self.left -= 1
                if self.left == 0:
                    print("inside", flush=True)
                    time.sleep(60)
            return result
""")


def kill_mid_transaction(body: str, *args) -> None:
    """Run PausingConnection + body in a real process and kill -9 it mid-transaction."""
    script = PAUSING_CONNECTION + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_crash_mid_settlement_leaves_the_ledger_as_it_was(tmp_path):
    store, ledger, config = (
        TradeStore(tmp_path / "c.db"),
        Ledger(tmp_path / "l.db"),
        market("CEA25", "CCER"),
    )
    store.capture([*GOLDEN, closed(GOLDEN, "CEA25"), closed(GOLDEN, "CCER")])
    ledger.load_opening(config.members)
    before = ledger.balances()
    ledger.close()
    kill_mid_transaction(
        """
        from engine.clearing import settlement
        from engine.clearing.capture import TradeStore
        from tests.clearing.test_clearing import market
        ledger = settlement.Ledger(sys.argv[1])
        ledger.db = PausingConnection(ledger.db, "INSERT INTO postings", 2)
        ledger.settle("2026-11-24", TradeStore(sys.argv[2]), market("CEA25", "CCER"))
        """,
        tmp_path / "l.db",
        tmp_path / "c.db",
    )
    time.sleep(0.1)
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.balances() == before and not ledger.settled(DATE)
    assert ledger.db.execute("SELECT COUNT(*) FROM postings").fetchone()[0] == 0
    assert not ledger.settle(DATE, store, config).failures
    assert ledger.settled(DATE)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=50),
    st.sampled_from([0, -(1 << 40), LOOKUP_IDS - 41, LOOKUP_IDS - 20, 1 << 50]),
)
def test_netting_maps_members_the_same_through_the_lookup_table_and_the_sort(pairs, offset):
    """Ids inside [0, LOOKUP_IDS) take the table, others (negative, huge, or a mix that
    straddles the bound) the sort; shifting every id must shift the members and nothing else."""
    buyer = np.array([b for b, _ in pairs], dtype=np.int64)
    seller = np.array([s for _, s in pairs], dtype=np.int64)
    columns = (
        np.zeros(len(pairs), dtype=np.int64),
        np.full(len(pairs), 100),
        np.arange(1, 1 + len(pairs)),
    )
    fee = np.array([6_000], dtype=np.int64)
    plain = net(TradeArrays(["A"], columns[0], buyer, seller, *columns[1:]), fee)
    shifted = net(
        TradeArrays(["A"], columns[0], buyer + offset, seller + offset, *columns[1:]), fee
    )
    assert shifted.members.tolist() == (plain.members + offset).tolist()
    for figure in ("bought", "sold", "buy_value", "sell_value", "fees"):
        assert getattr(shifted, figure).tolist() == getattr(plain, figure).tolist(), figure
    members, buy_rows, _ = member_rows(buyer + offset, seller + offset)
    assert (members[buy_rows] == buyer + offset).all()


def test_a_conservation_failure_aborts_with_the_offending_figures():
    good = net(
        TradeArrays(["A"], *(np.array([v], dtype=np.int64) for v in (0, 1, 2, 100, 5))),
        np.array([6_000], dtype=np.int64),
    )
    broken = replace(good, sold=good.sold * 0)
    with pytest.raises(ConservationError, match="A: net quantities sum to 5, not 0"):
        check_conservation(broken)


def test_capture_killed_midway_then_restarted_loses_and_doubles_nothing(tmp_path):
    run_demo(default_market(), seed=4, steps=200, out=str(tmp_path))
    store = TradeStore(tmp_path / "c.db")
    half = [r for _, r in zip(range(300), read_trade_log(tmp_path / "trades.log"), strict=False)]
    store.capture(half)
    store.close()
    kill_mid_transaction(
        """
        from engine.clearing.capture import TradeStore, read_trade_log
        store = TradeStore(sys.argv[1])
        store.db = PausingConnection(store.db, "INSERT INTO trades", 500)
        store.capture(read_trade_log(sys.argv[2]))
        """,
        tmp_path / "c.db",
        tmp_path / "trades.log",
    )
    store = TradeStore(tmp_path / "c.db")
    assert store.last_trade_id() == 300
    result = capture_file(store, tmp_path / "trades.log")
    total = sum(1 for r in read_trade_log(tmp_path / "trades.log") if isinstance(r, Trade))
    assert store.last_trade_id() == total == 300 + result.stored
    assert store.db.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == total


def test_a_file_that_is_not_a_trade_log_or_a_database_that_cannot_open_is_named(tmp_path):
    """A command log given as the trade log once failed with msgspec's bare 'Invalid value 1
    - at $[0]', and an unopenable ledger with a sqlite3 traceback."""
    with CommandLog(tmp_path / "commands.log") as log:
        log.append(1, 0, StartOfDay("2026-11-24"))
    with pytest.raises(CorruptLog, match=r"commands\.log: the record at byte 0 is not a trade"):
        capture_file(TradeStore(tmp_path / "c.db"), tmp_path / "commands.log")
    with pytest.raises(OSError, match=r"cannot open the database .*ledger\.db"):
        Ledger(tmp_path / "missing-dir" / "ledger.db")


@given(
    st.lists(st.integers(1, 2**62 // 1_006_000 * 1_000), min_size=1, max_size=20),
    st.sampled_from([0, 1, 6_000, 999_999, 1_000_000]),
)
def test_netting_fees_are_exact_for_any_trade_value_the_exchange_allows(values, rate):
    """Netting took the fee as value * rate // 10**6 in int64, which overflows from a value
    of about 1.5e15 fen at 6 per mille; the exchange admits values up to 2**62 (with the
    fee). The fees must be the exact ones the exchange charged."""
    n = len(values)
    arrays = TradeArrays(
        ["A"],
        np.zeros(n, dtype=np.int64),
        np.ones(n, dtype=np.int64),
        np.full(n, 2, dtype=np.int64),
        np.array(values, dtype=np.int64),
        np.ones(n, dtype=np.int64),
    )
    netting = net(arrays, np.array([rate], dtype=np.int64))
    assert netting.fees.sum() == 2 * sum(v * rate // 1_000_000 for v in values)
