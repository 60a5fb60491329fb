"""Core rules: MassCancel on both exchanges (engine.core.masscancel)."""

from __future__ import annotations

from engine.config import default_market
from engine.protocol import (
    Accepted,
    Cancelled,
    DepthUpdate,
    MassCancel,
    MassCancelled,
    NewOrder,
    OneWayAuctionOpen,
    OpenCall,
    RejectCode,
)
from engine.types import CancelReason, Side
from tests.support.exchange import Session, of, only_reject

BUY, SELL = Side.BUY, Side.SELL


def test_mass_cancel_takes_every_resting_order_of_the_member_and_frees_its_holdings(
    make_exchange,
):
    s = Session(exchange=make_exchange)
    before = s.x.state_hash()
    cash = s.x.accounts.get(1).cash
    ids = [of(s.order(1, BUY, 9_990 - 10 * i, 100), Accepted)[0].order_id for i in range(3)]
    ids.append(of(s.order(1, SELL, 10_100, 100), Accepted)[0].order_id)
    other = of(s.order(2, BUY, 9_990, 100), Accepted)[0].order_id
    events = s.send(MassCancel("mc", 1))
    cancelled = of(events, Cancelled)
    assert [c.order_id for c in cancelled] == sorted(ids)
    assert {c.reason for c in cancelled} == {CancelReason.MASS_CANCEL}
    assert of(events, MassCancelled) == [events[-1]]
    assert (events[-1].cl_ord_id, events[-1].member, events[-1].cancelled) == ("mc", 1, 4)
    depth = {(d.side, d.price): d.qty for d in of(events, DepthUpdate)}
    assert depth == {(BUY, 9_990): 100, (BUY, 9_980): 0, (BUY, 9_970): 0, (SELL, 10_100): 0}
    assert s.x.accounts.get(1).cash == cash and s.x.accounts.get(1).cash_frozen == 0
    assert other in s.x.live_orders()
    s.send(MassCancel("mc2", 2))
    assert s.x.state_hash() != before  # the ClOrdIDs of the day stay used
    assert s.x.live_orders() == {}


def test_mass_cancel_of_one_instrument_and_with_nothing_resting(make_exchange):
    s = Session(default_market(), exchange=make_exchange)
    second = sorted(code for code in s.x.markets if code != s.code)[0]
    s.send(OpenCall(second))
    price = s.x.markets[s.code].reference
    s.send(NewOrder("o1", 1, s.code, BUY, price, 1_000))
    s.send(NewOrder("o2", 1, second, BUY, s.x.markets[second].reference, 1_000))
    events = s.send(MassCancel("one", 1, second))
    assert [type(e) for e in events] == [Cancelled, DepthUpdate, MassCancelled]
    assert events[-1].cancelled == 1 and events[0].instrument == second
    assert [o.code for o in s.x.live_orders().values()] == [s.code]
    assert s.send(MassCancel("one", 1, second))[-1].cancelled == 0  # may be repeated


def test_mass_cancel_refusals_change_nothing(make_exchange):
    s = Session(exchange=make_exchange)
    s.order(1, BUY, 9_990, 100)
    s.send(OneWayAuctionOpen(s.code, 4, 100_000, uniform=True))
    before = s.x.state_hash()
    assert only_reject(s.send(MassCancel("a", 99))).code == RejectCode.UNKNOWN_MEMBER
    assert only_reject(s.send(MassCancel("b", 1, "NOPE"))).code == RejectCode.UNKNOWN_INSTRUMENT
    assert s.x.state_hash() == before
    events = s.send(MassCancel("c", 4))  # the seller's one-way offer is off the book: kept
    assert events[-1].cancelled == 0 and s.x.markets[s.code].one_way
