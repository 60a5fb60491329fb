"""The price band is inclusive at both edges, on both books: a price exactly at either edge
rests (adds, amends, orders collected in a call), one tick beyond either edge is refused with
PRICE_OUTSIDE_BAND and changes nothing, and a market order reaches a level exactly at the
edge its side stops at. The random streams (tests/support/commands.py and the hypothesis
machine in test_book_property.py) send these prices too.
"""

from __future__ import annotations

import pytest

from engine.book.events import BookEvent, EventKind
from engine.protocol import RejectCode
from engine.types import CancelReason, OrderType, StpMode, TimeInForce

BUY, SELL = 0, 1
LIMIT, MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
DAY, IOC = int(TimeInForce.DAY), int(TimeInForce.IOC)
STP = int(StpMode.CANCEL_INCOMING)
OUTSIDE = int(RejectCode.PRICE_OUTSIDE_BAND)

# (tick, low edge, high edge)
BANDS = [
    pytest.param(1, 900, 1100, id="tick1"),
    pytest.param(5, 905, 1095, id="tick5"),
    pytest.param(10, 200, 400, id="tick10"),
]


def rested(oid: int, side: int, price: int, qty: int, owner: int) -> BookEvent:
    return BookEvent(EventKind.RESTED, oid, price=price, qty=qty, side=side, owner=owner)


def refused(oid: int, side: int) -> BookEvent:
    return BookEvent(EventKind.REJECTED, oid, code=OUTSIDE, side=side)


@pytest.mark.parametrize(("tick", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize("collecting", [False, True], ids=["continuous", "call"])
def test_an_order_exactly_at_either_edge_rests(make_book, tick, low, high, side, collecting):
    book = make_book(tick=tick, band=(low, high))
    book.set_collecting(collecting)
    for oid, price in enumerate((low, high), 1):
        book.add(oid, 1, side, price, 5, LIMIT, DAY, STP)
        assert book.events() == [rested(oid, side, price, 5, 1)]
    levels = book.depth(10)[side]
    assert sorted(price for price, _, _ in levels) == [low, high]


@pytest.mark.parametrize(("tick", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize("collecting", [False, True], ids=["continuous", "call"])
def test_an_order_one_tick_beyond_either_edge_is_refused(
    make_book, tick, low, high, side, collecting
):
    book = make_book(tick=tick, band=(low, high))
    book.set_collecting(collecting)
    for oid, price in enumerate((low - tick, high + tick), 1):
        book.add(oid, 1, side, price, 5, LIMIT, DAY, STP)
        assert book.events() == [refused(oid, side)]
    assert book.depth(10) == ([], []) and len(book) == 0


@pytest.mark.parametrize(("tick", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_amend_to_either_edge_is_taken_and_one_tick_beyond_refused(
    make_book, tick, low, high, side
):
    book = make_book(tick=tick, band=(low, high))
    middle = (low + high) // 2 // tick * tick
    book.add(1, 1, side, middle, 5, LIMIT, DAY, STP)
    book.events()
    for price in (low - tick, high + tick):
        book.amend(1, price, 5)
        assert book.events() == [refused(1, side)]
        assert book.order(1) == (side, middle, 5, 1)
    for price in (low, high):
        book.amend(1, price, 5)
        amended = BookEvent(EventKind.AMENDED, 1, price=price, qty=5, side=side, owner=1)
        assert book.events() == [
            amended,
            rested(1, side, price, 5, 1),
        ]  # a new price loses priority
        assert book.order(1) == (side, price, 5, 1)


@pytest.mark.parametrize(("tick", "low", "high"), BANDS)
def test_a_market_order_reaches_a_level_exactly_at_its_edge(make_book, tick, low, high):
    """A market buy may pay up to the band's top, a market sell down to its bottom: a level
    exactly at the edge trades."""
    book = make_book(tick=tick, band=(low, high))
    book.add(1, 1, SELL, high, 5, LIMIT, DAY, STP)
    book.add(2, 1, BUY, low, 5, LIMIT, DAY, STP)
    book.events()
    book.add(3, 2, BUY, 0, 7, MARKET, IOC, STP)
    fill, cancel = book.events()
    assert (fill.kind, fill.oid2, fill.price, fill.qty) == (EventKind.FILL, 1, high, 5)
    assert (cancel.kind, cancel.oid, cancel.qty) == (EventKind.CANCELLED, 3, 2)
    assert cancel.code == CancelReason.UNFILLED_REMAINDER
    book.add(4, 2, SELL, 0, 5, MARKET, IOC, STP)
    (fill,) = book.events()
    assert (fill.kind, fill.oid2, fill.price, fill.qty) == (EventKind.FILL, 2, low, 5)
    assert book.depth(10) == ([], [])
