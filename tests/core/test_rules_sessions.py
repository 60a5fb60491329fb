"""Core rules: bands and references, calls and auctions, halts and resumption, the close and
the end of day; on both exchanges (make_exchange)."""

from __future__ import annotations

import pytest

from engine.book.layout import MAX_TICKS
from engine.core.market import FOLD_EVERY
from engine.protocol import (
    Accepted,
    AuctionResult,
    BlockTrade,
    Cancelled,
    Close,
    CloseCall,
    DayClosed,
    DaySummary,
    DepthUpdate,
    EndOfDay,
    Halt,
    Indicative,
    OpenCall,
    PhaseChanged,
    RejectCode,
    Rejected,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    trades_digest,
)
from engine.types import CancelReason, Phase, Side
from tests.support.exchange import Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL


# -- sessions and auctions --------------------------------------------------------------------


def test_the_band_follows_the_reference_rounded_inward(make_exchange):
    s = Session(
        small_market(reference_price=10_000, tick=10), continuous=False, exchange=make_exchange
    )
    events = s.send(SetReference(s.code, 10_010))
    (changed,) = of(events, PhaseChanged)
    assert (changed.band_low, changed.band_high) == (9_010, 11_010)


@pytest.mark.parametrize(
    ("max_qty", "price", "reason"),
    [
        (99_999, 4_200_000, "the highest price a book holds"),
        (2**41, 3_000_000, "is worth less than"),
    ],
)
def test_a_reference_above_the_highest_price_is_refused(make_exchange, max_qty, price, reason):
    """The same rule as the config's: an order at the reference must fit the book and stay
    below 2**62 fen (before, only the first was checked, here in its own words)."""
    s = Session(small_market(max_qty=max_qty), continuous=False, exchange=make_exchange)
    before = s.x.state_hash()
    rejected = only_reject(s.send(SetReference(s.code, price)))
    assert rejected.code == RejectCode.PRICE_OUT_OF_RANGE and reason in rejected.text
    assert s.x.state_hash() == before


def test_a_band_stops_at_the_highest_price_and_a_close_there_ends_the_day(make_exchange):
    """A close near the top of the book's range (4,194,304 ticks) once made EndOfDay raise a
    ValueError out of Exchange.apply, after it had expired the day's orders: the band around
    that close did not fit a book. The band is now cut at the highest price, so any close a
    day can print is a reference the next day can use."""
    top = MAX_TICKS  # tick 1 fen
    s = Session(small_market(reference_price=3_800_000), exchange=make_exchange)
    assert s.x.markets[s.code].band == (3_420_000, 4_180_000)
    s.order(1, BUY, 4_180_000, 1)
    s.order(2, SELL, 4_180_000, 1)
    s.order(1, BUY, 3_500_000, 1)  # rests to the end of the day
    s.send(Close(s.code))
    events = s.send(EndOfDay())
    assert [e.close for e in of(events, DayClosed)] == [4_180_000]
    assert [e.reason for e in of(events, Cancelled)] == [CancelReason.EXPIRED]
    assert s.x.markets[s.code].band == (3_762_000, top)
    s.send(StartOfDay("2026-11-25"))
    s.send(OpenCall(s.code))
    s.send(Uncross(s.code))
    assert of(s.order(1, BUY, top, 1), Accepted)
    assert only_reject(s.order(1, BUY, top + 1, 1)).code == RejectCode.PRICE_OUTSIDE_BAND


def test_a_reference_is_refused_while_live_orders_lie_outside_its_band(make_exchange):
    """After a Close, day orders rest until EndOfDay. A new reference whose band left one
    outside was once taken, and re-opening the same day then printed at 109.00 in a band
    of 81.00-99.00."""
    s = Session(exchange=make_exchange)
    s.order(1, BUY, 10_900, 20)
    s.send(Close(s.code))
    before = s.x.state_hash()
    rejected = only_reject(s.send(SetReference(s.code, 9_000)))
    assert rejected.code == RejectCode.PRICE_OUTSIDE_BAND
    assert "1 live order" in rejected.text and "8100-9900" in rejected.text
    assert s.x.state_hash() == before
    assert not of(s.send(SetReference(s.code, 10_000)), Rejected)  # a band that holds it


