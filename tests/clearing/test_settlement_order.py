"""Days settle once and in order: after the day the opening balances follow, after the last
settled day, and never past a captured day left unsettled."""

from __future__ import annotations

import pytest

from engine.clearing.capture import TradeStore, capture_file
from engine.clearing.compliance import Surrender, surrender
from engine.clearing.settlement import Ledger, SettlementRefused
from engine.config import default_market
from engine.demo import run_demo
from tests.clearing.test_clearing import DATE, GOLDEN, closed, market, trade

DAY2, DAY3 = "2026-11-25", "2026-11-26"


def three_days(tmp_path) -> tuple[TradeStore, Ledger]:
    """GOLDEN on DATE, one trade on each of the next two days, all captured; a fresh ledger."""
    day2 = [trade(4, "CEA25", 1, 3, 6000, 10, date=DAY2)]
    day3 = [trade(5, "CEA25", 3, 2, 6000, 10, date=DAY3)]
    store = TradeStore(tmp_path / "c.db")
    for day, trades in ((DATE, GOLDEN), (DAY2, day2), (DAY3, day3)):
        store.capture([*trades, closed(trades, "CEA25", day), closed(trades, "CCER", day)])
    ledger = Ledger(tmp_path / "l.db")
    ledger.load_opening(market("CEA25", "CCER").members)
    return store, ledger


def test_a_day_after_a_captured_day_that_is_not_settled_is_refused(tmp_path):
    store, ledger = three_days(tmp_path)
    config = market("CEA25", "CCER")
    before = ledger.balances()
    with pytest.raises(SettlementRefused, match=rf"holds {DATE}, not settled .*settle it first"):
        ledger.settle(DAY2, store, config)
    with pytest.raises(SettlementRefused, match=rf"holds {DATE}, {DAY2}, not settled"):
        ledger.settle(DAY3, store, config)
    assert ledger.balances() == before and not ledger.settled(DAY2)
    for day in (DATE, DAY2, DAY3):
        assert not ledger.settle(day, store, config).failures
        assert ledger.last_settled() == day


def test_a_day_before_the_last_settled_one_is_refused(tmp_path):
    """A day the store did not hold when a later one settled cannot settle afterwards."""
    store, ledger = three_days(tmp_path)
    config = market("CEA25", "CCER")
    ledger.db.execute("INSERT INTO settlements VALUES (?, 'net', 0, 0, 0, 0, 0)", (DAY3,))
    with pytest.raises(SettlementRefused, match=rf"has settled {DAY3} already.*{DAY2} comes"):
        ledger.settle(DAY2, store, config)


def test_a_ledger_opened_from_an_opening_file_refuses_that_day_and_the_days_before(tmp_path):
    """A fresh ledger loaded with day 1's opening-after file once settled day 1 again (on top
    of balances that already held it: 42 balances of the demo market wrong)."""
    config = default_market()
    run_demo(config, seed=5, steps=200, out=str(tmp_path))
    store = TradeStore(tmp_path / "c.db")
    capture_file(store, tmp_path / "trades.log")
    first = Ledger(tmp_path / "first.db")
    first.load_opening(config.members)
    assert not first.settle(DATE, store, config).failures
    closes = {code: r.close for code, r in store.day_records(DATE).items()}
    opening = first.opening_market(config, closes, store.last_trade_id() + 1, DATE)
    fresh = Ledger(tmp_path / "fresh.db")
    fresh.load_opening(opening.members, opening.last_trading_day)
    assert fresh.opening_day() == DATE
    before = fresh.balances()
    assert before == {k: v for k, v in first.balances().items() if k[0] >= 0}
    for day in (DATE, "2026-11-20"):
        with pytest.raises(SettlementRefused, match=rf"balances after {DATE}: {day} is on or"):
            fresh.settle(day, store, opening)
    assert fresh.balances() == before and not fresh.settled(DATE)


def test_the_balances_after_a_day_come_back_after_later_days_and_surrenders(tmp_path):
    """What a rerun of a settled day writes as its opening file: the balances as they stood
    before the next day settled, surrenders made in between included."""
    store, ledger = three_days(tmp_path)
    config = market("CEA25", "CCER")
    ledger.settle(DATE, store, config)
    after_day1 = ledger.balances()
    surrender(ledger, Surrender(1, "2025", 1_000, {"CEA25": 900}, 50), config, "")
    after_surrender = ledger.balances()
    ledger.settle(DAY2, store, config)
    surrender(ledger, Surrender(2, "2025", 1_000, {"CEA25": 500}, 0), config, "")
    ledger.settle(DAY3, store, config)
    assert after_surrender != after_day1
    assert ledger.balances_after(DATE) == after_surrender
    assert ledger.balances_after(DAY3) == ledger.balances()
