"""Core rules: validation. Each rule once, on both exchanges (make_exchange)."""

from __future__ import annotations

import pytest

from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    Cancelled,
    CancelOrder,
    Halt,
    NewOrder,
    OpenCall,
    RejectCode,
    Uncross,
)
from engine.types import CancelReason, OrderType, Side, TimeInForce
from tests.support.exchange import Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL


# -- validation -----------------------------------------------------------------------------------


def test_orders_are_refused_while_the_market_is_closed(make_exchange):
    s = Session(continuous=False, exchange=make_exchange)
    assert only_reject(s.order(1, BUY, 10_000, 10)).code == RejectCode.MARKET_CLOSED


def test_a_halted_market_accepts_cancels_only(make_exchange):
    s = Session(exchange=make_exchange)
    accepted = of(s.order(1, BUY, 9_900, 10), Accepted)[0]
    s.send(Halt(s.code))
    assert only_reject(s.order(1, BUY, 9_900, 10)).code == RejectCode.MARKET_HALTED
    assert only_reject(s.amend(1, accepted.order_id, 9_800, 10)).code == RejectCode.MARKET_HALTED
    assert of(s.cancel(1, accepted.order_id), Cancelled)[0].reason == CancelReason.USER


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"tif": TimeInForce.IOC}, RejectCode.UNSUPPORTED_IN_PHASE),
        ({"tif": TimeInForce.FOK}, RejectCode.UNSUPPORTED_IN_PHASE),
        ({"order_type": OrderType.MARKET}, RejectCode.UNSUPPORTED_IN_PHASE),
    ],
)
def test_a_call_collects_limit_day_orders_only(make_exchange, kw, code):
    s = Session(continuous=False, exchange=make_exchange)
    s.send(OpenCall(s.code))
    assert only_reject(s.order(1, BUY, 10_000, 10, **kw)).code == code
    assert of(s.order(1, BUY, 10_000, 10), Accepted)


def test_unknown_instrument_and_unknown_member_are_refused(make_exchange):
    s = Session(exchange=make_exchange)
    e = only_reject(s.send(NewOrder("x", 1, "NOPE", BUY, 10_000, 1)))
    assert e.code == RejectCode.UNKNOWN_INSTRUMENT and "NOPE" in e.text
    assert only_reject(s.send(NewOrder("x", 99, s.code, BUY, 10_000, 1))).code == (
        RejectCode.UNKNOWN_MEMBER
    )


def test_duplicate_clordid_is_per_member_and_day(make_exchange):
    s = Session(exchange=make_exchange)
    assert of(s.send(NewOrder("same", 1, s.code, BUY, 9_000, 1)), Accepted)
    assert only_reject(s.send(NewOrder("same", 1, s.code, BUY, 9_000, 1))).code == (
        RejectCode.DUPLICATE_CLORDID
    )
    assert of(s.send(NewOrder("same", 2, s.code, BUY, 9_000, 1)), Accepted)


def test_cancel_and_amend_requests_need_a_fresh_clordid_too(make_exchange):
    """An amend states the new remaining quantity, so a broker's resend of one after a fill
    would put the filled quantity back on the book; it was applied twice. A request's
    ClOrdID is spent only when the request is accepted."""
    s = Session(exchange=make_exchange)
    (accepted,) = of(s.send(NewOrder("o1", 1, s.code, BUY, 9_000, 100)), Accepted)
    oid = accepted.order_id
    assert of(s.send(AmendOrder("a1", 1, s.code, oid, 9_000, 80)), Amended)
    s.send(NewOrder("hit", 2, s.code, SELL, 9_000, 30))  # leaves 50
    before = s.x.state_hash()
    resend = only_reject(s.send(AmendOrder("a1", 1, s.code, oid, 9_000, 80)))
    assert resend.code == RejectCode.DUPLICATE_CLORDID and s.x.state_hash() == before
    assert s.x.markets[s.code].book.depth(1)[0] == [(9_000, 50, 1)]
    assert only_reject(s.send(CancelOrder("o1", 1, s.code, oid))).code == (
        RejectCode.DUPLICATE_CLORDID
    )
    assert only_reject(s.send(CancelOrder("k1", 1, s.code, oid + 99))).code == (
        RejectCode.UNKNOWN_ORDER
    )
    assert of(s.send(CancelOrder("k1", 1, s.code, oid)), Cancelled)  # k1 was not spent
    assert only_reject(s.send(NewOrder("k1", 1, s.code, BUY, 9_000, 1))).code == (
        RejectCode.DUPLICATE_CLORDID
    )


@pytest.mark.parametrize(
    "field", [{"side": 5}, {"side": -1}, {"order_type": 9}, {"tif": 7}, {"stp": 3}]
)
def test_enum_fields_outside_their_enums_are_refused(make_exchange, field):
    s = Session(exchange=make_exchange)
    before = s.x.state_hash()
    fields = {"side": BUY, "price": 10_000, "qty": 10} | field
    reject = only_reject(s.send(NewOrder("x", 1, s.code, **fields)))
    assert reject.code == RejectCode.INVALID_FIELD and next(iter(field)) in reject.text
    assert s.x.state_hash() == before


@pytest.mark.parametrize(
    ("price", "qty", "code"),
    [
        (10_001, 20, RejectCode.PRICE_OFF_TICK),
        (8_995, 20, RejectCode.PRICE_OUTSIDE_BAND),
        (11_005, 20, RejectCode.PRICE_OUTSIDE_BAND),
        (10_000, 0, RejectCode.QTY_INVALID),
        (10_000, 15, RejectCode.QTY_NOT_WHOLE_UNIT),
        (10_000, 100_000, RejectCode.QTY_ABOVE_MAX),
        (10_000, 10, RejectCode.QTY_BELOW_MIN),
    ],
)
def test_price_and_quantity_limits(make_exchange, price, qty, code):
    config = small_market(tick=5, unit=10, min_qty=20, max_qty=99_990)
    s = Session(config, exchange=make_exchange)
    assert only_reject(s.order(1, BUY, price, qty)).code == code


def test_cancel_or_amend_of_an_unknown_or_foreign_order_is_refused(make_exchange):
    s = Session(exchange=make_exchange)
    order = of(s.order(1, BUY, 9_900, 10), Accepted)[0].order_id
    assert only_reject(s.cancel(1, 999)).code == RejectCode.UNKNOWN_ORDER
    assert only_reject(s.cancel(2, order)).code == RejectCode.NOT_OWNER
    assert only_reject(s.amend(2, order, 9_900, 5)).code == RejectCode.NOT_OWNER
    assert only_reject(s.amend(1, 999, 9_900, 5)).code == RejectCode.UNKNOWN_ORDER


def test_every_reject_leaves_the_state_hash_unchanged(make_exchange):
    s = Session(exchange=make_exchange)
    s.order(1, BUY, 9_900, 10)
    before = s.x.state_hash()
    for events in (
        s.order(1, BUY, 12_000, 10),
        s.cancel(1, 999),
        s.order(9, BUY, 9_900, 1),
        s.order(1, BUY, 9_900, 10**5),
        s.send(Uncross(s.code)),
    ):
        only_reject(events)
        assert s.x.state_hash() == before
