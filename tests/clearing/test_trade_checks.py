"""Clearing checks every field of every trade record before it settles anything.

Each bad record here is captured with end-of-day records that match it (count and checksum),
so only the field checks stand between it and the ledger: all of them once settled.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from engine.clearing.capture import TradeStore
from engine.clearing.netting import DAY_VALUE_LIMIT, NettingOverflow, TradeArrays, net
from engine.clearing.settlement import Ledger, SettlementRefused
from engine.config import Member
from engine.instruments import MAX_VALUE, Instrument
from tests.clearing.test_clearing import DATE, GOLDEN, closed, market, trade


def settle_with(tmp_path, bad, config=None):
    """GOLDEN's first trade, then `bad` as trade 2, captured with matching day records, into a
    fresh ledger; returns (ledger, balances before, the settle call)."""
    config = config or market("CEA25", "CCER")
    trades = [GOLDEN[0], bad]
    codes = [i.code for i in config.instruments]
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*trades, *(closed(trades, code) for code in codes)])
    if bad.instrument not in codes:
        store.capture([closed(trades, bad.instrument)])
    ledger.load_opening(config.members)
    before = ledger.balances()
    return ledger, before, lambda: ledger.settle(DATE, store, config)


def bad_trade(**fields) -> object:
    return msgspec.structs.replace(trade(2, "CEA25", 2, 3, 6010, 50), **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"qty": -50}, "qty -50 t is not between 1"),
        ({"qty": 0}, "qty 0 t is not between 1"),
        ({"price": 0}, "price 0 fen is not a positive multiple"),
        ({"price": -6010}, "price -6010 fen is not a positive multiple"),
        ({"seller": 2, "buyer": 2}, "seller 2 is also the buyer"),
        ({"price": 60_100}, "price 60100 fen is outside 4200-7800"),
        ({"price": 4_199}, "price 4199 fen is outside 4200-7800"),
        ({"venue": "dark_pool"}, "venue 'dark_pool' is not one of"),
        ({"instrument": "CEA99"}, "instrument 'CEA99' is not listed"),
        ({"buyer": 77}, "buyer 77 is not a member"),
        ({"seller": -1}, "seller -1 is not a member"),
        ({"seq": 0}, "seq 0 or ts_ns 2 is not a command's"),
        ({"ts_ns": -1}, "seq 2 or ts_ns -1 is not a command's"),
        ({"buy_order_id": 0}, "buy_order_id 0 and sell_order_id 202 are not two order ids"),
        ({"sell_order_id": 102}, "buy_order_id 102 and sell_order_id 102 are not two"),
        ({"aggressor": 0}, r"aggressor 0 is not one of \[-1\] for venue 'call'"),
        ({"venue": "continuous"}, r"aggressor -1 is not one of \[0, 1\] for venue 'contin"),
        ({"aggressor": 5, "venue": "pick"}, "aggressor 5 is not one of"),
    ],
)
def test_a_trade_record_the_exchange_could_not_print_refuses_the_day(tmp_path, fields, message):
    ledger, before, settle = settle_with(tmp_path, bad_trade(**fields))
    with pytest.raises(SettlementRefused, match=rf"trade 2 of {DATE} \(.*\): {message}"):
        settle()
    assert ledger.balances() == before and not ledger.settled(DATE)


def test_the_band_centre_is_the_previous_days_close_from_the_store(tmp_path):
    """A day run from the same config again: its band follows the last close, as the
    exchange's does, not the config's reference."""
    config = market("CEA25")
    day1 = [trade(1, "CEA25", 1, 2, 7_800, 10)]
    day2 = [trade(2, "CEA25", 2, 1, 10_000, 10, date="2026-11-25")]  # 7,800 + 28%
    store, ledger = TradeStore(tmp_path / "c.db"), Ledger(tmp_path / "l.db")
    store.capture([*day1, msgspec.structs.replace(closed(day1, "CEA25"), close=7_800)])
    store.capture([*day2, closed(day2, "CEA25", date="2026-11-25")])
    ledger.load_opening(config.members)
    assert not ledger.settle(DATE, store, config).failures
    assert not ledger.settle("2026-11-25", store, config).failures


def test_a_value_beyond_int64_is_refused_not_wrapped(tmp_path):
    """price x qty once went through int64 netting and settled a wrapped value."""
    big = Instrument(
        code="BIG", name="b", product="CEA", reference_price=4_000_000_000_000, tick=1_000_000
    )
    config = msgspec.structs.replace(
        market("CEA25", "CCER"),
        instruments=[*market("CEA25", "CCER").instruments, big],
        members=[
            Member(id=m, name=str(m), cash=10**18, holdings={"BIG": 10**9, "CEA25": 10**6})
            for m in (1, 2, 3)
        ],
    )
    huge = trade(2, "BIG", 2, 3, 4_000_000_000_000, 1 << 22)
    assert huge.price * huge.qty > 2**63  # wraps in int64
    ledger, before, settle = settle_with(tmp_path, huge, config)
    with pytest.raises(SettlementRefused, match=r"trade 2 .*: value 4000000000000 fen x"):
        settle()
    assert ledger.balances() == before


def arrays(prices, qtys) -> TradeArrays:
    n = len(prices)
    return TradeArrays(
        ["A"],
        np.zeros(n, dtype=np.int64),
        np.ones(n, dtype=np.int64),
        np.full(n, 2, dtype=np.int64),
        np.array(prices, dtype=np.int64),
        np.array(qtys, dtype=np.int64),
    )


def test_netting_refuses_a_product_or_a_day_total_int64_cannot_hold():
    fee = np.array([6_000], dtype=np.int64)
    with pytest.raises(NettingOverflow, match="index 1: 4294967296 fen x 4294967296 t"):
        net(arrays([100, 1 << 32], [1, 1 << 32]), fee)
    with pytest.raises(NettingOverflow, match="not below"):
        net(arrays([MAX_VALUE // 1_000], [1_000]), fee)  # exactly MAX_VALUE
    per_trade = MAX_VALUE // 8  # 20 of them pass 2**63: the sums once wrapped
    with pytest.raises(NettingOverflow, match="the day's traded value"):
        net(arrays([per_trade] * 20, [1] * 20), fee)
    with pytest.raises(NettingOverflow, match="positive"):
        net(arrays([100, 100], [5, 0]), fee)
    just_below = DAY_VALUE_LIMIT // 4 - 1
    assert net(arrays([just_below] * 3, [1] * 3), fee).traded_value == 3 * just_below
