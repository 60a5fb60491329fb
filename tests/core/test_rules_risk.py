"""Core rules: pre-trade risk, fills and fees, self-trade prevention, pick and depth updates;
on both exchanges (make_exchange)."""

from __future__ import annotations

from engine.config import MarketConfig, Member
from engine.instruments import Instrument
from engine.protocol import (
    Accepted,
    Cancelled,
    Close,
    DepthUpdate,
    EndOfDay,
    OpenCall,
    PickOrder,
    RejectCode,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import CancelReason, Side, StpMode, TimeInForce
from tests.support.exchange import CASH, STOCK, Session, of, only_reject

BUY, SELL = Side.BUY, Side.SELL


# -- risk -------------------------------------------------------------------------------------


def funded(cash: int, stock: int = 0) -> MarketConfig:
    inst = Instrument(code="CEA25", name="x", product="CEA", reference_price=10_000)
    members = [
        Member(id=1, name="A", cash=cash, holdings={"CEA25": stock}),
        Member(id=2, name="B", cash=CASH, holdings={"CEA25": STOCK}),
    ]
    return MarketConfig(name="t", instruments=[inst], members=members)


def test_a_buy_freezes_price_times_quantity_plus_the_fee_rounded_up(make_exchange):
    need = 10_000 * 100 + 6_000  # 1,000,000 fen value, 6 per mille fee
    assert of(Session(funded(need), exchange=make_exchange).order(1, BUY, 10_000, 100), Accepted)
    short = Session(funded(need - 1), exchange=make_exchange)
    assert only_reject(short.order(1, BUY, 10_000, 100)).code == RejectCode.INSUFFICIENT_FUNDS
    s = Session(funded(need), exchange=make_exchange)
    s.order(1, BUY, 10_000, 100)
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (0, need)


def test_a_sell_needs_the_allowances_and_freezes_them(make_exchange):
    assert only_reject(
        Session(funded(0, 99), exchange=make_exchange).order(1, SELL, 10_000, 100)
    ).code == (RejectCode.INSUFFICIENT_ALLOWANCES)
    s = Session(funded(0, 100), exchange=make_exchange)
    s.order(1, SELL, 10_000, 100)
    holding = s.x.accounts.get(1).holding("CEA25")
    assert (holding.available, holding.frozen) == (0, 100)


def test_a_better_price_releases_the_frozen_difference_and_fees_are_per_side(make_exchange):
    s = Session(funded(CASH), exchange=make_exchange)
    s.order(2, SELL, 9_500, 100)
    s.order(1, BUY, 10_000, 100)
    buyer, seller = s.x.accounts.get(1), s.x.accounts.get(2)
    value, fee = 950_000, 5_700
    assert buyer.cash_frozen == 0 and buyer.cash == CASH - value - fee
    assert seller.cash == CASH + value - fee
    assert s.x.accounts.fees == 2 * fee
    assert s.x.accounts.total_cash() == 2 * CASH


def test_allowances_bought_today_cannot_be_sold_until_the_next_day(make_exchange):
    s = Session(funded(CASH, 0), exchange=make_exchange)
    s.order(2, SELL, 10_000, 50)
    s.order(1, BUY, 10_000, 50)
    assert s.x.accounts.get(1).holding("CEA25").locked == 50
    assert only_reject(s.order(1, SELL, 10_000, 50)).code == RejectCode.INSUFFICIENT_ALLOWANCES
    s.send(Close(s.code))
    s.send(EndOfDay())
    s.send(StartOfDay("2026-11-25"))
    s.send(OpenCall(s.code))
    s.send(Uncross(s.code))
    assert of(s.order(1, SELL, 10_000, 50), Accepted)


def test_same_day_resale_when_the_instrument_allows_it(make_exchange):
    inst = Instrument(
        code="CEA25", name="x", product="CEA", reference_price=10_000, same_day_resale=True
    )
    members = [
        Member(id=1, name="A", cash=CASH),
        Member(id=2, name="B", cash=CASH, holdings={"CEA25": 100}),
    ]
    s = Session(MarketConfig(name="t", instruments=[inst], members=members), exchange=make_exchange)
    s.order(2, SELL, 10_000, 50)
    s.order(1, BUY, 10_000, 50)
    assert of(s.order(1, SELL, 10_000, 50), Accepted)


def test_cancel_releases_what_the_order_froze(make_exchange):
    s = Session(funded(CASH), exchange=make_exchange)
    order = of(s.order(1, BUY, 9_000, 100), Accepted)[0].order_id
    s.cancel(1, order)
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (CASH, 0)


def test_self_trade_prevention_cancels_the_incoming_order(make_exchange):
    s = Session(exchange=make_exchange)
    s.order(1, SELL, 10_000, 10)
    events = s.order(1, BUY, 10_000, 10, stp=StpMode.CANCEL_INCOMING)
    assert not of(events, Trade)
    assert of(events, Cancelled)[0].reason == CancelReason.STP_INCOMING


def test_pick_trades_with_the_named_order_at_its_price(make_exchange):
    s = Session(exchange=make_exchange)
    first = of(s.order(2, SELL, 10_000, 10), Accepted)[0].order_id
    second = of(s.order(3, SELL, 10_100, 10), Accepted)[0].order_id
    events = s.send(PickOrder("p", 1, s.code, BUY, second, 4))
    (trade,) = of(events, Trade)
    assert (trade.price, trade.qty, trade.sell_order_id, trade.venue) == (10_100, 4, second, "pick")
    assert s.x.markets[s.code].book.order(first)[2] == 10
    assert only_reject(s.send(PickOrder("q", 2, s.code, BUY, first, 1))).code == (
        RejectCode.SELF_TRADE
    )
    account = s.x.accounts.get(1)
    assert account.cash_frozen == 0


def test_depth_updates_name_each_changed_level_once_with_its_new_total(make_exchange):
    s = Session(exchange=make_exchange)
    first = of(s.order(2, SELL, 10_000, 10), DepthUpdate)
    assert first == [DepthUpdate(s.x.seq, s.code, SELL, 10_000, 10, 1, first[0].stream_seq)]
    s.order(3, SELL, 10_000, 5)
    resting = of(s.order(3, SELL, 10_100, 7), Accepted)[0].order_id
    events = s.order(1, BUY, 10_100, 20, tif=TimeInForce.IOC)
    seq = s.x.seq
    assert [
        (e.seq, e.instrument, e.side, e.price, e.qty, e.orders) for e in of(events, DepthUpdate)
    ] == [
        (seq, s.code, SELL, 10_000, 0, 0),
        (seq, s.code, SELL, 10_100, 2, 1),
    ]  # the IOC remainder never rested, so the bid side did not change
    events = s.amend(3, resting, 10_200, 2)
    assert [(e.price, e.qty, e.orders) for e in of(events, DepthUpdate)] == [
        (10_100, 0, 0),
        (10_200, 2, 1),
    ]
    assert not of(s.order(1, BUY, 9_000, 10, tif=TimeInForce.IOC), DepthUpdate)
