"""Core rules: the one-way auction and block trades; on both exchanges."""

from __future__ import annotations

import pytest

from engine.protocol import (
    Accepted,
    AuctionBid,
    AuctionResult,
    BlockTrade,
    Close,
    DayClosed,
    EndOfDay,
    Filled,
    Halt,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    RejectCode,
    Rejected,
    Trade,
)
from engine.types import Side
from tests.support.exchange import CASH, Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL


# -- off-book trading ------------------------------------------------------------------------------


def test_one_way_auction_uniform_and_pay_as_bid(make_exchange):
    for uniform, prices in ((True, [10_500, 10_500]), (False, [10_800, 10_500])):
        s = Session(exchange=make_exchange)
        s.send(OneWayAuctionOpen(s.code, 4, 100_000, uniform=uniform))
        assert s.x.accounts.get(4).holding(s.code).frozen == 100_000
        assert only_reject(s.send(AuctionBid("hi", 1, s.code, 11_100, 10))).code == (
            RejectCode.PRICE_OUTSIDE_BAND
        )
        assert only_reject(s.send(AuctionBid("lo", 1, s.code, 9_900, 10))).code == (
            RejectCode.PRICE_OUTSIDE_BAND
        )
        s.send(AuctionBid("a", 1, s.code, 10_800, 60_000))
        s.send(AuctionBid("b", 2, s.code, 10_500, 50_000))
        s.send(AuctionBid("c", 3, s.code, 10_200, 50_000))
        events = s.send(OneWayAuctionClose(s.code))
        trades = of(events, Trade)
        assert [t.qty for t in trades] == [60_000, 40_000]
        assert [t.price for t in trades] == prices
        assert {t.venue for t in trades} == {"one_way"}
        assert of(events, AuctionResult)[0].volume == 100_000
        assert all(a.cash_frozen == 0 for a in s.x.accounts.all())
        assert s.x.accounts.total_cash() == 4 * CASH


@pytest.mark.parametrize("band_ppm", [0, 50_000, 200_000])
def test_a_one_way_auction_keeps_its_own_ten_percent_whatever_the_listed_band(
    make_exchange, band_ppm
):
    """docs/MARKET.md fixes the one-way auction's floor (the previous close, or that minus 10%)
    and cap (the close plus 10%). They were taken from the listed band, so an instrument
    with a 5% band auctioned from 95% of the close, and one with no band at the close."""
    s = Session(small_market(band_ppm=band_ppm), exchange=make_exchange)
    s.send(OneWayAuctionOpen(s.code, 4, 100_000, floor_minus_10pct=True))
    for price in (8_990, 11_010):
        reject = only_reject(s.send(AuctionBid(f"out{price}", 1, s.code, price, 10)))
        assert reject.code == RejectCode.PRICE_OUTSIDE_BAND and "9000-11000" in reject.text
    for price in (9_000, 11_000):
        assert of(s.send(AuctionBid(f"in{price}", 1, s.code, price, 10)), Accepted)


def test_one_way_auction_needs_a_block_sized_offer(make_exchange):
    s = Session(exchange=make_exchange)
    assert only_reject(s.send(OneWayAuctionOpen(s.code, 4, 99_999))).code == (
        RejectCode.QTY_BELOW_MIN
    )


def test_a_seller_cannot_bid_in_its_own_one_way_auction(make_exchange):
    """It once did, and the close printed a trade of the seller with itself."""
    s = Session(exchange=make_exchange)
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    before = s.x.state_hash()
    assert only_reject(s.send(AuctionBid("own", 4, s.code, 10_500, 50_000))).code == (
        RejectCode.SELF_TRADE
    )
    assert s.x.state_hash() == before


@pytest.mark.parametrize(
    ("qty", "code", "text"),
    [(0, RejectCode.QTY_INVALID, "zero"), (15, RejectCode.QTY_NOT_WHOLE_UNIT, "unit 10 t")],
)
def test_a_one_way_bid_of_a_bad_quantity_says_which_rule(make_exchange, qty, code, text):
    """A bid off the unit was refused QTY_INVALID with no detail, where an order gets
    QTY_NOT_WHOLE_UNIT and the unit; the order size limit does not apply to bids."""
    s = Session(small_market(unit=10, min_qty=10, max_qty=99_990), exchange=make_exchange)
    offer = only_reject(s.send(OneWayAuctionOpen(s.code, 4, 100_005)))  # the offer too
    assert offer.code == RejectCode.QTY_NOT_WHOLE_UNIT and "unit 10 t" in offer.text
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    reject = only_reject(s.send(AuctionBid("b", 1, s.code, 10_500, qty)))
    assert reject.code == code and text in reject.text
    assert not of(s.send(AuctionBid("c", 1, s.code, 10_500, 100_000)), Rejected)


def test_one_way_auctions_are_for_cea_vintages(make_exchange):
    s = Session(small_market(code="CCER", product="CCER"), exchange=make_exchange)
    reject = only_reject(s.send(OneWayAuctionOpen(s.code, 4, 100_000)))
    assert reject.code == RejectCode.INVALID_FIELD and "CEA" in reject.text
    assert s.x.accounts.get(4).holding(s.code).frozen == 0


def test_a_one_way_auction_needs_a_trading_day(make_exchange):
    x = make_exchange(small_market())
    assert only_reject(x.apply(OneWayAuctionOpen("CEA25", 4, 100_000))).code == (
        RejectCode.MARKET_CLOSED
    )


def test_the_day_cannot_end_while_a_one_way_auction_is_open_and_the_reject_says_so(make_exchange):
    s = Session(exchange=make_exchange)
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    s.send(Close(s.code))
    reject = only_reject(s.send(EndOfDay()))
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert "one-way auction" in reject.text and s.code in reject.text
    s.send(OneWayAuctionClose(s.code))
    assert of(s.send(EndOfDay()), DayClosed)


def test_block_trades_are_refused_while_the_market_is_halted(make_exchange):
    s = Session(exchange=make_exchange)
    s.send(Halt(s.code))
    assert only_reject(s.send(BlockTrade("b", s.code, 1, 2, 10_000, 100_000))).code == (
        RejectCode.MARKET_HALTED
    )


@pytest.mark.parametrize(
    ("buyer", "seller", "price", "qty", "code"),
    [
        (1, 2, 10_000, 99_999, RejectCode.QTY_BELOW_MIN),
        (1, 2, 13_001, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
        (1, 2, 6_999, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
        (1, 1, 10_000, 100_000, RejectCode.SELF_TRADE),
        (1, 2, 10_000, 2_000_000, RejectCode.INSUFFICIENT_FUNDS),
    ],
)
def test_block_trades_are_validated(make_exchange, buyer, seller, price, qty, code):
    s = Session(exchange=make_exchange)
    assert only_reject(s.send(BlockTrade("b", s.code, buyer, seller, price, qty))).code == code


def test_a_block_trade_prints_without_touching_the_book(make_exchange):
    s = Session(exchange=make_exchange)
    events = s.send(BlockTrade("b", s.code, 1, 2, 13_000, 100_000))
    (trade,) = of(events, Trade)
    assert (trade.venue, trade.aggressor, trade.price) == ("block", -1, 13_000)
    assert len(of(events, Filled)) == 2
    assert s.x.markets[s.code].book.depth(5) == ([], [])
