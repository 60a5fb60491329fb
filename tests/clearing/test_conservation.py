"""Each failure branch of the conservation check fires on the figures it guards, alone; and a
settlement that leaves a balance at exactly zero goes through."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.clearing.capture import TradeStore
from engine.clearing.netting import ConservationError, Netting, TradeArrays, check_conservation, net
from engine.clearing.settlement import CASH, Ledger
from tests.clearing.test_clearing import DATE, closed, market, trade


@pytest.fixture
def good() -> Netting:
    """Two members, two instruments, three trades: a netting that adds up."""
    columns = ([0, 0, 1], [1, 2, 1], [2, 1, 2], [6_000, 6_010, 8_233], [100, 50, 7])
    netting = net(
        TradeArrays(["A", "B"], *(np.array(c, dtype=np.int64) for c in columns)),
        np.array([6_000, 6_000], dtype=np.int64),
    )
    check_conservation(netting)
    return netting


def plus_one(figure: np.ndarray, row: int = 0, col: int = 0) -> np.ndarray:
    changed = figure.copy()
    changed[row, col] += 1
    return changed


def test_net_quantities_that_do_not_sum_to_zero_fail(good):
    with pytest.raises(ConservationError, match=r"^conservation check failed: A: net quantities"):
        check_conservation(replace(good, sold=good.sold * 0))


def test_net_cash_that_does_not_sum_to_minus_the_fees_fails(good):
    """One more fen received by a seller: cash no longer sums to minus the fees (the values
    no longer match the traded value either: netting's cash follows from them)."""
    broken = replace(good, sell_value=plus_one(good.sell_value))
    fees = good.total_fees
    with pytest.raises(
        ConservationError, match=f"net cash sums to {1 - fees}, not minus the fees {-fees}"
    ):
        check_conservation(broken)


def test_bought_or_sold_totals_other_than_the_traded_quantity_fail(good):
    """A tonne bought and sold by the same member: every net quantity still sums to zero,
    only the totals against the traded quantity show it."""
    broken = replace(good, bought=plus_one(good.bought), sold=plus_one(good.sold))
    with pytest.raises(ConservationError, match=r"bought 158 / sold 158 t, traded 157 t") as info:
        check_conservation(broken)
    assert "net quantities" not in str(info.value) and "net cash" not in str(info.value)


def test_buy_and_sell_values_other_than_the_traded_value_fail(good):
    """A fen more on both sides of one member's cell: the net cash is unchanged."""
    broken = replace(good, buy_value=plus_one(good.buy_value), sell_value=plus_one(good.sell_value))
    with pytest.raises(ConservationError, match="buy or sell value differs") as info:
        check_conservation(broken)
    assert ";" not in str(info.value)  # that branch alone


def test_a_settlement_that_takes_balances_to_exactly_zero_settles(tmp_path):
    """Member 1 holds exactly the cash for its purchase and fee, member 2 exactly the tonnes
    it sells: both end at 0, which is not a shortfall."""
    trades = [trade(1, "CEA25", 1, 2, 6000, 100)]  # 600,000 fen + 3,600 fee
    config = market("CEA25", cash=603_600, stock=100)
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*trades, closed(trades, "CEA25")])
    ledger.load_opening(config.members)
    report = ledger.settle(DATE, store, config)
    assert not report.failures and ledger.settled(DATE)
    assert ledger.balance(1, CASH) == 0 and ledger.balance(2, "CEA25") == 0
    assert ledger.balance(1, "CEA25") == 200 and ledger.balance(2, CASH) == 603_600 + 596_400