def test_opening_call_publishes_indicative_prices_and_uncrosses(make_exchange):
    s = Session(continuous=False, exchange=make_exchange)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    events = s.order(2, SELL, 9_900, 6)
    (indicative,) = of(events, Indicative)
    assert (indicative.price, indicative.volume, indicative.imbalance) == (10_100, 6, 4)
    events = s.send(Uncross(s.code))
    (result,) = of(events, AuctionResult)
    assert (result.price, result.volume) == (10_100, 6)
    assert of(events, PhaseChanged)[-1].phase == Phase.CONTINUOUS
    assert {t.venue for t in of(events, Trade)} == {"call"}


def test_an_auction_result_reports_what_traded_at_each_price(make_exchange):
    """Self-trade prevention in the uncross can leave the rest of the book crossed; it is then
    uncrossed again at its own price. The result once gave the last round's price with the
    sum of every round's expected volume: here 'price 100.00, 20 t' for 10 t traded (the
    first round, at 99.99, only cancelled member 1's own ask). In the demo, opening auctions
    were reported up to 47% above the tonnes that traded."""
    s = Session(continuous=False, exchange=make_exchange)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    s.order(1, SELL, 9_900, 10)
    s.order(2, SELL, 10_000, 10)
    events = s.send(Uncross(s.code))
    assert [(r.price, r.volume) for r in of(events, AuctionResult)] == [(10_000, 10)]
    assert [(t.price, t.qty) for t in of(events, Trade)] == [(10_000, 10)]


def test_an_auction_that_trades_at_two_prices_reports_both(make_exchange):
    s = Session(continuous=False, exchange=make_exchange)
    s.send(OpenCall(s.code))
    s.order(1, SELL, 9_900, 10)
    s.order(3, SELL, 9_950, 10)
    s.order(2, BUY, 10_000, 10)
    s.order(1, BUY, 10_100, 10)  # meets member 1's own ask first: cancelled
    s.order(4, BUY, 9_960, 10)  # below the price; the freed ask at 99.50 is not
    events = s.send(Uncross(s.code))
    traded = [(t.price, t.qty) for t in of(events, Trade)]
    results = [(r.price, r.volume) for r in of(events, AuctionResult)]
    assert traded == [(10_000, 10), (9_960, 10)]
    assert results == traded


def test_a_halt_reopens_through_a_call(make_exchange):
    s = Session(exchange=make_exchange)
    s.send(Halt(s.code))
    assert only_reject(s.send(Uncross(s.code))).code == RejectCode.UNSUPPORTED_IN_PHASE
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_000, 5)
    s.order(2, SELL, 10_000, 5)
    events = s.send(Uncross(s.code))
    assert sum(t.qty for t in of(events, Trade)) == 5


def test_resume_reopens_a_halted_market_through_a_call(make_exchange):
    """复牌 (DESIGN.md: resume through a call): orders are collected without matching until
    the re-opening uncross, which then hands the book to continuous trading."""
    s = Session(exchange=make_exchange)
    s.order(2, SELL, 10_000, 10)
    s.send(Halt(s.code))
    assert only_reject(s.order(1, BUY, 10_000, 10)).code == RejectCode.MARKET_HALTED
    events = s.send(Resume(s.code))
    assert [(type(e), e.phase) for e in events] == [(PhaseChanged, Phase.CALL)]
    assert not of(s.order(1, BUY, 10_100, 10), Trade)  # collected, not matched
    reopening = s.send(Uncross(s.code))
    (trade,) = of(reopening, Trade)
    assert (trade.price, trade.qty, trade.venue) == (10_000, 10, "call")
    assert of(reopening, PhaseChanged)[-1].phase == Phase.CONTINUOUS


def test_resume_of_a_halted_call_returns_to_the_call_and_publishes_its_indicative(make_exchange):
    """A halt can interrupt a call; resuming goes back to a call, which publishes its
    indicative afresh."""
    s = Session(continuous=False, exchange=make_exchange)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    s.order(2, SELL, 9_900, 10)
    s.send(Halt(s.code))
    events = s.send(Resume(s.code))
    assert [type(e) for e in events] == [PhaseChanged, Indicative]
    assert events[0].phase == Phase.CALL
    assert (events[1].price, events[1].volume) == (10_000, 10)
    assert not of(s.order(3, BUY, 10_100, 5), Trade)  # still collecting
    assert sum(t.qty for t in of(s.send(Uncross(s.code)), Trade)) == 10


@pytest.mark.parametrize("phase", ["continuous", "call", "closed"])
def test_resume_is_refused_unless_the_market_is_halted(make_exchange, phase):
    s = Session(continuous=phase == "continuous", exchange=make_exchange)
    if phase == "call":
        s.send(OpenCall(s.code))
    before = s.x.state_hash()
    reject = only_reject(s.send(Resume(s.code)))
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert reject.text.endswith(f"cannot resume CEA25 in {phase.upper()}")
    assert s.x.state_hash() == before


def test_a_closing_call_is_uncrossed_when_the_market_closes(make_exchange):
    s = Session(exchange=make_exchange)
    s.send(CloseCall(s.code))
    s.order(1, BUY, 10_200, 5)
    s.order(2, SELL, 10_000, 5)
    events = s.send(Close(s.code))
    assert of(events, AuctionResult)[0].auction == "closing_call"
    assert of(events, PhaseChanged)[-1].phase == Phase.CLOSED
    assert sum(t.qty for t in of(events, Trade)) == 5


def test_end_of_day_expires_day_orders_fixes_the_vwap_close_and_checksums_trades(make_exchange):
    s = Session(exchange=make_exchange)
    s.order(2, SELL, 10_000, 10)
    s.order(1, BUY, 10_000, 10)
    s.order(2, SELL, 10_300, 30)
    s.order(1, BUY, 10_300, 30)
    s.send(BlockTrade("b", s.code, 3, 4, 9_000, 100_000))
    resting = of(s.order(1, BUY, 9_000, 7), Accepted)[0].order_id
    reject = only_reject(s.send(EndOfDay()))
    # the text names what is open and what to do (it once read "this order type is not
    # accepted in the current phase: still open: ['CEA25']")
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert reject.text == (
        "not accepted in the current phase: markets still open: CEA25 (close them first)"
    )
    s.send(Close(s.code))
    events = s.send(EndOfDay())
    (expired,) = of(events, Cancelled)
    assert (expired.order_id, expired.leaves, expired.reason) == (resting, 7, CancelReason.EXPIRED)
    (day,) = of(events, DayClosed)
    # the expired order's level empties before the day closes (once published after it)
    assert [type(e) for e in events] == [Cancelled, DepthUpdate, DayClosed, DaySummary]
    assert (events[1].price, events[1].qty, events[1].orders) == (9_000, 0, 0)
    # VWAP of the listed trades only: (10 x 10,000 + 30 x 10,300) / 40 = 10,225
    assert (day.trades, day.volume, day.close) == (3, 100_040, 10_225)
    # docs/MARKET.md: the open is the day's first listed trade; the block print at 90.00 is no
    # listed trade, so it is neither the low nor the open
    assert (day.open, day.high, day.low) == (10_000, 10_300, 10_000)
    assert s.x.markets[s.code].reference == 10_225
    assert s.x.accounts.get(1).cash_frozen == 0


def test_the_day_checksum_covers_every_trade_in_order_past_the_fold_batch(make_exchange):
    s = Session(exchange=make_exchange)
    trades = []
    for _ in range(FOLD_EVERY + 100):  # more trades than the market holds before folding
        s.order(2, SELL, 10_000, 1)
        trades += of(s.order(1, BUY, 10_000, 1), Trade)
    s.send(Close(s.code))
    (day,) = of(s.send(EndOfDay()), DayClosed)
    assert (day.trades, day.volume) == (len(trades), len(trades))
    assert day.checksum == trades_digest(trades)


def test_without_trades_the_reference_carries_over(make_exchange):
    s = Session(exchange=make_exchange)
    s.send(Close(s.code))
    (day,) = of(s.send(EndOfDay()), DayClosed)
    assert day.close == 10_000 and day.trades == 0
    assert (day.open, day.high, day.low) == (10_000, 10_000, 10_000)
